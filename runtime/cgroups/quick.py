"""Quick paths from the state record alone, without a driver module.

``delete``: nearly every one finds the container's cgroup empty (the init is
gone, and with it its pid namespace) and without sub-cgroups; then removing
it is one ``rmdir`` per hierarchy, which needs neither a driver nor ``os``
(the hot verbs avoid both: runtime/state.py). Anything else -- processes
left behind, sub-cgroups, a busy cgroup, the systemd driver -- answers "not
done" and the caller takes the driver's path, which kills, waits, retries
and reports (runtime/cgroups/base.py ``destroy``).

``exec``: moving the new process in is a write to cgroup.procs of each
directory (``Joiner``), the same writes the drivers' ``enter`` makes.
"""

import posix


def dirs_of(record: dict | None) -> list[str] | None:
    """The directories a cgroupfs record (Manager.to_state) owns; None for
    other drivers."""
    driver = (record or {}).get("driver")
    if driver == "v2":
        path = record.get("path")
        return [path] if path else None
    if driver in ("v1", "hybrid"):
        out: list[str] = []
        for p in (record.get("paths") or {}).values():
            if p not in out:
                out.append(p)
        unified = record.get("unified")
        if unified:
            out.append(unified[1])
        return out
    return None


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
    """A cgroupfs cgroup to move processes into: ``enter`` as the drivers do
    (fsutil.write_pid, which retries a task still being forked)."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = dirs

    def enter(self, pid: int) -> None:
        from runtime.cgroups.fsutil import write_pid
        for d in self.dirs:
            write_pid(d, pid)


def joiner(state: dict):
    """What exec moves its process into: a Joiner for a cgroupfs record, the
    driver's Manager for any other (systemd), None without a cgroup."""
    record = (state.get("hako") or {}).get("cgroup")
    if not record:
        return None
    dirs = dirs_of(record)
    if dirs is not None and all(isinstance(d, str) and d.startswith("/") for d in dirs):
        return Joiner(dirs)
    from runtime.cgroups import manager_from_state
    return manager_from_state(record)
