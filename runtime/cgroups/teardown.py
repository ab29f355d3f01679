"""The quick way out for ``delete``: remove an empty cgroupfs cgroup.

Nearly every ``delete`` finds the container's cgroup empty (the init is gone,
and with it its pid namespace) and without sub-cgroups: then removing it is
one ``rmdir`` per hierarchy, which needs neither a driver module nor ``os``
(the hot verbs avoid both: runtime/state.py). Anything else -- processes
left behind, sub-cgroups, a busy cgroup, the systemd driver -- answers
"not done" and the caller takes the driver's path, which kills, waits,
retries and reports (runtime/cgroups/base.py ``destroy``).
"""

import posix


def _dirs(record: dict) -> list[str] | None:
    """The directories a cgroupfs record (Manager.to_state) owns; None for
    other drivers."""
    driver = record.get("driver")
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
    dirs = _dirs(record)
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
