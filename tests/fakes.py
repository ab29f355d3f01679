"""A recording stand-in for runtime.syscalls.Syscalls.

Privileged calls (mount, pivot_root, unshare, setns, mknod, chown, identity
changes, capabilities) are recorded and not performed, so the logic that
decides *which* calls to make can be tested without root. ``openat2`` is
passed through to the real kernel because path resolution is exactly what the
rootfs tests want to exercise on a real (unprivileged) directory tree.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

from runtime.syscalls import Syscalls


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeSyscalls(Syscalls):
    def __init__(self, fail: dict[str, OSError] | None = None) -> None:
        self.calls: list[Call] = []
        #: name -> error to raise when that call is made
        self.fail = dict(fail or {})
        #: what describe_key answers (a keyring as join_session_keyring makes it)
        self.key_description = "keyring;0;0;3f130000;{name}"
        self._key_names: dict[int, str] = {}

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    @staticmethod
    def fd_path(target: str) -> str:
        """Where a /proc/self/fd/N mount target really points."""
        if target.startswith("/proc/self/fd/"):
            return os.readlink(target)
        return target

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int = 0, what: str = "") -> None:
        self._record("setns", fd, nstype, what)

    def mount(self, source, target, fstype, flags=0, data=None, *, label=""):
        # resolve the fd target now: the fd is closed once the caller is done
        self._record("mount", source, self.fd_path(target), fstype, flags, data, label=label)

    def umount2(self, target, flags=0):
        self._record("umount2", self.fd_path(target), flags)

    def open_tree(self, dirfd, path, flags):
        self._record("open_tree", dirfd, path, flags)
        return os.open(path, os.O_PATH | os.O_CLOEXEC)

    def move_mount(self, from_fd, to_fd, flags, *, label=""):
        self._record("move_mount", self.fd_path(f"/proc/self/fd/{from_fd}"),
                     self.fd_path(f"/proc/self/fd/{to_fd}"), flags, label=label)

    def mount_setattr(self, dirfd, path, flags, attr_set, attr_clr=0, propagation=0,
                      userns_fd=0, *, label=""):
        where = self.fd_path(f"/proc/self/fd/{dirfd}") if dirfd >= 0 and not path else path
        self._record("mount_setattr", where, flags, attr_set, attr_clr, propagation,
                     userns_fd, label=label)

    def pivot_root(self, new_root, put_old):
        self._record("pivot_root", new_root, put_old)

    def chroot(self, path):
        self._record("chroot", path)

    def sethostname(self, name):
        self._record("sethostname", name)

    def setdomainname(self, name):
        self._record("setdomainname", name)

    def setgroups(self, gids):
        self._record("setgroups", list(gids))

    def setresgid(self, gid):
        self._record("setresgid", gid)

    def setresuid(self, uid):
        self._record("setresuid", uid)

    def mknod(self, path, mode, device):
        self._record("mknod", self.fd_path(path), mode, device)

    def chown(self, path, uid, gid):
        self._record("chown", self.fd_path(path), uid, gid)

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
        self._record("prctl", option, arg2, arg3, arg4, arg5)
        return 0

    def capset(self, effective, permitted, inheritable):
        self._record("capset", effective, permitted, inheritable)

    def set_mempolicy(self, mode, nodes):
        self._record("set_mempolicy", mode, list(nodes))

    def clone_into_cgroup(self, cgroup_fd):
        """Never forks: as a kernel without clone3 (callers then fork(2))."""
        self._record("clone_into_cgroup", cgroup_fd)
        raise OSError(errno.ENOSYS, "clone3(CLONE_INTO_CGROUP): fake")

    def join_session_keyring(self, name):
        """Recorded; answers a made-up serial, as if a new keyring were made."""
        self._record("join_session_keyring", name)
        serial = 0x1000 + len(self._key_names)
        self._key_names[serial] = name
        return serial

    def describe_key(self, serial):
        self._record("describe_key", serial)
        return self.key_description.format(name=self._key_names.get(serial, "?"))

    def set_key_perm(self, serial, perm):
        self._record("set_key_perm", serial, perm)

    def madvise(self, addr, length, advice):
        self._record("madvise", addr, length, advice)

    def ioprio_set(self, which, who, ioprio):
        self._record("ioprio_set", which, who, ioprio)

    def setrlimit(self, resource, soft, hard):
        self._record("setrlimit", resource, soft, hard)

    def personality(self, persona):
        self._record("personality", persona)

    def sched_setattr(self, policy, flags=0, nice=0, priority=0, runtime=0, deadline=0,
                      period=0):
        self._record("sched_setattr", policy, flags=flags, nice=nice, priority=priority,
                     runtime=runtime, deadline=deadline, period=period)

    def sched_setaffinity(self, pid, cpus):
        self._record("sched_setaffinity", pid, set(cpus))

    def seccomp_filter(self, program, flags=0):
        """Recorded, not loaded; with NEW_LISTENER the "notify fd" is a real fd
        (on /dev/null) so the hand-over to a listener can be tested."""
        self._record("seccomp_filter", bytes(program), flags)
        if flags & 8:  # SECCOMP_FILTER_FLAG_NEW_LISTENER
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return 0
