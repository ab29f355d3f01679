"""The context of one setup: the rootfs fd, how targets are resolved and created
inside it, and the mount / bind / propagation calls on them.
"""

from __future__ import annotations

import errno
import os

from runtime.inroot import (
    RootfsError, contains, ensure_file, fd_path, mkdir_all, open_in_root, real_path,
)
from runtime.mountopts import PROPAGATION_MASK
from runtime.rootfs.calls import _DIR, _mount_error, _prop_name, _remount, _target_error, _why
from runtime.rootfs.hostmounts import MountInfo, read_mountinfo
from runtime.syscalls import MS_BIND, MS_REC, MS_REMOUNT, Syscalls


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
        self.userns = rootless or new_userns  # mknod / sysfs / cgroup limits apply
        label = (spec.get("linux") or {}).get("mountLabel") or ""
        self.mount_label = label if label and os.path.exists("/sys/fs/selinux/enforce") else ""
        self._mountinfo: list[MountInfo] | None = None

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

    def bind(self, i: int, source: str, fd: int, dest: str, flags: int, cleared: int,
             propagation: list[int]) -> None:
        """Bind *source* on the target fd, then remount to apply the other flags."""
        self.mount(i, source, fd, None, flags & (MS_BIND | MS_REC), "", dest)
        want = flags & ~(MS_BIND | MS_REC | MS_REMOUNT | PROPAGATION_MASK)
        if want or cleared:
            nfd = self.reopen(i, dest)
            try:
                _remount(self.sc, fd_path(nfd), dest, want | MS_BIND | MS_REMOUNT, cleared,
                         prefix=f"mounts[{i}]")
            finally:
                os.close(nfd)
        self.propagate(i, dest, propagation)
