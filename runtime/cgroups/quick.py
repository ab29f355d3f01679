"""Quick paths from the state record alone, without a driver module.

``delete``: nearly every one finds the container's cgroup empty (the init is
gone, and with it its pid namespace) and without sub-cgroups; then removing
it is one ``rmdir`` per hierarchy, which needs neither a driver nor ``os``
(the hot verbs avoid both: runtime/state.py). Anything else -- processes
left behind, sub-cgroups, a busy cgroup, the systemd driver -- answers "not
done" and the caller takes the driver's path, which kills, waits, retries
and reports (runtime/cgroups/base.py ``destroy``).

``exec`` and ``create``: their first child joins the cgroup as it is born
(``Joiner``), without the wait a driver's ``enter`` has.
"""

import posix


def hierarchy_dirs(paths: dict, unified: str | None) -> list[str]:
    """A v1/hybrid cgroup's directories: each v1 one once (controllers may
    share a hierarchy), then the unified one. V1Manager.dirs() is this."""
    out: list[str] = []
    for p in paths.values():
        if p not in out:
            out.append(p)
    if unified:
        out.append(unified)
    return out


def _split(record: dict | None) -> tuple[list[str], str | None] | None:
    """(v1 directories, the cgroup2 one) of a cgroupfs record
    (Manager.to_state); None for other drivers."""
    driver = (record or {}).get("driver")
    if driver == "v2":
        path = record.get("path")
        return ([], path) if path else None
    if driver in ("v1", "hybrid"):
        unified = record.get("unified")
        v1 = hierarchy_dirs(record.get("paths") or {}, None)
        return v1, (unified[1] if unified else None)
    return None


def dirs_of(record: dict | None) -> list[str] | None:
    """The directories a cgroupfs record owns; None for other drivers."""
    split = _split(record)
    if split is None:
        return None
    v1, unified = split
    return v1 + [unified] if unified else v1


def remove_empty(record: dict) -> bool:
    """True when every directory of the cgroup is gone now."""
    dirs = dirs_of(record)
    if dirs is None:
        return False
    for d in dirs:
        if not isinstance(d, str) or not d.startswith("/"):
            return False
        try:
            posix.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError:  # EBUSY: processes or sub-cgroups; the driver deals with them
            return False
    return True


class Joiner:
    """A cgroupfs cgroup to move processes into.

    ``enter(pid)`` is what the drivers' ``enter`` does: a write to each
    cgroup.procs, each of which takes the kernel's global threadgroup lock,
    and the first after a quiet spell waits for an RCU grace period (5-25 ms
    here). A process that joins at birth waits for none:
    runtime/process.fork_child starts it inside the cgroup2 directory
    (``open_unified``: clone3 CLONE_INTO_CGROUP) and it writes itself into
    each v1 hierarchy (``enter_self``: the kernel skips that lock for a
    thread moving itself, and a single-threaded process is that thread)."""

    def __init__(self, v1: list[str], unified: str | None) -> None:
        from runtime.cgroups import fsutil  # here: the hot verbs import this module
        self._fsutil = fsutil
        self.v1 = v1
        self.unified = unified
        self.dirs = v1 + [unified] if unified else list(v1)

    @classmethod
    def from_record(cls, record: dict | None) -> "Joiner | None":
        """For a cgroupfs record whose paths are all absolute; else None."""
        split = _split(record)
        if split is None:
            return None
        v1, unified = split
        if not all(isinstance(d, str) and d.startswith("/") for d in v1 + [unified or "/"]):
            return None
        return cls(v1, unified)

    def enter(self, pid: int) -> None:
        for d in self.dirs:
            self._fsutil.write_pid(d, pid)

    def open_unified(self) -> int:
        """An O_PATH fd of the cgroup2 directory for clone3, or -1 (none, or
        gone: then the child's own write reports it)."""
        if not self.unified:
            return -1
        try:
            return posix.open(self.unified, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except OSError:
            return -1

    def enter_self(self, born_inside: bool) -> None:
        """In the new process, before anything else: each v1 hierarchy's
        ``tasks`` gets "0" (this thread), and cgroup.procs of the cgroup2
        directory too unless it was born inside."""
        write = self._fsutil.write
        for d in self.v1:
            write(d, "tasks", "0")
        if self.unified and not born_inside:
            write(self.unified, "cgroup.procs", "0")


def joiner(state: dict):
    """What exec moves its process into: a Joiner for a cgroupfs record, the
    driver's Manager for any other (systemd), None without a cgroup."""
    record = (state.get("hako") or {}).get("cgroup")
    if not record:
        return None
    j = Joiner.from_record(record)
    if j is not None:
        return j
    from runtime.cgroups import manager_from_state
    return manager_from_state(record)
