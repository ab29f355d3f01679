"""The mount table of this process (/proc/self/mountinfo), parsed: where the
rootfs lives, what a source is, which cgroup hierarchies the host has.
"""

from __future__ import annotations

from runtime.inroot import contains
from runtime.mountinfo import unescape


MOUNTINFO = "/proc/self/mountinfo"


class MountInfo:
    __slots__ = ("root", "mountpoint", "optional", "fstype", "source", "superopts")

    def __init__(self, root: str, mountpoint: str, optional: list[str], fstype: str,
                 source: str, superopts: list[str]) -> None:
        self.root = root
        self.mountpoint = mountpoint
        self.optional = optional
        self.fstype = fstype
        self.source = source
        self.superopts = superopts

    def __repr__(self) -> str:
        return f"MountInfo({self.mountpoint!r}, {self.fstype!r}, root={self.root!r})"


def parse_mountinfo(text: str) -> list[MountInfo]:
    out = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        out.append(MountInfo(unescape(fields[3]), unescape(fields[4]), fields[6:sep],
                             fields[sep + 1], unescape(fields[sep + 2]),
                             fields[sep + 3].split(",")))
    return out


def read_mountinfo() -> list[MountInfo]:
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def _mount_of(infos: list[MountInfo], path: str) -> MountInfo | None:
    """The mount *path* lives on: the longest mountpoint containing it (last wins)."""
    best = None
    for mi in infos:
        if contains(mi.mountpoint, path) and (best is None
                                              or len(mi.mountpoint) >= len(best.mountpoint)):
            best = mi
    return best
