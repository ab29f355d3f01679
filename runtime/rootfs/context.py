"""The context of one setup, and the mount calls every stage shares: the rootfs
fd, targets resolved and created inside it, mount / bind / remount / propagation
calls and their one-line errors.
"""

from __future__ import annotations

import errno
import os
import time

from runtime.inroot import (
    RootfsError, contains, ensure_file, fd_path, mkdir_all, open_in_root, real_path,
)
from runtime.mountopts import ATIME_FLAGS, LOCKED_FLAGS, PROPAGATION_MASK, statvfs_to_flags
from runtime.rootfs.hostmounts import MountInfo, read_mountinfo
from runtime.syscalls import (
    AT_EMPTY_PATH, AT_RECURSIVE, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
    MS_REC, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_UNBINDABLE, Syscalls,
)


DEFAULT_MOUNT_FLAGS = MS_NOEXEC | MS_NOSUID | MS_NODEV

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else (e.strerror or str(e))


def _mount_error(e: OSError, source: str, label: str, data: str | None = None,
                 prefix: str = "") -> RootfsError:
    why = _why(e)
    pre = f"{prefix}: " if prefix else ""
    if e.errno == errno.EINVAL and data:
        kind = "options" if "," in data else "option"
        return RootfsError(f'{pre}mount "{source}" on {label}: invalid {kind} "{data}": {why}',
                           e.errno)
    return RootfsError(f'{pre}mount "{source}" on {label}: {why}', e.errno)


def _clean(path: str) -> str:
    """Lexical clean for labels and comparisons (resolution is done by inroot)."""
    out: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if out:
                out.pop()
            continue
        out.append(c)
    return "/" + "/".join(out)


def _remount(sc: Syscalls, target: str, label: str, flags: int, cleared: int = 0,
             prefix: str = "") -> None:
    """MS_REMOUNT (|MS_BIND) *target* with *flags*; when that fails (a mount
    inherited from a more privileged user namespace has locked flags), retry
    keeping the mount's current lockable flags, as runc does. Fails instead when
    the user explicitly asked to clear a locked flag or for another atime mode."""
    try:
        sc.mount(None, target, None, flags, None, label=label)
        return
    except OSError as e:
        first = e
    try:
        current = statvfs_to_flags(os.statvfs(target).f_flag)
    except OSError:
        raise _mount_error(first, "remount", label, prefix=prefix) from None
    if current & cleared & LOCKED_FLAGS or (
            flags & ATIME_FLAGS and flags & ATIME_FLAGS != current & ATIME_FLAGS):
        raise _mount_error(first, "remount", label, prefix=prefix) from None
    retry = flags | (current & LOCKED_FLAGS)
    if retry == flags:
        raise _mount_error(first, "remount", label, prefix=prefix) from None
    try:
        sc.mount(None, target, None, retry, None, label=label)
    except OSError as e:
        raise _mount_error(e, "remount", label, prefix=prefix) from None


def _remount_readonly(sc: Syscalls, target: str, label: str, flags: int, prefix: str) -> None:
    """runc's remountReadonly: MS_REMOUNT|MS_BIND|MS_RDONLY, retried while EBUSY."""
    flags = (flags & ~(PROPAGATION_MASK | MS_REC)) | MS_REMOUNT | MS_BIND | MS_RDONLY
    for attempt in range(5):
        try:
            _remount(sc, target, label, flags, prefix=prefix)
            return
        except RootfsError as e:
            if e.errno != errno.EBUSY or attempt == 4:
                raise
            time.sleep(0.1)


class _Ctx:
    def __init__(self, spec: dict, bundle: str, rootfs: str, rootfd: int, *, rootless: bool,
                 new_userns: bool, new_netns: bool, new_cgroupns: bool, sc: Syscalls) -> None:
        self.spec = spec
        self.bundle = bundle
        self.rootfs = rootfs
        self.rootfd = rootfd
        self.rootless = rootless
        self.new_userns = new_userns
        self.new_netns = new_netns
        self.new_cgroupns = new_cgroupns
        self.sc = sc
        self.cgroup_dirs: dict[str, str] | None = None
        #: mounts[] index -> fd of its idmapped tree, made by the parent
        self.idmapped: dict[int, int] = {}
        self.userns = rootless or new_userns  # mknod / sysfs / cgroup limits apply
        label = (spec.get("linux") or {}).get("mountLabel") or ""
        self.mount_label = label if label and os.path.exists("/sys/fs/selinux/enforce") else ""
        self._mountinfo: list[MountInfo] | None = None
        #: mountinfo as setup_rootfs first read it (before any mount of ours):
        #: the host's cgroup hierarchies, which our mounts never change
        self.host_mountinfo: list[MountInfo] | None = None

    def mountinfo(self) -> list[MountInfo]:
        if self._mountinfo is None:
            self._mountinfo = read_mountinfo()
        return self._mountinfo

    def labeled(self, data: str) -> str:
        if not self.mount_label:
            return data
        ctx = f'context="{self.mount_label}"'
        return f"{data},{ctx}" if data else ctx

    # -- targets -----------------------------------------------------------
    def target_dir(self, i: int, dest: str, *, no_symlinks: bool = False) -> int:
        try:
            return mkdir_all(self.rootfd, dest, no_symlinks=no_symlinks, sc=self.sc)
        except OSError as e:
            raise _target_error(i, dest, e) from None

    def target_file(self, i: int, dest: str) -> int:
        try:
            return ensure_file(self.rootfd, dest, sc=self.sc)
        except OSError as e:
            raise _target_error(i, dest, e) from None

    def reopen(self, i: int, dest: str) -> int:
        """The destination again, now that something is mounted on it."""
        try:
            return open_in_root(self.rootfd, dest, os.O_PATH, sc=self.sc)
        except OSError as e:
            raise _target_error(i, dest, e) from None

    def container_path(self, fd: int, i: int, dest: str) -> str:
        """Where *fd* is, as the container will see it; refuses anything outside."""
        real = real_path(fd)
        if not contains(self.rootfs, real):
            raise RootfsError(f"mounts[{i}]: mount target {dest} resolves outside the rootfs "
                              f"({real})", errno.EXDEV)
        return "/" + real[len(self.rootfs):].lstrip("/")

    def follow_root(self) -> None:
        """A mount landed on the rootfs' root itself (destination "/", or a symlink
        to it): lookups from now on start on top of it, as a path would."""
        top = os.stat(self.rootfs)
        cur = os.fstat(self.rootfd)
        if (top.st_dev, top.st_ino) != (cur.st_dev, cur.st_ino):
            fd = os.open(self.rootfs, _DIR)
            os.close(self.rootfd)
            self.rootfd = fd

    # -- mount calls -------------------------------------------------------
    def mount(self, i: int, source: str | None, fd: int, fstype: str | None, flags: int,
              data: str, dest: str) -> None:
        try:
            self.sc.mount(source, fd_path(fd), fstype, flags, data or None, label=dest)
        except OSError as e:
            raise _mount_error(e, source or fstype or "none", dest, data,
                               prefix=f"mounts[{i}]" if i >= 0 else "") from None

    def propagate(self, i: int, dest: str, propagation: list[int]) -> None:
        if not propagation:
            return
        fd = self.reopen(i, dest)
        try:
            for flags in propagation:
                try:
                    self.sc.mount(None, fd_path(fd), None, flags, None, label=dest)
                except OSError as e:
                    raise RootfsError(f"mounts[{i}]: set propagation {_prop_name(flags)} on "
                                      f"{dest}: {_why(e)}", e.errno) from None
        finally:
            os.close(fd)

    def set_recursive(self, i: int, dest: str, attr_set: int, attr_clr: int,
                      names: list[str]) -> None:
        """The r* options: mount_setattr(AT_RECURSIVE) on the mount at *dest* and
        every mount below it."""
        fd = self.reopen(i, dest)
        try:
            self.sc.mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr_set, attr_clr,
                                  label=dest)
        except OSError as e:
            why = _why(e)
            if e.errno == errno.ENOSYS:
                why += " (mount_setattr needs Linux 5.12 or later)"
            elif e.errno == errno.EPERM and self.userns:
                why += (" (it or a mount below it comes from a more privileged user "
                        "namespace, which locked this attribute)")
            raise RootfsError(f"mounts[{i}]: {','.join(names)} on {dest}: {why}",
                              e.errno) from None
        finally:
            os.close(fd)

    def bind(self, i: int, source: str, fd: int, dest: str, flags: int, cleared: int,
             propagation: list[int]) -> None:
        """Bind *source* on the target fd, then remount to apply the other flags."""
        self.mount(i, source, fd, None, flags & (MS_BIND | MS_REC), "", dest)
        self.apply_bind_flags(i, dest, flags, cleared, propagation)

    def apply_bind_flags(self, i: int, dest: str, flags: int, cleared: int,
                         propagation: list[int]) -> None:
        """What a bind mount takes after it is made: a remount for its flags,
        then its propagation."""
        want = flags & ~(MS_BIND | MS_REC | MS_REMOUNT | PROPAGATION_MASK)
        if want or cleared:
            nfd = self.reopen(i, dest)
            try:
                _remount(self.sc, fd_path(nfd), dest, want | MS_BIND | MS_REMOUNT, cleared,
                         prefix=f"mounts[{i}]")
            finally:
                os.close(nfd)
        self.propagate(i, dest, propagation)


def _target_error(i: int, dest: str, e: OSError) -> RootfsError:
    why = _why(e)
    if e.errno == errno.ELOOP:
        why += " (a symlink loop, or a symlink where none is allowed)"
    elif e.errno == errno.ENOTDIR:
        why += " (a component of the path in the rootfs is not a directory)"
    pre = f"mounts[{i}]: " if i >= 0 else ""
    return RootfsError(f"{pre}mount target {dest} in the rootfs: {why}", e.errno)


def _prop_name(flags: int) -> str:
    names = {MS_SHARED: "shared", MS_SLAVE: "slave", MS_PRIVATE: "private",
             MS_UNBINDABLE: "unbindable"}
    base = names.get(flags & PROPAGATION_MASK, hex(flags))
    return ("r" + base) if flags & MS_REC else base
