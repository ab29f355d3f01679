"""finalize_rootfs, after hostname and sysctl: read-only and masked paths,
read-only tmpfs and /dev, root.readonly, and rootfsPropagation on the new "/".
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.inroot import RootfsError, fd_path, open_in_root
from runtime.mountopts import (
    final_propagation, is_bind_entry, parse_options, rootfs_propagation, statvfs_to_flags,
)
from runtime.rootfs.context import (
    _DIR, _clean, _mount_error, _prop_name, _remount, _remount_readonly, _target_error,
    _why,
)
from runtime.syscalls import (
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT, SYS, Syscalls,
)


def finalize_rootfs(spec: dict, *, sc: Syscalls = SYS, _root: str = "/") -> None:
    """After hostname/sysctl were applied: linux.readonlyPaths, linux.maskedPaths,
    read-only tmpfs and /dev, root.readonly, and rootfsPropagation on "/"
    (shared and unbindable had to wait until after pivot_root).

    ``_root`` is for tests: the directory standing for the container's '/'.
    """
    linux = spec.get("linux") or {}
    rootfd = os.open(_root, _DIR)
    try:
        for p in linux.get("readonlyPaths") or []:
            _readonly_path(sc, rootfd, p)
        for p in linux.get("maskedPaths") or []:
            _mask_path(sc, rootfd, p)
        for i, m in enumerate(spec.get("mounts") or []):
            opts = parse_options(m.get("options"))
            dest = _clean(m.get("destination") or "")
            if (not opts.flags & MS_RDONLY or is_bind_entry(m) or opts.flags & MS_REMOUNT
                    or not (m.get("type") == "tmpfs" or dest == "/dev")):
                continue
            try:
                fd = open_in_root(rootfd, dest, os.O_PATH, sc=sc)
            except OSError as e:
                raise _target_error(i, dest, e) from None
            try:
                _remount_readonly(sc, fd_path(fd), dest, opts.flags, f"mounts[{i}]")
            finally:
                os.close(fd)
        if (spec.get("root") or {}).get("readonly"):
            try:
                _remount(sc, fd_path(rootfd), "/", MS_BIND | MS_REMOUNT | MS_RDONLY,
                         prefix="root.readonly")
            except RootfsError as e:
                raise RootfsError(f"{e} (making the rootfs read-only)", e.errno) from None
        try:
            prop = rootfs_propagation(linux.get("rootfsPropagation"))
        except ValueError as e:
            raise RootfsError(str(e), errno.EINVAL) from None
        last = final_propagation(prop)
        if last:
            try:
                sc.mount(None, fd_path(rootfd), None, last, None, label="/")
            except OSError as e:
                raise RootfsError(f"linux.rootfsPropagation: make / {_prop_name(last)}: "
                                  f"{_why(e)}", e.errno) from None
    finally:
        os.close(rootfd)


def _open_listed(sc: Syscalls, rootfd: int, path: str, where: str) -> int | None:
    """O_PATH fd of a maskedPaths/readonlyPaths entry; None when it does not exist."""
    try:
        return open_in_root(rootfd, path, os.O_PATH, sc=sc)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise RootfsError(f"{where}: {path}: {_why(e)}", e.errno) from None


def _readonly_path(sc: Syscalls, rootfd: int, path: str) -> None:
    """Bind the path onto itself, then remount that read-only."""
    fd = _open_listed(sc, rootfd, path, "linux.readonlyPaths")
    if fd is None:
        return
    try:
        sc.mount(fd_path(fd), fd_path(fd), None, MS_BIND | MS_REC, None, label=path)
    except OSError as e:
        raise _mount_error(e, path, path, prefix="linux.readonlyPaths") from None
    finally:
        os.close(fd)
    try:
        fd = open_in_root(rootfd, path, os.O_PATH, sc=sc)
    except OSError as e:
        raise RootfsError(f"linux.readonlyPaths: {path}: {_why(e)}", e.errno) from None
    try:
        keep = statvfs_to_flags(os.statvfs(fd_path(fd)).f_flag) & (MS_NOSUID | MS_NODEV
                                                                   | MS_NOEXEC)
        _remount(sc, fd_path(fd), path, keep | MS_BIND | MS_REMOUNT | MS_RDONLY,
                 prefix="linux.readonlyPaths")
    finally:
        os.close(fd)


def _mask_path(sc: Syscalls, rootfd: int, path: str) -> None:
    """/dev/null over a file, an empty read-only tmpfs over a directory."""
    fd = _open_listed(sc, rootfd, path, "linux.maskedPaths")
    if fd is None:
        return
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            sc.mount("tmpfs", fd_path(fd), "tmpfs", MS_RDONLY, None, label=path)
        else:
            sc.mount("/dev/null", fd_path(fd), None, MS_BIND, None, label=path)
    except OSError as e:
        raise _mount_error(e, "tmpfs" if stat.S_ISDIR(os.fstat(fd).st_mode) else "/dev/null",
                           path, prefix="linux.maskedPaths") from None
    finally:
        os.close(fd)
