"""Into the rootfs: pivot_root, or MS_MOVE + chroot with --no-pivot.
"""

from __future__ import annotations

import errno
import os

from runtime.inroot import RootfsError, contains
from runtime.rootfs.calls import _why
from runtime.rootfs.hostmounts import read_mountinfo
from runtime.syscalls import MNT_DETACH, MS_MOVE, MS_REC, MS_SLAVE, Syscalls

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from runtime.rootfs.context import _Ctx


def _pivot_root(sc: Syscalls, rootfs: str) -> None:
    """pivot_root(".", ".") with cwd in the new root (LXC's trick, as runc): the old
    root lands on top of the new one and is unmounted lazily."""
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.pivot_root(".", ".")
        except OSError as e:
            raise RootfsError(f"pivot_root into {rootfs}: {_why(e)}", e.errno) from None
        os.fchdir(oldroot)
        try:
            # rslave first so that the unmount cannot propagate to the host
            sc.mount(None, ".", None, MS_SLAVE | MS_REC, None, label="old root")
            sc.umount2(".", MNT_DETACH)
        except OSError as e:
            raise RootfsError(f"detach the old root after pivot_root: {_why(e)}",
                              e.errno) from None
    finally:
        os.close(oldroot)
    os.chdir("/")


def _ms_move_root(ctx: _Ctx) -> None:
    """--no-pivot: move the rootfs onto "/" and chroot. Full procfs/sysfs mounts of
    the host stay reachable in the namespace, so unmount (or cover) them first,
    as runc does, or the container could mount a fresh procfs."""
    sc = ctx.sc
    for mi in read_mountinfo():
        if mi.root != "/" or mi.fstype not in ("proc", "sysfs") or contains(ctx.rootfs,
                                                                            mi.mountpoint):
            continue
        p = mi.mountpoint
        try:
            sc.mount(None, p, None, MS_SLAVE | MS_REC, None, label=p)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue  # a parent of it is already gone
            raise RootfsError(f"make {p} rslave: {_why(e)}", e.errno) from None
        try:
            sc.umount2(p, MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise RootfsError(f"unmount host {mi.fstype} at {p}: {_why(e)}",
                                  e.errno) from None
            try:
                sc.mount("tmpfs", p, "tmpfs", 0, None, label=p)
            except OSError as e2:
                raise RootfsError(f"cover host {mi.fstype} at {p}: {_why(e2)}",
                                  e2.errno) from None
    try:
        sc.mount(ctx.rootfs, "/", None, MS_MOVE, None, label="/")
        sc.chroot(".")
    except OSError as e:
        raise RootfsError(f"move rootfs {ctx.rootfs} onto / (--no-pivot): {_why(e)}",
                          e.errno) from None
    os.chdir("/")
