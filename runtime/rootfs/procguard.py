"""Nothing may be mounted over or inside the container's /proc, except a procfs
on /proc itself and the few files lxcfs emulates (runc's rule).
"""

from __future__ import annotations

import errno
import os

from runtime.inroot import RootfsError
from runtime.rootfs.hostmounts import _mount_of

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from runtime.rootfs.context import _Ctx


#: mounts allowed below /proc (files lxcfs emulates), as runc allows
VALID_PROC_MOUNTS = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
})


def _check_proc_dest(i: int, where: str, dest: str) -> None:
    if where.startswith("/proc/") and where not in VALID_PROC_MOUNTS:
        raise RootfsError(f"mounts[{i}]: {dest} cannot be mounted because it is inside /proc",
                          errno.EPERM)


def _check_proc_mount(ctx: _Ctx, i: int, fd: int, dest: str, source: str) -> None:
    """Nothing may be mounted over or inside the container's /proc, except a
    procfs on /proc itself and a few files lxcfs emulates (runc's rule). Checked
    on the path as written (before anything is created) and where it resolved."""
    where = ctx.container_path(fd, i, dest)
    if where == "/proc":
        if source and _is_procfs(ctx, source):
            return
        raise RootfsError(f"mounts[{i}]: {dest} cannot be mounted because it is not of type "
                          "proc", errno.EPERM)
    _check_proc_dest(i, where, dest)


def _is_procfs(ctx: _Ctx, source: str) -> bool:
    if not os.path.isabs(source):
        return False
    mi = _mount_of(ctx.mountinfo(), os.path.realpath(source))
    return mi is not None and mi.fstype == "proc"
