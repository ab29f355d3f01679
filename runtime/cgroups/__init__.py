"""Container cgroups on cgroup v1, v2 and hybrid hosts (runc's cgroupfs driver).

    mgr = create_manager(spec, cid, rootless=..., systemd=...)   # None: no cgroup
    mgr.create(); mgr.apply(spec["linux"]["resources"]); mgr.enter(pid)
    state["hako"]["cgroup"] = mgr.to_state()
    ...
    mgr = manager_from_state(state["hako"]["cgroup"])             # later verbs

Modules: ``paths`` (host layout, path rules), ``v1`` (v1 and hybrid), ``v2``,
``devices`` (v1 device rules), ``ebpf`` (v2 device filter), ``convert``
(v1<->v2 values, update flags), ``stats`` (runc's stats shape), ``notify``
(OOM events), ``fsutil`` (file access), ``paused`` and ``quick`` (the
hot verbs' quick paths). Importing this package costs nothing more than
runtime.errors: ``state``, ``kill`` and ``delete`` import it (no ``os``:
runtime/state.py says why).
"""

from runtime.errors import HakoError

__all__ = ["create_manager", "manager_from_state", "HakoError"]


def _no_cgroup_warning(why: str, spec: dict) -> None:
    from runtime import log
    res = (spec.get("linux") or {}).get("resources") or {}
    limits = any(v for k, v in res.items() if k != "devices")
    # runc says nothing here; hako warns when something the user asked for is
    # lost (limits), and keeps stderr clean otherwise (engines show it)
    if limits:
        log.warn(f"{why}: running without a cgroup; the resource limits in config.json "
                 f"are NOT enforced")
    else:
        log.debug(f"{why}: running without a cgroup")


def create_manager(spec: dict, cid: str, *, rootless: bool, systemd: bool,
                   host: "object | None" = None) -> "object | None":
    """Decide driver and directories for a new container (nothing is created).

    Returns None -- with a warning when the config asks for limits -- when the container must run without
    a cgroup: rootless on a v1 or hybrid host (runc does the same), or
    rootless on v2 without a delegated subtree the user may write to.
    ``host`` (a paths.Host) is for tests; by default the real one.
    """
    from runtime.cgroups import paths
    if host is None:
        host = paths.Host.detect()
    linux = spec.get("linux") or {}
    if systemd:
        from runtime.cgroups.systemd import new_manager
        return new_manager(spec, cid, rootless=rootless, host=host)
    if host.mode == "none":
        if rootless:
            _no_cgroup_warning("no cgroup filesystem is mounted", spec)
            return None
        raise HakoError(f"no cgroup filesystem is mounted under {host.root}")
    if rootless and host.mode in ("v1", "hybrid"):
        _no_cgroup_warning(f"rootless container on a cgroup {host.mode} host", spec)
        return None
    from runtime.cgroups import devices  # not before: rootless on v1 returns above
    inner = paths.inner_path(spec, cid)
    dev_paths = devices.device_paths(spec)
    if host.mode == "v2":
        from runtime.cgroups.v2 import V2Manager
        assert host.unified is not None
        path = host.unified_dir(inner, hybrid=False)
        if rootless and not _delegated(host, path):
            _no_cgroup_warning(f"rootless container: no delegated cgroup v2 subtree is writable "
                               f"for {path}", spec)
            return None
        return V2Manager(cid, host.unified.mountpoint, path, rootless=rootless,
                         dev_paths=dev_paths)
    from runtime.cgroups.v1 import V1Manager
    dirs = {c: host.v1_dir(c, inner) for c in host.v1}
    unified = None
    if host.mode == "hybrid":
        assert host.unified is not None
        unified = (host.unified.mountpoint, host.unified_dir(inner, hybrid=True))
    return V1Manager(cid, dirs, unified=unified, rootless=rootless, dev_paths=dev_paths)


def _delegated(host, path: str) -> bool:
    """May we make ``path`` and move ourselves into it? The nearest existing
    ancestor must be writable, and so must cgroup.procs of the common
    ancestor of our cgroup and the target (the kernel's delegation rule)."""
    import os
    mp = host.unified.mountpoint
    anc = os.path.dirname(path)
    while not os.path.isdir(anc) and anc.startswith(mp + "/"):
        anc = os.path.dirname(anc)
    if not os.access(anc, os.W_OK):
        return False
    own = os.path.join(mp, host.own("").lstrip("/"))
    common = os.path.commonpath([own, path])
    return os.access(os.path.join(common, "cgroup.procs"), os.W_OK)


def manager_from_state(d: dict) -> "object":
    """Rebuild a Manager from ``to_state()`` output, without probing the host."""
    driver = d.get("driver")
    common = {"rootless": bool(d.get("rootless")), "resources": d.get("resources") or {},
              "dev_paths": d.get("dev_paths") or []}
    if driver == "v2":
        from runtime.cgroups.v2 import V2Manager
        return V2Manager(d.get("id", ""), d["mount"], d["path"], **common)
    if driver in ("v1", "hybrid"):
        from runtime.cgroups.v1 import V1Manager
        uni = d.get("unified")
        return V1Manager(d.get("id", ""), d["paths"], unified=tuple(uni) if uni else None,
                         **common)
    if driver == "systemd":
        from runtime.cgroups.systemd import SystemdManager
        return SystemdManager.from_state(d)
    raise HakoError(f"state.json: unknown cgroup driver {driver!r}")


# read by the state store (status "paused") and every verb: no import of
# runtime.state from here, which imports this
def manager_of(state: dict):
    """The container's Manager, or None when it runs without a cgroup."""
    d = (state.get("hako") or {}).get("cgroup")
    if not d:
        return None
    return manager_from_state(d)


def is_paused(state: dict) -> bool:
    """Cheap (one or two small reads): for Container.status()."""
    d = (state.get("hako") or {}).get("cgroup")
    if not d:
        return False
    from runtime.cgroups.paused import is_frozen
    try:
        return is_frozen(d)
    except (OSError, HakoError):
        return False
