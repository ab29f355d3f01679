"""One mounts[] entry, mounted onto its target resolved inside the rootfs and
dispatched by type: bind, proc/sysfs, mqueue, tmpfs (the mode of the directory
it hides, tmpcopyup), other; cgroups are cgroupfs. Nothing goes over or inside
the container's /proc, except a procfs on /proc and the files lxcfs emulates.
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.inroot import RootfsError, fd_path, mkdir_all, open_in_root
from runtime.mountopts import MountOptions, PROPAGATION_MASK, parse_options
from runtime.rootfs.cgroupfs import _cgroup_entry
from runtime.rootfs.context import _clean, _mount_error, _target_error, _why
from runtime.rootfs.hostmounts import _mount_of
from runtime.syscalls import (MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, MS_BIND,
                              MS_RDONLY, MS_REC, MS_REMOUNT)

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from runtime.rootfs.context import _Ctx


#: mounts allowed below /proc (files lxcfs emulates), as runc allows
VALID_PROC_MOUNTS = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
})


def _mount_entry(ctx: _Ctx, i: int, m: dict) -> None:
    raw = m.get("destination") or ""
    if not raw:
        raise RootfsError(f"mounts[{i}]: no destination", errno.EINVAL)
    dest = _clean(raw)
    typ = m.get("type") or ""
    opts = parse_options(m.get("options"))
    if typ == "bind":
        opts.flags |= MS_BIND
    tree = ctx.idmapped.get(i, -1)
    if tree < 0 and (opts.idmap or m.get("uidMappings") or m.get("gidMappings")):
        # (runtime/idmapped.py makes them in the parent; checks.py refuses the rest)
        raise RootfsError(f"mounts[{i}]: {dest}: the idmapped mount was not prepared",
                          errno.EINVAL)
    if tree >= 0:
        _idmapped_entry(ctx, i, dest, opts, tree)
    elif opts.flags & MS_REMOUNT:
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
    if opts.recursive:
        ctx.set_recursive(i, dest, opts.rec_set, opts.rec_clr, opts.recursive)


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


def _idmapped_entry(ctx: _Ctx, i: int, dest: str, opts: MountOptions, tree: int) -> None:
    """The idmapped tree the parent made (runtime/idmapped.py), moved onto its
    target; then the flags and propagation of any bind."""
    _check_proc_dest(i, dest, dest)
    is_dir = stat.S_ISDIR(os.fstat(tree).st_mode)
    fd = ctx.target_dir(i, dest) if is_dir else ctx.target_file(i, dest)
    try:
        _check_proc_mount(ctx, i, fd, dest, "")
        try:
            ctx.sc.move_mount(tree, fd, MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                              label=dest)
        except OSError as e:
            raise RootfsError(f"mounts[{i}]: move the idmapped mount onto {dest}: {_why(e)}",
                              e.errno) from None
    finally:
        os.close(fd)
    ctx.apply_bind_flags(i, dest, opts.flags, opts.cleared, opts.propagation)


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


def _has_mode(data: str) -> bool:
    return any(o.startswith("mode=") for o in data.split(","))


def _tmpfs_entry(ctx: _Ctx, i: int, m: dict, dest: str, opts: MountOptions) -> None:
    data = opts.data
    _check_proc_dest(i, dest, dest)
    try:
        fd = open_in_root(ctx.rootfd, dest, os.O_PATH | os.O_DIRECTORY, sc=ctx.sc)
        if not _has_mode(data):
            # keep the mode of the directory it hides (runc does the same)
            mode = f"mode={stat.S_IMODE(os.fstat(fd).st_mode):04o}"
            data = f"{mode},{data}" if data else mode
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise _target_error(i, dest, e) from None
        fd = ctx.target_dir(i, dest)
    src_dir = -1
    try:
        _check_proc_mount(ctx, i, fd, dest, "")
        # read-only tmpfs are remounted so in finalize_rootfs: files may be created first
        flags = opts.flags & ~(PROPAGATION_MASK | MS_RDONLY)
        if opts.tmpcopyup:
            # the fd keeps the hidden directory reachable once the tmpfs covers it
            src_dir = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        ctx.mount(i, m.get("source") or "tmpfs", fd, "tmpfs", flags, ctx.labeled(data), dest)
        if opts.tmpcopyup:
            nfd = ctx.reopen(i, dest)
            try:
                dst_dir = os.open(fd_path(nfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            finally:
                os.close(nfd)
            try:
                _copy_tree(src_dir, dst_dir)
            except OSError as e:
                raise RootfsError(f"mounts[{i}]: tmpcopyup into {dest}: {_why(e)}",
                                  e.errno) from None
            finally:
                os.close(dst_dir)
    finally:
        os.close(fd)
        if src_dir >= 0:
            os.close(src_dir)
    ctx.propagate(i, dest, opts.propagation)


def _copy_tree(src: int, dst: int) -> None:
    """Copy a directory's content (fd to fd), never following symlinks."""
    for name in os.listdir(src):
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        mode = st.st_mode
        perm = stat.S_IMODE(mode)
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=src)
            try:
                d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=dst)
                try:
                    _copy_tree(s, d)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISREG(mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                            | os.O_CLOEXEC, 0o600, dir_fd=dst)
                try:
                    while os.sendfile(d, s, None, 1 << 20) > 0:
                        pass
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(name, 0o600, dir_fd=dst)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            try:
                os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst)
            except PermissionError:
                continue  # not allowed in a user namespace: skip the node
        else:
            continue  # sockets
        try:
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EINVAL):
                raise
        if not stat.S_ISLNK(mode):
            os.chmod(name, perm, dir_fd=dst)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst)


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
