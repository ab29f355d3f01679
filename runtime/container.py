"""Container lifecycle: start, state, list, kill, delete and run.

Each public function is one CLI verb's whole behaviour; the command modules
only translate flags. ``create`` has a module of its own (runtime/create.py),
as does ``exec`` (runtime/execute.py). Hot verbs (start/state/kill/delete/
list) import the state store and nothing else until they need it, and use
``posix`` rather than ``os`` (runtime/state.py says why).
"""

import posix

from runtime import log
from runtime.errors import ContainerNotExist, HakoError
from runtime.state import CREATING, FIFO, Container, state_root


# ---------------------------------------------------------------------- start
def start(g: dict, cid: str) -> None:
    with Container.open(state_root(g), cid) as c:
        _start_locked(c)


def _start_locked(c: Container) -> None:
    status = c.status()
    if status == "stopped":
        raise HakoError("cannot start a container that has stopped")
    if status != "created":
        raise HakoError("cannot start an already running container")
    import select
    try:
        fd = posix.open(FIFO, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC, dir_fd=c.dirfd)
    except FileNotFoundError:
        raise HakoError("cannot start an already running container") from None
    data = b""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                chunk = posix.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                continue
            if not data and not c.init_alive():
                break
    finally:
        posix.close(fd)
    posix.unlink(FIFO, dir_fd=c.dirfd)
    if data.startswith(b"E"):
        raise HakoError(data[1:].decode(errors="replace"))
    if data != b"0":
        raise HakoError("cannot start a container that has stopped")
    hooks_cfg = c.state.get("hako", {}).get("hooks")
    if hooks_cfg and hooks_cfg.get("poststart"):
        from runtime import hooks
        hooks.run_warn("poststart", hooks_cfg, hooks.state_for(c.state, c.pid))


# ---------------------------------------------------------------------- state
def state(g: dict, cid: str) -> dict:
    with Container.open(state_root(g), cid, shared=True) as c:
        return c.oci_state()


def list_states(g: dict) -> list[dict]:
    from runtime.state import list_ids
    root = state_root(g)
    out = []
    for cid in list_ids(root):
        try:
            with Container.open(root, cid, lock=False) as c:
                out.append(c.oci_state())
        except HakoError:
            continue
    return out


# ----------------------------------------------------------------------- kill
def kill(g: dict, cid: str, sig: int, all_procs: bool = False) -> None:
    """Signal the init; with --all every process of the container, also once
    the init has exited (containerd's shim kills what an init sharing a pid
    namespace left behind that way, as runc allows): success when nothing is
    left. Without --all a stopped container is an error (its pid may be reused)."""
    with Container.open(state_root(g), cid, shared=True) as c:
        if all_procs:
            _signal_all(c, sig)
            return
        if c.status() == "stopped":
            raise HakoError("container not running")
        try:
            posix.kill(c.pid, sig)
        except ProcessLookupError:
            raise HakoError("container not running") from None
        except PermissionError:
            raise HakoError(f"cannot signal container {cid}: permission denied") from None


def container_pids(c: Container) -> list[int]:
    """Every live process of a container without a cgroup (never the whole
    host pid namespace): runtime/procscan.py says how they are found."""
    from runtime import procscan
    h = c.state.get("hako", {})
    root = h.get("root_mount")
    if root is not None and _joined_mount_namespace(c):
        root = None  # shared with whoever made it: its root mount is not ours alone
    return procscan.members(c.pid, int(h.get("init_start", -1)), alive=c.init_alive(),
                            own_pidns=bool(h.get("pidns")), root=root)


def _joined_mount_namespace(c: Container) -> bool:
    from runtime import fastjson
    try:
        with open(f"{c.dir}/config.json", "rb") as f:
            spec = fastjson.loads(f.read())
    except (OSError, ValueError):
        return True  # unknown: the safe answer
    return any(ns.get("type") == "mount" and ns.get("path")
               for ns in (spec.get("linux") or {}).get("namespaces") or ())


def _signal_all(c: Container, sig: int) -> None:
    """Through the cgroup when the container has one (runc's signalAllProcesses;
    a cgroup already removed holds nothing), else through /proc."""
    from runtime.cgroups.base import signal_pids
    from runtime.cgroups.ops import manager_of
    mgr = manager_of(c.state)
    if mgr is None:
        signal_pids(container_pids(c), sig)
    elif mgr.exists():
        mgr.kill_all(sig)


# --------------------------------------------------------------------- delete
def delete(g: dict, cid: str, force: bool = False) -> None:
    root = state_root(g)
    try:
        c = Container.open(root, cid)
    except ContainerNotExist:
        _remove_stale(root, cid)
        if force:
            return
        raise
    with c:
        status = c.status()
        if status in ("running", "paused") and not force:
            raise HakoError(f"cannot delete container {cid} that is not stopped: {status}")
        if status != "stopped":
            _signal_all(c, 9)
            from runtime.supervise import kill_and_wait
            kill_and_wait(c.pid)
        _destroy(c)


def _remove_stale(root: str, cid: str) -> None:
    """A directory without state.json is left by an interrupted create: its
    creating.json says which cgroup and extensions to take back."""
    from runtime.state import check_id
    check_id(cid)
    path = root + cid if root.endswith("/") else f"{root}/{cid}"
    try:
        posix.stat(f"{path}/state.json")
        return  # a container after all (created meanwhile)
    except FileNotFoundError:
        pass
    except OSError:
        return  # not a directory (or not ours to look into)
    try:
        posix.stat(f"{path}/.")
    except OSError:
        return  # nothing there: the usual `delete --force` of a deleted container
    import os
    try:
        with open(os.path.join(path, CREATING), "rb") as f:
            from runtime import fastjson
            record = fastjson.loads(f.read())
    except (OSError, ValueError):
        record = {}
    if record.get("cgroup"):
        from runtime.cgroups import manager_from_state
        mgr = manager_from_state(record["cgroup"])
        try:
            mgr.kill_all(9)
            mgr.wait_empty(5)
            mgr.destroy()
        except HakoError as e:
            log.warn(str(e))
    # what an interrupted create may have started: an older create recorded no
    # extensions, so every one is asked (each cleanup is safe to repeat)
    from runtime import extensions
    names = record.get("extensions")
    exts = extensions.from_state(extensions.Context(cid, path, record.get("bundle", "")),
                                 names if names is not None else
                                 [e.name for e in extensions.REGISTRY],
                                 record.get("annotations"))
    extensions.cleanup_all(exts)
    for name in os.listdir(path):
        try:
            os.unlink(os.path.join(path, name))
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _destroy(c: Container) -> None:
    """Once the processes are gone: leftovers in the cgroup, the cgroup,
    poststop hooks, the extensions (newest first), the state directory."""
    hako = c.state.get("hako", {})
    mgr = None
    record = hako.get("cgroup")
    if record:
        from runtime.cgroups.quick import remove_empty
        if not remove_empty(record):
            from runtime.cgroups.ops import manager_of
            mgr = manager_of(c.state)
    if mgr is not None:
        try:
            if mgr.pids():              # leftovers (shared pid namespace)
                mgr.kill_all(9)
                mgr.wait_empty(5)
            mgr.destroy()
        except HakoError as e:
            log.warn(str(e))
    elif not record and not hako.get("pidns"):
        # no cgroup and no pid namespace of its own (whose end would have
        # killed them): what the init left behind is found through /proc
        _signal_all(c, 9)
    hooks_cfg = hako.get("hooks")
    if hooks_cfg and hooks_cfg.get("poststop"):
        from runtime import hooks
        hooks.run_warn("poststop", hooks_cfg, hooks.state_for(c.state))
    names = hako.get("extensions")
    annotations = c.state.get("annotations")
    if names or (names is None and annotations):
        from runtime import extensions
        ctx = extensions.Context(c.id, c.dir, c.state.get("bundle", ""))
        extensions.cleanup_all(extensions.from_state(ctx, names, annotations))
    c.remove()


# ------------------------------------------------------------------------ run
def run(g: dict, cid: str, bundle: str, *, pid_file: str | None, console_socket: str | None,
        detach: bool, no_pivot: bool, preserve_fds: int, subreaper: bool = True,
        keep: bool = False, no_new_keyring: bool = False,
        pidfd_socket: str | None = None) -> int:
    from runtime.create import create
    from runtime.supervise import kill_and_wait, wait_forwarding
    c, pid, master = create(g, cid, bundle, pid_file=pid_file, console_socket=console_socket,
                            no_pivot=no_pivot, preserve_fds=preserve_fds, detach=detach,
                            subreaper=subreaper and not detach, verb="run",
                            no_new_keyring=no_new_keyring, pidfd_socket=pidfd_socket)
    with c:
        try:
            _start_locked(c)
        except BaseException:
            kill_and_wait(pid)
            _destroy(c)
            raise
    # the lock is released while we wait: state/kill/delete must work meanwhile
    if detach:
        return 0
    code = wait_forwarding(pid, master)
    if not keep:
        try:
            with Container.open(c.root, cid) as again:
                _destroy(again)
        except HakoError:
            pass  # somebody deleted it already
    return code
