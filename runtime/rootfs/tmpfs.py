"""tmpfs entries: the mode of the directory they hide, and tmpcopyup.
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.inroot import RootfsError, fd_path, open_in_root
from runtime.mountopts import MountOptions, PROPAGATION_MASK
from runtime.rootfs.calls import _target_error, _why
from runtime.rootfs.procguard import _check_proc_dest, _check_proc_mount
from runtime.syscalls import MS_RDONLY

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from runtime.rootfs.context import _Ctx


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
