"""Container lifecycle: create, start, run, state, kill, delete, list.

Each public function is one CLI verb's whole behaviour; the command modules
only translate flags. Hot verbs (start/state/kill/delete/list) import the
state store and nothing else; create and run also load the config through
the stdlib validator in spec/.
"""

import os
import time

from runtime import log
from runtime.errors import ContainerNotExist, HakoError
from runtime.state import FIFO, Container, proc_stat, state_root

OCI_VERSION = "1.3.0"
#: in the container's directory while create runs: what to undo if it dies
CREATING = "creating.json"


def _now_rfc3339() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _owner(path: str) -> str:
    import pwd
    uid = os.stat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


# --------------------------------------------------------------------- create
def _check_supported(spec: dict, launch, *, console_socket: str | None, detach: bool,
                     rootless: bool) -> None:
    """Refuse, before anything is made, what hako cannot honour."""
    plan = launch.plan
    linux = spec.get("linux") or {}
    proc = spec.get("process") or {}
    if not proc.get("args"):
        raise HakoError("config.json: process.args: a container needs a process to run")
    if rootless and os.geteuid() != 0 and not plan.has("user"):
        raise HakoError("config.json: linux.namespaces: a rootless container needs a user "
                        'namespace (add {"type": "user"}, or run `hako spec --rootless`)')
    if not plan.has("mount"):
        raise HakoError('config.json: linux.namespaces: hako needs a mount namespace '
                        '(add {"type": "mount"})')
    if (spec.get("hostname") or spec.get("domainname")) and not plan.has("uts"):
        raise HakoError("config.json: hostname: setting a hostname needs a UTS namespace")
    if "user" in plan.new and plan.join.get("user") is None and (
            linux.get("uidMappings") is None) != (linux.get("gidMappings") is None):
        raise HakoError("config.json: linux.uidMappings: give both uidMappings and gidMappings")
    if proc.get("terminal") and not console_socket and detach:
        raise HakoError("process.terminal is true: a detached container needs --console-socket "
                        "to hand the terminal to")
    if console_socket:
        if not proc.get("terminal"):
            raise HakoError("--console-socket given, but process.terminal is false")
        from runtime.terminal import check_socket_path
        check_socket_path(console_socket)
    for key, what in (("intelRdt", "Intel RDT (resctrl) is not supported by hako"),
                      ("netDevices", "moving host network devices into the container is not "
                                     "supported yet"),
                      ("memoryPolicy", "NUMA memory policies are not supported yet")):
        if linux.get(key):
            raise HakoError(f"config.json: linux.{key}: {what}")
    from runtime import security
    try:
        security.check_sysctl(spec)
        security.lsm_check(spec)
        security.check_process_attrs(spec)
    except HakoError as e:
        raise HakoError(f"config.json: {e}") from None


def create(g: dict, cid: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False,
           preserve_fds: int = 0, detach: bool = True, subreaper: bool = False,
           verb: str = "create") -> tuple[Container, int, int]:
    """Returns the locked container, the init's pid and (run in the foreground
    with a terminal) the pty master, once the init waits for start."""
    from runtime import process
    from runtime.channel import Channel
    from runtime.state import check_id, is_rootless
    from spec.config import ConfigError, load_config

    check_id(cid)
    bundle = os.path.abspath(bundle or ".")
    try:
        spec = load_config(bundle)
    except ConfigError as e:
        raise HakoError(f"config.json: {e}") from None
    rootless = is_rootless(g.get("rootless"))
    root = state_root(g)
    net = None  # networking (hooks/network.py), imported only when annotations ask
    if any(k.startswith("io.hako.network") for k in spec.get("annotations") or ()):
        from hooks import network
        net = network.plan(spec, os.path.join(root, cid), bundle)
        if net is not None:
            net.apply(spec)  # its createRuntime/createContainer hooks, resolv.conf mount
    listen = _listen_fds()
    launch = process.Launch(spec, bundle, os.path.join(root, cid), rootless=rootless,
                            no_pivot=no_pivot, preserve_fds=listen + preserve_fds,
                            console_socket=console_socket)
    if listen:
        # socket activation, as runc: the fds come first, the process is told
        # (only the init: exec starts from the saved config without them)
        proc = dict(spec.get("process") or {})
        proc["env"] = list(proc.get("env") or []) + [f"LISTEN_FDS={listen}", "LISTEN_PID=1"]
        launch.spec = {**spec, "process": proc}
    _check_supported(spec, launch, console_socket=console_socket, detach=detach,
                     rootless=rootless)
    rootfs = spec["root"]["path"]
    rootfs = rootfs if os.path.isabs(rootfs) else os.path.join(bundle, rootfs)
    if not os.path.isdir(rootfs):
        raise HakoError(f"config.json: root.path: {rootfs} is not a directory")

    from runtime import cgroups
    cg = cgroups.create_manager(spec, cid, rootless=rootless,
                                systemd=bool(g.get("systemd-cgroup")))
    launch.hook_state = {"ociVersion": spec.get("ociVersion", OCI_VERSION), "id": cid,
                         "bundle": bundle, "annotations": spec.get("annotations") or {}}
    seccomp_cfg = (spec.get("linux") or {}).get("seccomp")
    if seccomp_cfg:
        from runtime import seccomp
        try:
            launch.seccomp = seccomp.prepare(seccomp_cfg, state=launch.hook_state)
        except HakoError as e:
            raise HakoError(f"config.json: {e}") from None
    c = Container.new(root, cid)
    hooks_ran = False
    init_pid = 0
    stage1 = 0
    parent = child = None
    console_parent = None
    master = -1
    try:
        if net is not None:
            net.prepare()
        place_init = False
        if cg is not None:
            # recorded before it exists: if hako dies mid-create, `delete` of the
            # leftover directory still finds the cgroup (see _remove_stale)
            from runtime import fastjson
            with open(os.path.join(c.dir, CREATING), "w") as f:
                f.write(fastjson.dumps({"cgroup": cg.to_state()}))
            cg.create()
            cg.apply((spec.get("linux") or {}).get("resources") or {})
            # The first write to cgroup.procs waits for an RCU grace period (~14 ms
            # here). With a cgroup namespace (its root is fixed at unshare) or
            # hooks (they may look), stage-1 joins before anything else; otherwise
            # the parent moves the init while it sets up its rootfs, and the init's
            # cgroup mount binds the container's cgroups by name (cgroup_dirs).
            if "cgroup" in launch.plan.new or launch.hook_sync:
                launch.cgroup = cg
            else:
                place_init = True
                launch.cgroup_dirs = cg.to_state().get("paths")
        if (spec.get("process") or {}).get("terminal") and not console_socket:
            import socket
            console_parent, console_child = socket.socketpair(
                socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            launch.console_fd = console_child.detach()
        os.mkfifo(FIFO, 0o622, dir_fd=c.dirfd)
        os.chmod(FIFO, 0o622, dir_fd=c.dirfd)
        if subreaper:
            from runtime.syscalls import PR_SET_CHILD_SUBREAPER, SYS
            SYS.prctl(PR_SET_CHILD_SUBREAPER, 1)
        parent, child = Channel.pair()
        launch.fifo_fd = os.open(FIFO, os.O_PATH | os.O_CLOEXEC, dir_fd=c.dirfd)
        stage1 = process.spawn(launch, parent, child, close_in_child=[c.dirfd])
        os.close(launch.fifo_fd)
        child.close()
        if launch.seccomp is not None:
            launch.seccomp.close()  # the init holds the listener connection now
        if launch.console_fd >= 0:
            os.close(launch.console_fd)
        # stage-1 reports the init's pid and the init reports progress on the
        # same pipe, in either order: act on "hooks"/"ready" once the pid is known
        hooks_wanted = ready = False
        while not (ready and init_pid):
            msg = parent.recv()
            if msg is None:
                code = process.wait_child(stage1) if stage1 else 0
                stage1 = 0
                raise HakoError(f"{verb}: the container's init exited before it was ready"
                                f" (status {code})")
            if "map" in msg:
                try:
                    process.map_ids(launch, msg["map"])
                except BaseException:
                    parent.send(error="mapping failed")
                    raise
                parent.send(mapped=True)
            elif "pid" in msg:
                init_pid = int(msg["pid"])
                if place_init:
                    try:
                        cg.enter(init_pid)  # before "go": no user code runs outside it
                    except HakoError as e:
                        # ESRCH: the init failed (e.g. executable not found) and
                        # exited meanwhile; its own error follows on the channel
                        if getattr(e, "errno", 0) != 3:
                            raise
                process.wait_child(stage1)
                stage1 = 0
            elif "error" in msg:
                raise HakoError(f"{verb}: {msg['error']}")
            elif msg.get("hooks"):
                hooks_wanted = True
            elif msg.get("ready"):
                ready = True
            if hooks_wanted and init_pid:
                from runtime import hooks
                hooks_wanted = False
                hooks_ran = True
                st = hooks.state_for(launch.hook_state, "creating", init_pid)
                hooks.run("prestart", launch.hooks, st)
                hooks.run("createRuntime", launch.hooks, st)
                parent.send(hooks_done=True, pid=init_pid)
        st = proc_stat(init_pid)
        c.state = {
            "ociVersion": spec.get("ociVersion", OCI_VERSION),
            "id": cid,
            "pid": init_pid,
            "bundle": bundle,
            "rootfs": rootfs,
            "created": _now_rfc3339(),
            "owner": _owner(c.dir),
            "annotations": spec.get("annotations") or {},
            "hako": {
                "init_start": st[1] if st else -1,
                "rootless": rootless,
                "pidns": "pid" in launch.plan.new,
                # without a cgroup, what finds its processes once the init is gone
                "root_mount": _root_mount(init_pid) if cg is None else None,
                "hooks": launch.hooks,
                "cgroup": cg.to_state() if cg is not None else None,
            },
        }
        c.save()
        if cg is not None:
            os.unlink(CREATING, dir_fd=c.dirfd)
        # exec starts from the container's own process settings
        from runtime import fastjson
        with open(os.path.join(c.dir, "config.json"), "w") as f:
            f.write(fastjson.dumps(spec))
        if console_parent is not None:
            from runtime.terminal import receive_master
            master = receive_master(console_parent, timeout=10)
        if pid_file:
            _write_pid_file(pid_file, init_pid)
        parent.send(go=True)
        return c, init_pid, master
    except BaseException:
        if init_pid:
            _kill_and_wait(init_pid)
        if net is not None:
            net.cleanup()
        if stage1:
            try:
                os.kill(stage1, 9)
            except ProcessLookupError:
                pass
            process.wait_child(stage1)
        if hooks_ran:  # the spec continues the lifecycle at "delete": poststop runs
            from runtime import hooks
            hooks.run_warn("poststop", launch.hooks,
                           hooks.state_for(launch.hook_state, "stopped"))
        if cg is not None:
            try:
                cg.kill_all(9)
                cg.wait_empty(5)
                cg.destroy()
            except HakoError as e:
                log.warn(str(e))
        if (spec.get("annotations") or {}).get("io.hako.rootfs.driver"):
            from runtime.image import drivers  # image rootfs: rw layer, fuse-overlayfs
            drivers.cleanup(c.dir, cid, bundle, spec["annotations"])
        c.remove()
        raise
    finally:
        if parent is not None:
            parent.close()
        if console_parent is not None:
            console_parent.close()


def _listen_fds() -> int:
    """systemd socket activation of create/run: LISTEN_FDS fds from 3 on, when
    LISTEN_PID names us (sd_listen_fds' rule)."""
    n, pid = os.environ.get("LISTEN_FDS", ""), os.environ.get("LISTEN_PID", "")
    if not (n.isdigit() and pid == str(os.getpid())):
        return 0
    return int(n)


def _root_mount(pid: int) -> str | None:
    from runtime.procscan import root_mount
    return root_mount(pid)


def _write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.hako-tmp")
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)
    except OSError as e:
        raise HakoError(f"--pid-file: cannot write {path}: {e.strerror}") from None


def _kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL and wait until the process is gone (or a zombie nobody reaps)."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            wpid, _ = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                return
        except ChildProcessError:
            pass
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            return
        time.sleep(0.002)


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
        fd = os.open(FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=c.dirfd)
    except FileNotFoundError:
        raise HakoError("cannot start an already running container") from None
    data = b""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                continue
            if not data and not c.init_alive():
                break
    finally:
        os.close(fd)
    os.unlink(FIFO, dir_fd=c.dirfd)
    if data.startswith(b"E"):
        raise HakoError(data[1:].decode(errors="replace"))
    if data != b"0":
        raise HakoError("cannot start a container that has stopped")
    hooks_cfg = c.state.get("hako", {}).get("hooks")
    if hooks_cfg and hooks_cfg.get("poststart"):
        from runtime import hooks
        hooks.run_warn("poststart", hooks_cfg, hooks.state_for(c.state, "running", c.pid))


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
            os.kill(c.pid, sig)
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
        with open(os.path.join(c.dir, "config.json"), "rb") as f:
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
            from runtime.cgroups.ops import manager_of
            mgr = manager_of(c.state)
            if mgr is not None:
                mgr.kill_all(9)
            else:
                _signal_all(c, 9)
            _kill_and_wait(c.pid)
        _destroy(c)


def _remove_stale(root: str, cid: str) -> None:
    """A directory without state.json is left by an interrupted create."""
    from runtime.state import check_id
    check_id(cid)
    path = os.path.join(root, cid)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "state.json")):
        if os.path.exists(os.path.join(path, "network.json")):  # hooks/network.py
            from hooks.network import cleanup
            cleanup(path)
        try:
            with open(os.path.join(path, CREATING), "rb") as f:
                from runtime import fastjson
                cgroup = fastjson.loads(f.read()).get("cgroup")
        except (OSError, ValueError):
            cgroup = None
        if cgroup:
            from runtime.cgroups import manager_from_state
            mgr = manager_from_state(cgroup)
            try:
                mgr.kill_all(9)
                mgr.wait_empty(5)
                mgr.destroy()
            except HakoError as e:
                log.warn(str(e))
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
    if any(k.startswith("io.hako.network") for k in c.state.get("annotations") or ()):
        from hooks.network import cleanup  # the network helper, if still there
        cleanup(c.dir)
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
    hooks_cfg = c.state.get("hako", {}).get("hooks")
    if hooks_cfg and hooks_cfg.get("poststop"):
        from runtime import hooks
        hooks.run_warn("poststop", hooks_cfg, hooks.state_for(c.state, "stopped"))
    if (c.state.get("annotations") or {}).get("io.hako.rootfs.driver"):
        from runtime.image import drivers  # image rootfs: rw layer, fuse-overlayfs
        drivers.cleanup(c.dir, c.id, c.state.get("bundle"), c.state["annotations"])
    c.remove()


# ------------------------------------------------------------------------ run
def run(g: dict, cid: str, bundle: str, *, pid_file: str | None, console_socket: str | None,
        detach: bool, no_pivot: bool, preserve_fds: int, subreaper: bool = True,
        keep: bool = False) -> int:
    c, pid, master = create(g, cid, bundle, pid_file=pid_file, console_socket=console_socket,
                    no_pivot=no_pivot, preserve_fds=preserve_fds, detach=detach,
                    subreaper=subreaper and not detach, verb="run")
    with c:
        try:
            _start_locked(c)
        except BaseException:
            _kill_and_wait(pid)
            c.remove()
            raise
    # the lock is released while we wait: state/kill/delete must work meanwhile
    if detach:
        return 0
    code = _wait_forwarding(pid, master)
    if not keep:
        try:
            with Container.open(c.root, cid) as again:
                _destroy(again)
        except HakoError:
            pass  # somebody deleted it already
    return code


def _wait_forwarding(pid: int, master: int = -1) -> int:
    """Wait for the init, forwarding the signals hako gets to it (and, with a
    terminal, bridging it to ours)."""
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in range(1, 32):
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    result: list[int] = []

    def reap(block: bool) -> bool:
        while not result:
            try:
                wpid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                # not our child (no subreaper): poll until it is gone
                while (st := proc_stat(pid)) is not None and st[0] not in ("Z", "X"):
                    time.sleep(0.01)
                result.append(0)
                break
            if wpid == 0:
                return False
            if wpid == pid:
                result.append(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status)
                              else os.WEXITSTATUS(status))
        return True

    if master >= 0:
        from runtime.terminal import bridge
        try:
            bridge(master, lambda: reap(False))
        finally:
            os.close(master)
    reap(True)
    return result[0]
