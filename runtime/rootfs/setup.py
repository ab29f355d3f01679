"""setup_rootfs: the stages in order, from mount propagation to pivot_root (or
MS_MOVE + chroot with --no-pivot).
"""

from __future__ import annotations

import errno
import os

from runtime import devices
from runtime.inroot import RootfsError, contains
from runtime.mountopts import is_bind_entry, rootfs_propagation, setup_propagation
from runtime.rootfs import mountpoints
from runtime.rootfs.context import _Ctx, _DIR, _clean, _prop_name, _why
from runtime.rootfs.entries import _mount_entry
from runtime.rootfs.hostmounts import _mount_of, read_mountinfo
from runtime.syscalls import (
    MNT_DETACH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_REC, MS_SLAVE, SYS, Syscalls,
)

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from typing import Callable


def rootfs_path(spec: dict, bundle: str) -> str:
    path = (spec.get("root") or {}).get("path") or "rootfs"
    if not os.path.isabs(path):
        path = os.path.join(bundle, path)
    return os.path.realpath(path)


def setup_rootfs(spec: dict, bundle: str, *, rootless: bool, new_userns: bool, new_netns: bool,
                 new_cgroupns: bool, no_pivot: bool, sc: Syscalls = SYS,
                 before_pivot: Callable[[], None] | None = None,
                 cgroup_dirs: dict[str, str] | None = None,
                 idmapped: dict[int, int] | None = None) -> None:
    """Everything from mount propagation to pivot_root. On return, cwd and root
    are the container's '/'.

    ``cgroup_dirs`` (controller -> host directory) names the container's v1
    cgroups when this process has not been moved into them yet (the parent
    does that in parallel); without it the cgroups this process is in are used.
    ``idmapped`` (mounts[] index -> fd) holds the idmapped trees the parent made
    (runtime/idmapped.py), moved onto their targets here.

    ``before_pivot`` (optional) runs after mounts and devices, with cwd in the
    rootfs, right before pivot_root: where runc runs createContainer hooks.
    """
    linux = spec.get("linux") or {}
    bundle = os.path.abspath(bundle)
    rootfs = rootfs_path(spec, bundle)
    if not os.path.isdir(rootfs):
        raise RootfsError(f"root.path: {rootfs} is not a directory", errno.ENOTDIR)
    try:
        prop = rootfs_propagation(linux.get("rootfsPropagation"))
    except ValueError as e:
        raise RootfsError(str(e), errno.EINVAL) from None
    if no_pivot and prop & MS_PRIVATE:
        raise RootfsError("linux.rootfsPropagation: [r]private is not safe without pivot_root "
                          "(--no-pivot)", errno.EINVAL)

    # 1. propagation of "/" (never unbindable yet), a private parent for the
    # rootfs, the rootfs bind
    first = setup_propagation(prop)
    try:
        sc.mount(None, "/", None, first, None, label="/")
    except OSError as e:
        raise RootfsError(f"make / {_prop_name(first)}: {_why(e)}", e.errno) from None
    host_mounts = read_mountinfo()
    parent = _mount_of(host_mounts, rootfs)
    if parent is not None and any(o.startswith("shared:") for o in parent.optional):
        # pivot_root refuses a shared parent, and our bind must not propagate out
        try:
            sc.mount(None, parent.mountpoint, None, MS_PRIVATE, None, label=parent.mountpoint)
        except OSError as e:
            raise RootfsError(f"make {parent.mountpoint} (parent mount of the rootfs) private: "
                              f"{_why(e)}", e.errno) from None
    try:
        sc.mount(rootfs, rootfs, None, MS_BIND | MS_REC, None, label=rootfs)
    except OSError as e:
        raise RootfsError(f"bind-mount rootfs {rootfs} onto itself: {_why(e)}", e.errno) from None

    # after the bind: the fd is on the new mount
    ctx = _Ctx(spec, bundle, rootfs, os.open(rootfs, _DIR), rootless=rootless,
               new_userns=new_userns, new_netns=new_netns, new_cgroupns=new_cgroupns, sc=sc)
    ctx.cgroup_dirs = cgroup_dirs
    ctx.idmapped = idmapped or {}
    ctx.host_mountinfo = host_mounts
    try:
        # 2. mounts; first the mount points of hako's own entries that the
        # rootfs cannot take (mountpoints)
        mounts = spec.get("mounts") or []
        skip = mountpoints.prepare(ctx.rootfd, rootfs, mounts, bundle=bundle,
                                   data_label=ctx.labeled, sc=sc)
        ctx.follow_root()
        setup_dev = True
        for i, m in enumerate(mounts):
            if i in skip:
                continue
            _mount_entry(ctx, i, m)
            ctx.follow_root()
            if _clean(m.get("destination") or "") == "/dev" and is_bind_entry(m):
                setup_dev = False
        # 3. devices
        if setup_dev:
            devices.create_devices(ctx.rootfd, spec, bind=ctx.userns, sc=sc)
            devices.setup_ptmx(ctx.rootfd, sc=sc)
            devices.setup_dev_symlinks(ctx.rootfd, sc=sc)
        # 4. into the rootfs
        os.fchdir(ctx.rootfd)
        if before_pivot is not None:
            before_pivot()
            os.fchdir(ctx.rootfd)
        if no_pivot:
            _ms_move_root(ctx)
        else:
            _pivot_root(sc, rootfs)
    finally:
        os.close(ctx.rootfd)
    if setup_dev:
        devices.reopen_dev_null()


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
