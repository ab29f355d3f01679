"""OOM notifications for ``hako events``.

v1: an eventfd registered through ``cgroup.event_control`` on
``memory.oom_control`` -- the kernel signals it on every OOM in the cgroup,
and also when the cgroup is removed (told apart by the control file being
gone). v2: ``memory.events`` raises POLLPRI when a counter changes; an OOM is
the ``oom`` counter going up.

Both give a file descriptor to poll, so ``events`` waits on the OOM source and
its stats timer with one poll(2) and no thread.
"""

from __future__ import annotations

import os

from runtime.cgroups import fsutil
from runtime.errors import HakoError


class OOMNotifier:
    """``fileno()`` to poll; ``read()`` -> number of new OOM events, or -1
    when the cgroup is gone."""

    def fileno(self) -> int:
        raise NotImplementedError

    def events(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    poll_flags = 0


class V1OOM(OOMNotifier):
    def __init__(self, memory_path: str) -> None:
        import select
        self.path = memory_path
        self.poll_flags = select.POLLIN
        self.efd = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            self.ocfd = os.open(os.path.join(memory_path, "memory.oom_control"),
                                os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(self.efd)
            raise HakoError(f"events: cannot open {memory_path}/memory.oom_control: "
                            f"{e.strerror}") from None
        try:
            fsutil.write(memory_path, "cgroup.event_control", f"{self.efd} {self.ocfd}",
                         what="events")
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.efd

    def events(self) -> int:
        try:
            n = os.eventfd_read(self.efd)
        except BlockingIOError:
            return 0
        if not os.path.exists(os.path.join(self.path, "cgroup.event_control")):
            return -1
        return n

    def close(self) -> None:
        for fd in (getattr(self, "ocfd", -1), self.efd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.efd = self.ocfd = -1


class V2OOM(OOMNotifier):
    def __init__(self, path: str) -> None:
        import select
        self.path = path
        self.poll_flags = select.POLLPRI | select.POLLERR
        try:
            self.fd = os.open(os.path.join(path, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise HakoError(f"events: cannot open {path}/memory.events: {e.strerror} "
                            "(memory controller not enabled?)") from None
        self.last = self._count()

    def _count(self) -> int:
        try:
            os.lseek(self.fd, 0, os.SEEK_SET)
            text = os.read(self.fd, 4096).decode()
        except OSError:
            return -1
        return fsutil.flat_keyed(text).get("oom", 0)

    def fileno(self) -> int:
        return self.fd

    def events(self) -> int:
        if not os.path.isdir(self.path):
            return -1
        n = self._count()
        if n < 0:
            return -1
        new, self.last = max(n - self.last, 0), n
        return new

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def oom_notifier(mgr) -> OOMNotifier | None:
    """The notifier for a manager, or None when it has no memory controller."""
    paths = getattr(mgr, "paths", None)
    if paths is not None:
        p = paths.get("memory")
        return V1OOM(p) if p else None
    path = mgr.path
    if os.path.exists(os.path.join(path, "memory.events")):
        return V2OOM(path)
    return None
