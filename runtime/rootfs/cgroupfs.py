"""cgroup and cgroup2 entries: a cgroup2 mount, v1 hierarchies (mounted with a
cgroup namespace, this process' own cgroups bound without), or the host's
/sys/fs/cgroup read-only when the user namespace may do neither.
"""

from __future__ import annotations

import errno
import os

from runtime.inroot import RootfsError, fd_path
from runtime.mountopts import MountOptions, PROPAGATION_MASK
from runtime.rootfs.context import DEFAULT_MOUNT_FLAGS, _mount_error, _target_error, _why
from runtime.rootfs.hostmounts import MountInfo
from runtime.syscalls import MNT_DETACH, MS_BIND, MS_RDONLY, MS_REC

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from runtime.rootfs.context import _Ctx


CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


class _Hierarchy:
    __slots__ = ("name", "mountpoint", "root", "fstype", "controllers")

    def __init__(self, name: str, mountpoint: str, root: str, fstype: str,
                 controllers: list[str]) -> None:
        self.name = name
        self.mountpoint = mountpoint
        self.root = root
        self.fstype = fstype
        self.controllers = controllers

    def __repr__(self) -> str:
        return f"_Hierarchy({self.name!r}, {self.fstype!r}, {self.controllers})"


_NOT_CONTROLLERS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                    "favordynmods", "nsdelegate", "memory_recursiveprot",
                    "memory_localevents", "memory_hugetlb_accounting", "none"}


def cgroup_layout(infos: list[MountInfo]) -> tuple[bool, list[_Hierarchy]]:
    """(pure v2?, the hierarchies under /sys/fs/cgroup) from the host's mountinfo."""
    unified = False
    hier: dict[str, _Hierarchy] = {}
    for mi in infos:
        if mi.mountpoint == CGROUP_ROOT and mi.fstype == "cgroup2":
            unified = True
        if os.path.dirname(mi.mountpoint) != CGROUP_ROOT or mi.fstype not in ("cgroup",
                                                                              "cgroup2"):
            continue
        ctrls = [o for o in mi.superopts
                 if o not in _NOT_CONTROLLERS and not o.startswith("release_agent=")]
        name = os.path.basename(mi.mountpoint)
        hier[name] = _Hierarchy(name, mi.mountpoint, mi.root, mi.fstype, ctrls)
    return unified, list(hier.values())


def _own_cgroups() -> dict[str, str]:
    """/proc/self/cgroup as {controllers-field: path} ("" for the v2 line)."""
    out = {}
    with open(PROC_CGROUP, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                out[parts[1]] = parts[2]
    return out


def _cgroup_entry(ctx: _Ctx, i: int, m: dict, dest: str, typ: str, opts: MountOptions) -> None:
    unified, hierarchies = cgroup_layout(ctx.host_mountinfo or ctx.mountinfo())
    flags = opts.flags & ~PROPAGATION_MASK
    if typ == "cgroup2" or unified:
        _cgroup2(ctx, i, m, dest, flags, opts)
        return
    try:
        _cgroup_v1(ctx, i, dest, flags, opts, hierarchies)
    except RootfsError as e:
        if not (ctx.userns and e.errno in (errno.EPERM, errno.EBUSY, errno.EACCES,
                                           errno.ENOENT)):
            raise
        # this user namespace may not mount (or bind) the hierarchies: show the
        # host's whole /sys/fs/cgroup read-only instead
        fd = ctx.reopen(i, dest)
        try:
            ctx.sc.umount2(fd_path(fd), MNT_DETACH)
        except OSError as e2:
            if e2.errno != errno.EINVAL:  # EINVAL: the tmpfs never got mounted
                raise RootfsError(f"mounts[{i}]: undo the cgroup tmpfs on {dest}: {_why(e2)}",
                                  e2.errno) from None
        finally:
            os.close(fd)
        _cgroup_host_bind(ctx, i, dest, flags, opts)


def _cgroup_host_bind(ctx: _Ctx, i: int, dest: str, flags: int, opts: MountOptions) -> None:
    """Read-only recursive bind of the host's /sys/fs/cgroup."""
    fd = ctx.target_dir(i, dest)
    try:
        ctx.bind(i, CGROUP_ROOT, fd, dest, flags | MS_BIND | MS_REC | MS_RDONLY, opts.cleared,
                 opts.propagation)
    finally:
        os.close(fd)


def _cgroup2(ctx: _Ctx, i: int, m: dict, dest: str, flags: int, opts: MountOptions) -> None:
    fd = ctx.target_dir(i, dest)
    try:
        source = m.get("source") or "cgroup2"
        try:
            ctx.sc.mount(source, fd_path(fd), "cgroup2", flags, opts.data or None, label=dest)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EBUSY):
                raise _mount_error(e, source, dest, opts.data, prefix=f"mounts[{i}]") from None
            # a user namespace without a cgroup namespace cannot mount cgroup2
            ctx.bind(i, CGROUP_ROOT, fd, dest, flags | MS_BIND | MS_REC, opts.cleared, [])
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _cgroup_v1(ctx: _Ctx, i: int, dest: str, flags: int, opts: MountOptions,
               hierarchies: list[_Hierarchy]) -> None:
    """tmpfs at the destination, then one directory per host hierarchy: with a
    cgroup namespace a fresh mount of it (and of the hybrid ``unified`` cgroup2),
    without one a read-only bind of this process' own cgroup in it (runc)."""
    fd = ctx.target_dir(i, dest)
    try:
        ctx.mount(i, "tmpfs", fd, "tmpfs", DEFAULT_MOUNT_FLAGS, ctx.labeled("mode=755"), dest)
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)
    own = None if ctx.new_cgroupns else _own_cgroups()
    dirs = ctx.cgroup_dirs or {}
    # the tmpfs is fresh and nothing runs in the container yet: its
    # directories are made from its root, without resolving dest again each time
    tfd = ctx.reopen(i, dest)
    try:
        for h in hierarchies:
            if own is not None and h.fstype == "cgroup2":
                continue  # runc binds the v1 hierarchies only
            _hierarchy(ctx, i, dest, tfd, h, flags, opts, own, dirs)
    finally:
        os.close(tfd)
    _symlinks(ctx, i, dest, hierarchies)


def _hierarchy(ctx: _Ctx, i: int, dest: str, tfd: int, h: _Hierarchy, flags: int,
               opts: MountOptions, own: dict[str, str] | None, dirs: dict[str, str]) -> None:
    """One hierarchy's directory in the tmpfs: a fresh mount of it, or a bind."""
    ro = flags & MS_RDONLY
    sub = f"{dest.rstrip('/')}/{h.name}"
    try:
        try:
            os.mkdir(h.name, 0o755, dir_fd=tfd)
        except FileExistsError:
            pass
        sfd = os.open(h.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                      dir_fd=tfd)
    except OSError as e:
        raise _target_error(i, sub, e) from None
    try:
        if own is None:
            if h.fstype == "cgroup2":
                ctx.mount(i, "cgroup2", sfd, "cgroup2", DEFAULT_MOUNT_FLAGS | ro, "", sub)
            else:
                ctx.mount(i, "cgroup", sfd, "cgroup", DEFAULT_MOUNT_FLAGS | ro,
                          ",".join(h.controllers), sub)
            return
        source = next((dirs[c] for c in h.controllers if c in dirs), None)
        if source is None:
            key = _own_key(own, h.controllers)
            path = own.get(key) if key is not None else None
            if path is None:
                raise RootfsError(f"mounts[{i}]: cgroup hierarchy {h.name}: this process "
                                  f"is not in it ({PROC_CGROUP})", errno.ENOENT)
            rel = os.path.relpath(path, h.root) if h.root != "/" else path.lstrip("/")
            source = h.mountpoint if rel in ("", ".") else f"{h.mountpoint}/{rel}"
        ctx.bind(i, source, sfd, sub, flags | MS_BIND | MS_REC, opts.cleared,
                 opts.propagation)
    finally:
        os.close(sfd)


def _symlinks(ctx: _Ctx, i: int, dest: str, hierarchies: list[_Hierarchy]) -> None:
    """cpu -> cpu,cpuacct and the like."""
    dfd = ctx.reopen(i, dest)
    try:
        for h in hierarchies:
            if "," not in h.name:
                continue
            for part in h.name.split(","):
                try:
                    os.symlink(h.name, part, dir_fd=dfd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise RootfsError(f"mounts[{i}]: symlink {dest}/{part} -> {h.name}: "
                                      f"{_why(e)}", e.errno) from None
    finally:
        os.close(dfd)


def _own_key(own: dict[str, str], controllers: list[str]) -> str | None:
    want = set(controllers)
    for key in own:
        if key and set(key.split(",")) == want:
            return key
    return None
