"""The cgroup verbs: pause, resume, update, events (one function each).

The command modules only translate flags; these take the global options and
the container id, open the container through runtime.state and rebuild its
cgroup manager from state.json -- runc's messages and status rules.
"""

from __future__ import annotations

import sys
import time

from runtime.cgroups import is_paused, manager_of  # noqa: F401  (verbs import them here)
from runtime.errors import HakoError

NO_CGROUP = "container has no cgroup (rootless on cgroup v1)"


def status(c) -> str:
    s = c.status()
    if s in ("running", "created") and is_paused(c.state):
        return "paused"
    return s


def _open(g: dict, cid: str, *, lock: bool = True):
    from runtime.state import Container, state_root
    return Container.open(state_root(g), cid, lock=lock)


def _need_manager(c):
    mgr = manager_of(c.state)
    if mgr is None:
        reason = (c.state.get("hako") or {}).get("cgroup_reason") or NO_CGROUP
        raise HakoError(reason)
    return mgr


# ------------------------------------------------------------------ pause/resume
def pause(g: dict, cid: str) -> None:
    with _open(g, cid) as c:
        st = status(c)
        if st not in ("running", "created"):
            raise HakoError("container not running")
        mgr = _need_manager(c)
        mgr.freeze()
        # the init may have exited between the status check and the freeze
        if not mgr.pids():
            raise HakoError("container process already exited.")


def resume(g: dict, cid: str) -> None:
    with _open(g, cid) as c:
        if status(c) != "paused":
            raise HakoError("container not paused")
        _need_manager(c).thaw()


# ------------------------------------------------------------------------ update
def read_resources(source: str) -> dict:
    """``--resources FILE`` or ``-`` (stdin): a LinuxResources JSON object."""
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source) as f:
                text = f.read()
    except OSError as e:
        raise HakoError(f"update: cannot read {source}: {e.strerror}") from None
    try:
        import json  # update only: state/kill/delete import this module too
        r = json.loads(text)
    except ValueError as e:
        raise HakoError(f"update: {source}: invalid JSON: {e}") from None
    if not isinstance(r, dict):
        raise HakoError(f"update: {source}: expected a JSON object (LinuxResources)")
    for key in ("memory", "cpu", "blockIO", "pids", "unified"):
        if r.get(key) is not None and not isinstance(r[key], dict):
            raise HakoError(f"update: {source}: {key} must be an object")
    return r


def update(g: dict, cid: str, opts: dict) -> None:
    from runtime import log
    from runtime.cgroups import convert
    if opts.get("resources"):
        new = read_resources(opts["resources"])
    else:
        new = convert.resources_from_flags(opts)
        for flag in ("kernel-memory", "kernel-memory-tcp"):
            if opts.get(flag):
                log.warn(f"Setting --{flag} is ignored and will be removed")
    for flag, what in (("l3-cache-schema", "Intel RDT/CAT: l3 cache schema"),
                       ("mem-bw-schema", "Intel RDT/MBA: memory bandwidth schema")):
        if opts.get(flag):
            raise HakoError(f"{what} is not enabled")
    with _open(g, cid) as c:
        if c.status() == "stopped":
            raise HakoError("container not running")
        mgr = _need_manager(c)
        merged = convert.merge_update(mgr.resources, new)
        mgr.apply(merged, skip_devices=True)
        c.state.setdefault("hako", {})["cgroup"] = mgr.to_state()
        c.save()


# ------------------------------------------------------------------------ events
def parse_duration(text: str) -> float:
    """Go's time.ParseDuration: "5s", "1m30s", "250ms", "1.5h", "0"."""
    import re
    units = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", s)
    if not s or "".join(a + b for a, b in parts) != s:
        raise HakoError(f'invalid value "{text}" for flag -interval: parse error', 2)
    return sign * sum(float(a) * units[b] for a, b in parts)


def _emit(obj: dict) -> None:
    import json
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def events(g: dict, cid: str, *, interval: float = 5.0, stats_only: bool = False) -> None:
    if interval <= 0:
        raise HakoError("duration interval must be greater than 0")
    with _open(g, cid, lock=True) as c:
        if status(c) == "stopped":
            raise HakoError(f"container with id {cid} is not running")
        mgr = _need_manager(c)
    if stats_only:
        _emit({"type": "stats", "id": cid, "data": mgr.stats()})
        return
    import select
    from runtime import log
    from runtime.cgroups.notify import oom_notifier
    notifier = oom_notifier(mgr)
    poller = select.poll()
    if notifier is not None:
        poller.register(notifier.fileno(), notifier.poll_flags)
    next_tick = time.monotonic() + interval
    try:
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            ready = poller.poll(timeout * 1000) if notifier is not None else \
                (time.sleep(timeout) or [])
            if ready and notifier is not None:
                n = notifier.events()
                if n < 0:
                    return  # the cgroup is gone: the container was deleted
                for _ in range(n):
                    _emit({"type": "oom", "id": cid})
            if time.monotonic() >= next_tick:
                next_tick += interval
                if not mgr.exists():
                    return
                try:
                    _emit({"type": "stats", "id": cid, "data": mgr.stats()})
                except (OSError, HakoError) as e:
                    log.error(str(e))
    finally:
        if notifier is not None:
            notifier.close()

