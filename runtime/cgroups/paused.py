"""Is a container paused? Read straight from the freezer files its state.json
names, without loading a cgroup driver: ``Container.status()`` asks on every
hot verb (state, start, kill, delete, list), and the drivers' modules cost
more to import than the one or two reads this takes (and so does ``os``:
runtime/state.py)."""

import posix


def _read(path: str) -> bytes | None:
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return None
    try:
        return posix.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        posix.close(fd)


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def is_frozen(d: dict) -> bool:
    """``d`` is the cgroup record of state.json (any driver)."""
    driver = d.get("inner") if d.get("driver") == "systemd" else d.get("driver")
    if driver in ("v1", "hybrid"):
        path = (d.get("paths") or {}).get("freezer")
        return bool(path) and _v1_frozen(path)
    if driver == "v2":
        return _read(_join(d.get("path") or "/", "cgroup.freeze")) == b"1"
    from runtime.cgroups import manager_from_state  # a driver this module does not know
    return manager_from_state(d).is_frozen()


def _v1_frozen(path: str) -> bool:
    """FROZEN because of *this* cgroup (freezer.self_freezing), not a parent;
    FREEZING is waited out, as runc does."""
    for _ in range(1000):
        state = _read(_join(path, "freezer.state"))
        if state is None or state not in (b"FROZEN", b"FREEZING"):
            return False
        if state == b"FREEZING":
            import time
            time.sleep(0.001)
            continue
        own = _read(_join(path, "freezer.self_freezing"))
        return own is None or own == b"1"
    return False
