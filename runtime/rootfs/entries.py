"""One mounts[] entry: dispatched by type (bind, proc/sysfs, mqueue, tmpfs,
cgroup, other) and mounted onto its target resolved inside the rootfs.
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.inroot import RootfsError, fd_path, mkdir_all
from runtime.mountopts import MountOptions, PROPAGATION_MASK, parse_options
from runtime.rootfs.calls import _clean, _mount_error, _target_error, _why
from runtime.rootfs.cgroupfs import _cgroup_entry
from runtime.rootfs.procguard import _check_proc_dest, _check_proc_mount
from runtime.rootfs.tmpfs import _tmpfs_entry
from runtime.syscalls import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from runtime.rootfs.context import _Ctx


def _mount_entry(ctx: _Ctx, i: int, m: dict) -> None:
    raw = m.get("destination") or ""
    if not raw:
        raise RootfsError(f"mounts[{i}]: no destination", errno.EINVAL)
    dest = _clean(raw)
    typ = m.get("type") or ""
    opts = parse_options(m.get("options"))
    if m.get("uidMappings") or m.get("gidMappings") or any(
            o in ("idmap", "ridmap") for o in opts.unsupported):
        raise RootfsError(f"mounts[{i}]: {dest}: idmapped mounts (uidMappings/gidMappings, "
                          "idmap) are not supported yet", errno.EOPNOTSUPP)
    if opts.unsupported:
        raise RootfsError(f"mounts[{i}]: {dest}: recursive mount attribute options "
                          f"({','.join(opts.unsupported)}) are not supported yet",
                          errno.EOPNOTSUPP)
    if typ == "bind":
        opts.flags |= MS_BIND
    if opts.flags & MS_REMOUNT:
        _remount_entry(ctx, i, dest, opts)
    elif opts.is_bind:
        _bind_entry(ctx, i, m, dest, opts)
    elif not typ:
        raise RootfsError(f"mounts[{i}]: {dest}: no type, and not a bind mount", errno.EINVAL)
    elif typ in ("proc", "sysfs"):
        _proc_sys_entry(ctx, i, m, dest, typ, opts)
    elif typ == "mqueue":
        _mqueue_entry(ctx, i, m, dest, opts)
    elif typ == "tmpfs":
        _tmpfs_entry(ctx, i, m, dest, opts)
    elif typ in ("cgroup", "cgroup2"):
        _cgroup_entry(ctx, i, m, dest, typ, opts)
    else:
        _other_entry(ctx, i, m, dest, typ, opts)


def _remount_entry(ctx: _Ctx, i: int, dest: str, opts: MountOptions) -> None:
    """``remount``: change the flags of what is already mounted at the destination."""
    fd = ctx.reopen(i, dest)
    try:
        flags = opts.flags & ~(PROPAGATION_MASK | MS_REC)
        try:
            ctx.sc.mount(None, fd_path(fd), None, flags, opts.data or None, label=dest)
        except OSError as e:
            raise _mount_error(e, "remount", dest, opts.data, prefix=f"mounts[{i}]") from None
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _bind_entry(ctx: _Ctx, i: int, m: dict, dest: str, opts: MountOptions) -> None:
    src = m.get("source") or ""
    if not src:
        raise RootfsError(f"mounts[{i}]: bind mount on {dest} has no source", errno.EINVAL)
    if not os.path.isabs(src):
        src = os.path.join(ctx.bundle, src)
    try:
        st = os.stat(src)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise RootfsError(f"mounts[{i}]: bind source {src} does not exist",
                              e.errno) from None
        raise RootfsError(f"mounts[{i}]: bind source {src}: {_why(e)}", e.errno) from None
    _check_proc_dest(i, dest, dest)
    fd = ctx.target_dir(i, dest) if stat.S_ISDIR(st.st_mode) else ctx.target_file(i, dest)
    try:
        _check_proc_mount(ctx, i, fd, dest, src)
        ctx.bind(i, src, fd, dest, opts.flags, opts.cleared, opts.propagation)
    finally:
        os.close(fd)


def _proc_sys_entry(ctx: _Ctx, i: int, m: dict, dest: str, typ: str,
                    opts: MountOptions) -> None:
    # no symlink anywhere on the way: procfs/sysfs land exactly where asked
    try:
        fd = mkdir_all(ctx.rootfd, dest, no_symlinks=True, sc=ctx.sc)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RootfsError(f'mounts[{i}]: filesystem "{typ}" must be mounted on an ordinary '
                              f"directory: {dest} has a symlink in its path", e.errno) from None
        raise _target_error(i, dest, e) from None
    try:
        flags = opts.flags & ~PROPAGATION_MASK
        try:
            ctx.sc.mount(m.get("source") or typ, fd_path(fd), typ, flags, opts.data or None,
                         label=dest)
        except OSError as e:
            if not (typ == "sysfs" and e.errno == errno.EPERM and ctx.userns
                    and not ctx.new_netns):
                raise _mount_error(e, m.get("source") or typ, dest, opts.data,
                                   prefix=f"mounts[{i}]") from None
            # a user namespace without its own network namespace cannot mount
            # sysfs: show the host's, read-only (runc spec --rootless does this)
            ctx.bind(i, "/sys", fd, dest, flags | MS_BIND | MS_REC | MS_RDONLY, opts.cleared,
                     [])
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _mqueue_entry(ctx: _Ctx, i: int, m: dict, dest: str, opts: MountOptions) -> None:
    fd = ctx.target_dir(i, dest)
    try:
        flags = opts.flags & ~PROPAGATION_MASK
        source = m.get("source") or "mqueue"
        try:
            ctx.sc.mount(source, fd_path(fd), "mqueue", flags, opts.data or None, label=dest)
        except OSError as e:
            if not (e.errno == errno.EPERM and ctx.userns):
                raise _mount_error(e, source, dest, opts.data, prefix=f"mounts[{i}]") from None
            if not os.path.isdir("/dev/mqueue"):
                err = _mount_error(e, source, dest, opts.data, prefix=f"mounts[{i}]")
                raise RootfsError(f"{err} (not the owner of the IPC namespace, and the host "
                                  "has no /dev/mqueue to bind instead)", e.errno) from None
            # the ipc namespace is not ours: bind the host's mqueue instead
            ctx.bind(i, "/dev/mqueue", fd, dest, flags | MS_BIND | MS_REC, opts.cleared, [])
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _other_entry(ctx: _Ctx, i: int, m: dict, dest: str, typ: str, opts: MountOptions) -> None:
    _check_proc_dest(i, dest, dest)
    fd = ctx.target_dir(i, dest)
    try:
        _check_proc_mount(ctx, i, fd, dest, m.get("source") or "")
        flags = opts.flags & ~PROPAGATION_MASK
        if dest == "/dev":
            flags &= ~MS_RDONLY  # devices go in first; finalize_rootfs makes it ro
        ctx.mount(i, m.get("source") or typ, fd, typ, flags, ctx.labeled(opts.data), dest)
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)
