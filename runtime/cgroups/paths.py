"""Which cgroup layout the host has, and where a container's cgroup goes.

Layout (``Host``) comes from /proc/self/mountinfo, not from statfs: the mount
options name each v1 hierarchy's controllers (``cpu,cpuacct`` mounted
together, ``name=systemd``), and a test can hand in a mountinfo text that
points into a temporary directory to get a fake v1, v2 or hybrid host.

* v2:     a cgroup2 mount *at* the root (/sys/fs/cgroup).
* hybrid: v1 hierarchies plus a cgroup2 mount (normally /sys/fs/cgroup/unified).
* v1:     v1 hierarchies only.

Path rules are runc's (libcontainer/specconv + fs/paths.go + fs2/defaultpath.go):

* ``linux.cgroupsPath`` is cleaned so that ``..`` cannot climb out;
* absolute: the same path under every hierarchy's mount point;
* relative: below the cgroup hako itself runs in -- per hierarchy on v1 (and
  on the hybrid unified hierarchy), below the *parent* of our own cgroup on v2
  (our own v2 cgroup has processes, so it cannot have controllers enabled
  for children);
* absent: relative, named after the container id;
* with ``--systemd-cgroup``: ``slice:prefix:name``, and only on a host that
  runs systemd.
"""

from __future__ import annotations

import os
import posixpath

from runtime.mountinfo import unescape
from runtime.errors import HakoError

DEFAULT_ROOT = "/sys/fs/cgroup"

#: v1 controllers runc knows (named hierarchies, e.g. name=systemd, are kept too)
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer",
                  "net_cls", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc")


class Mount:
    __slots__ = ("mountpoint", "root", "fstype", "controllers")

    def __init__(self, mountpoint: str, root: str, fstype: str, controllers: list[str]) -> None:
        self.mountpoint = mountpoint
        self.root = root
        self.fstype = fstype
        self.controllers = controllers

    def __repr__(self) -> str:
        return f"Mount({self.mountpoint!r}, {self.fstype}, {self.controllers})"




def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) < sep + 4 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        fstype = fields[sep + 1]
        ctrls: list[str] = []
        if fstype == "cgroup":
            for opt in fields[sep + 3].split(","):
                if opt in V1_CONTROLLERS or opt.startswith("name="):
                    ctrls.append(opt)
        mounts.append(Mount(unescape(fields[4]), unescape(fields[3]), fstype, ctrls))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controller: path}; the v2 entry has key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            out[""] = parts[2]
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Host:
    """The cgroup layout of this machine (or of a fake root in tests)."""

    def __init__(self, mounts: list[Mount], self_cgroup: dict[str, str],
                 root: str = DEFAULT_ROOT, *, systemd_booted: bool | None = None) -> None:
        self.root = root.rstrip("/") or "/"
        self.self_cgroup = self_cgroup
        self._systemd = systemd_booted
        self.v1: dict[str, Mount] = {}
        self.unified: Mount | None = None
        mine = [m for m in mounts if _under(m.mountpoint, self.root)]
        for m in mine:
            if m.fstype == "cgroup2":
                # prefer the mount at the root (v2), else the first one (hybrid)
                if self.unified is None or m.mountpoint == self.root:
                    self.unified = m
            else:
                for c in m.controllers:
                    self.v1.setdefault(c, m)
        if self.unified is not None and self.unified.mountpoint == self.root:
            self.mode = "v2"
            self.v1 = {}
        elif self.v1:
            self.mode = "hybrid" if self.unified is not None else "v1"
        elif self.unified is not None:
            self.mode = "v2"
        else:
            self.mode = "none"

    @classmethod
    def detect(cls, root: str = DEFAULT_ROOT, *, mountinfo: str | None = None,
               self_cgroup: str | None = None, systemd_booted: bool | None = None) -> "Host":
        if mountinfo is None:
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        if self_cgroup is None:
            with open("/proc/self/cgroup") as f:
                self_cgroup = f.read()
        return cls(parse_mountinfo(mountinfo), parse_proc_cgroup(self_cgroup), root,
                   systemd_booted=systemd_booted)

    @property
    def systemd_booted(self) -> bool:
        """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
        if self._systemd is None:
            self._systemd = os.path.isdir("/run/systemd/system")
        return self._systemd

    def hierarchies(self) -> dict[str, Mount]:
        """One entry per v1 mount: {first controller name: mount} (cpu,cpuacct once)."""
        seen: dict[int, str] = {}
        out: dict[str, Mount] = {}
        for c, m in self.v1.items():
            if id(m) not in seen:
                seen[id(m)] = c
                out[c] = m
        return out

    # -- where our own process is ---------------------------------------------
    def own(self, controller: str) -> str:
        """Our cgroup in a hierarchy, relative to that hierarchy's mount point."""
        mount = self.unified if controller == "" else self.v1[controller]
        assert mount is not None
        path = self.self_cgroup.get(controller, "/")
        if mount.root != "/" and _under(path, mount.root):
            path = path[len(mount.root.rstrip("/")):] or "/"
        return path

    def v1_dir(self, controller: str, inner: str) -> str:
        m = self.v1[controller]
        if inner.startswith("/"):
            return _join(m.mountpoint, inner)
        return _join(m.mountpoint, self.own(controller), inner)

    def unified_dir(self, inner: str, *, hybrid: bool) -> str:
        """v2: relative paths go below the parent of our own cgroup; on a hybrid
        host runc uses the v1 rule (below our own cgroup) for the unified tree."""
        assert self.unified is not None
        mp = self.unified.mountpoint
        if inner.startswith("/"):
            return _join(mp, inner)
        own = self.own("")
        if not hybrid:
            own = posixpath.dirname(own.rstrip("/")) or "/"
        return _join(mp, own, inner)


def _join(*parts: str) -> str:
    out = parts[0].rstrip("/") or "/"
    for p in parts[1:]:
        p = p.strip("/")
        if p and p != ".":
            out = out.rstrip("/") + "/" + p
    return out


def clean_path(path: str) -> str:
    """runc's utils.CleanPath: lexical clean, and a relative path may not
    climb above its base (``../../x`` -> ``x``)."""
    if not path:
        return ""
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    if not p.startswith("/"):
        p = posixpath.normpath("/" + p).lstrip("/") or "."
    return p


def inner_path(spec: dict, cid: str) -> str:
    """The cgroup path inside each hierarchy (absolute or relative), no systemd."""
    raw = ((spec.get("linux") or {}).get("cgroupsPath")) or ""
    if not raw:
        return cid
    p = clean_path(raw)
    if p in ("/", "."):
        raise HakoError(f"linux.cgroupsPath: {raw!r} names the root (or hako's own) cgroup; "
                        "a container needs a cgroup of its own")
    return p


def parse_systemd_path(raw: str, cid: str) -> tuple[str, str, str]:
    """``slice:prefix:name`` (runc's systemd form); empty means runc's default."""
    if not raw:
        return ("", "runc", cid)
    parts = raw.split(":")
    if len(parts) != 3:
        raise HakoError('linux.cgroupsPath: expected "slice:prefix:name" for systemd cgroups '
                        f"(--systemd-cgroup), got {raw!r}")
    return parts[0], parts[1], parts[2]
