"""Device nodes and /dev symlinks inside the container's rootfs.

runc semantics: the default devices (null, zero, full, random, urandom, tty)
plus ``linux.devices[]`` are created with mknod(2) and chown(2). Inside a user
namespace (or rootless) mknod is not allowed, so an empty file is created and
the host's node bind-mounted onto it; mknod failing with EPERM falls back to
that too. /dev/ptmx becomes a symlink to pts/ptmx, and /dev/fd, /dev/std* (and
/dev/core when /proc/kcore exists) point into /proc/self.

Every path is resolved inside the rootfs (runtime.inroot); mknod/chown/mount are
given ``/proc/self/fd/N[/name]`` paths of fds opened that way.
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.inroot import RootfsError, ensure_file, fd_path, mkdir_all
from runtime.syscalls import MS_BIND, SYS, Syscalls

#: (path, type, major, minor): what every container gets, mode 0666, root-owned;
#: in runc's order (visible in mountinfo when they are bind-mounted)
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3),
    ("/dev/random", "c", 1, 8),
    ("/dev/full", "c", 1, 7),
    ("/dev/tty", "c", 5, 0),
    ("/dev/zero", "c", 1, 5),
    ("/dev/urandom", "c", 1, 9),
)

DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
)

_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


class Device:
    __slots__ = ("path", "type", "major", "minor", "mode", "uid", "gid")

    def __init__(self, path: str, type: str, major: int = 0, minor: int = 0,
                 mode: int = 0o666, uid: int = 0, gid: int = 0) -> None:
        self.path = path
        self.type = type
        self.major = major
        self.minor = minor
        self.mode = mode
        self.uid = uid
        self.gid = gid

    def __repr__(self) -> str:
        return (f"Device({self.path!r}, {self.type!r}, {self.major}, {self.minor}, "
                f"mode={self.mode:#o}, uid={self.uid}, gid={self.gid})")


def _clean(path: str) -> str:
    return "/" + "/".join(c for c in path.split("/") if c and c != ".")


def device_list(spec: dict) -> list[Device]:
    """``linux.devices[]`` in order, then the defaults the config did not name."""
    out: list[Device] = []
    seen: set[str] = set()
    for i, d in enumerate((spec.get("linux") or {}).get("devices") or []):
        path = d.get("path") or ""
        if not path:
            continue  # a cgroup-only entry
        typ = d.get("type", "")
        if typ not in _TYPES:
            raise RootfsError(f"linux.devices[{i}]: {path}: invalid device type {typ!r}")
        mode = d.get("fileMode")
        out.append(Device(_clean(path), typ, int(d.get("major", 0)), int(d.get("minor", 0)),
                          0o666 if mode is None else int(mode) & 0o7777,
                          int(d.get("uid") or 0), int(d.get("gid") or 0)))
        seen.add(_clean(path))
    for path, typ, major, minor in DEFAULT_DEVICES:
        if path not in seen:
            out.append(Device(path, typ, major, minor))
    return out


def create_devices(rootfd: int, spec: dict, *, bind: bool, sc: Syscalls = SYS) -> None:
    """Create every device of :func:`device_list` under the rootfs fd.

    ``bind``: bind-mount the host nodes instead of mknod (user namespace / rootless).
    """
    for dev in device_list(spec):
        if dev.path == "/dev/ptmx":
            continue  # setup_ptmx makes it a symlink to the devpts instance
        comps = dev.path.rsplit("/", 1)
        parent, name = (comps[0] or "/"), comps[1]
        if not name or name == "..":
            raise RootfsError(f"device {dev.path}: not a valid device path")
        try:
            pfd = mkdir_all(rootfd, parent, sc=sc)
        except OSError as e:
            raise RootfsError(f"device {dev.path}: create {parent} in rootfs: "
                              f"{os.strerror(e.errno)}", e.errno) from None
        try:
            if bind:
                _bind_node(rootfd, pfd, name, dev, sc)
            else:
                _mknod(rootfd, pfd, name, dev, sc)
        finally:
            os.close(pfd)


def _mknod(rootfd: int, pfd: int, name: str, dev: Device, sc: Syscalls) -> None:
    target = f"{fd_path(pfd)}/{name}"
    old = os.umask(0)
    try:
        sc.mknod(target, dev.mode | _TYPES[dev.type], os.makedev(dev.major, dev.minor))
    except OSError as e:
        if e.errno == errno.EEXIST:
            return  # like runc: an existing node is kept
        if e.errno == errno.EPERM:
            _bind_node(rootfd, pfd, name, dev, sc)
            return
        raise RootfsError(f"mknod {dev.path} ({dev.type} {dev.major}:{dev.minor}): "
                          f"{os.strerror(e.errno)}", e.errno) from None
    finally:
        os.umask(old)
    try:
        sc.chown(target, dev.uid, dev.gid)
    except OSError as e:
        raise RootfsError(f"chown {dev.path} to {dev.uid}:{dev.gid}: "
                          f"{os.strerror(e.errno)}", e.errno) from None


def _bind_node(rootfd: int, pfd: int, name: str, dev: Device, sc: Syscalls) -> None:
    if not os.path.exists(dev.path):
        raise RootfsError(f"device {dev.path}: no such device on the host to bind-mount "
                          "(mknod is not possible in a user namespace)", errno.ENOENT)
    try:
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666, dir_fd=pfd)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as e:
        raise RootfsError(f"device {dev.path}: create mount target: {os.strerror(e.errno)}",
                          e.errno) from None
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
            raise RootfsError(f"device {dev.path}: exists in the rootfs and is a "
                              f"{'symlink' if stat.S_ISLNK(mode) else 'directory'}",
                              errno.EEXIST)
        try:
            sc.mount(dev.path, fd_path(fd), None, MS_BIND, label=dev.path)
        except OSError as e:
            raise RootfsError(f"bind-mount device {dev.path}: {os.strerror(e.errno)}",
                              e.errno) from None
    finally:
        os.close(fd)


def setup_ptmx(rootfd: int, *, sc: Syscalls = SYS) -> None:
    """/dev/ptmx -> pts/ptmx (the container's own devpts instance)."""
    devfd = _devdir(rootfd, sc)
    try:
        try:
            os.unlink("ptmx", dir_fd=devfd)
        except FileNotFoundError:
            pass
        os.symlink("pts/ptmx", "ptmx", dir_fd=devfd)
    except OSError as e:
        raise RootfsError(f"symlink /dev/ptmx -> pts/ptmx: {os.strerror(e.errno)}",
                          e.errno) from None
    finally:
        os.close(devfd)


def setup_dev_symlinks(rootfd: int, *, sc: Syscalls = SYS) -> None:
    """/dev/fd, /dev/stdin, /dev/stdout, /dev/stderr (and /dev/core)."""
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):  # CONFIG_PROC_KCORE may be off
        links.append(("/proc/kcore", "core"))
    devfd = _devdir(rootfd, sc)
    try:
        for target, name in links:
            try:
                os.symlink(target, name, dir_fd=devfd)
            except FileExistsError:
                pass
            except OSError as e:
                raise RootfsError(f"symlink /dev/{name} -> {target}: {os.strerror(e.errno)}",
                                  e.errno) from None
    finally:
        os.close(devfd)


def _devdir(rootfd: int, sc: Syscalls) -> int:
    try:
        return mkdir_all(rootfd, "/dev", sc=sc)
    except OSError as e:
        raise RootfsError(f"create /dev in rootfs: {os.strerror(e.errno)}", e.errno) from None


def reopen_dev_null() -> None:
    """After pivot_root: stdio fds on the host's /dev/null now use the container's."""
    try:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise RootfsError(f"open /dev/null in the container: {os.strerror(e.errno)}",
                          e.errno) from None
    try:
        rdev = os.fstat(null).st_rdev
        for fd in (0, 1, 2):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
                os.dup2(null, fd)
    finally:
        os.close(null)


def mount_console(pty_path: str, *, sc: Syscalls = SYS) -> None:
    """After pivot_root: bind the terminal's pty slave onto /dev/console."""
    rootfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = ensure_file(rootfd, "/dev/console", 0o666, sc=sc)
        except OSError as e:
            raise RootfsError(f"create /dev/console: {os.strerror(e.errno)}", e.errno) from None
        try:
            sc.mount(pty_path, fd_path(fd), None, MS_BIND, label="/dev/console")
        except OSError as e:
            raise RootfsError(f"bind-mount {pty_path} on /dev/console: "
                              f"{os.strerror(e.errno)}", e.errno) from None
        finally:
            os.close(fd)
    finally:
        os.close(rootfd)


__all__ = ["DEFAULT_DEVICES", "Device", "create_devices", "device_list", "mount_console",
           "reopen_dev_null", "setup_dev_symlinks", "setup_ptmx"]
