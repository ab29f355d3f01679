"""Which namespaces a config asks for, and joining existing ones by path."""

from __future__ import annotations

import os

from runtime import syscalls as S
from runtime.errors import HakoError

FLAGS = {
    "user": S.CLONE_NEWUSER, "mount": S.CLONE_NEWNS, "pid": S.CLONE_NEWPID,
    "network": S.CLONE_NEWNET, "ipc": S.CLONE_NEWIPC, "uts": S.CLONE_NEWUTS,
    "cgroup": S.CLONE_NEWCGROUP, "time": S.CLONE_NEWTIME,
}
# setns order after the user namespace: mount last, since entering another
# mount namespace changes what the remaining paths resolve to (runc/nsexec
# opens every path first for the same reason).
JOIN_ORDER = ["ipc", "uts", "network", "pid", "cgroup", "time", "mount"]


class NamespacePlan:
    """new: types to unshare; join: type -> path to setns into."""

    def __init__(self, spec: dict) -> None:
        self.new: set[str] = set()
        self.join: dict[str, str] = {}
        for i, ns in enumerate(spec.get("linux", {}).get("namespaces") or []):
            t = ns["type"]
            if ns.get("path"):
                self.join[t] = ns["path"]
            else:
                self.new.add(t)

    def has(self, t: str) -> bool:
        return t in self.new or t in self.join

    def unshare_flags(self, exclude: tuple[str, ...] = ("user",)) -> int:
        flags = 0
        for t in self.new:
            if t not in exclude:
                flags |= FLAGS[t]
        return flags

    def open_joins(self) -> dict[str, int]:
        """Open every namespace path up front, so a bad path fails before fork."""
        fds: dict[str, int] = {}
        try:
            for t, path in self.join.items():
                try:
                    fds[t] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise HakoError(f"linux.namespaces: cannot open {t} namespace {path}: "
                                    f"{e.strerror}") from None
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return fds
