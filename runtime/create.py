"""``create``: from a bundle to an init waiting for ``start``, as a list of steps.

Each step is one method of ``Creation``; ``Creation.run`` lists them in order.
A step that makes something registers how to take it back; when a later step
fails, what was done is undone newest first, so a failed create leaves no
state directory, process, cgroup, mount or helper behind.

The process model behind ``spawn`` and ``sync`` is in runtime/process.py.
"""

from __future__ import annotations

import os
import time

from runtime import log
from runtime.errors import HakoError
from runtime.state import CREATING, FIFO, Container, proc_stat, state_root

OCI_VERSION = "1.3.0"


class Undo:
    """What a failed create takes back, newest first; never raises."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, object, tuple]] = []

    def push(self, what: str, fn, *args) -> None:
        self._steps.append((what, fn, args))

    def run(self) -> None:
        while self._steps:
            what, fn, args = self._steps.pop()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - an unwind goes on
                log.warn(f"undoing {what}: {e}")


class Creation:
    """One create: the options, then what each step made."""

    def __init__(self, g: dict, cid: str, bundle: str, *, pid_file: str | None,
                 console_socket: str | None, no_pivot: bool, preserve_fds: int,
                 detach: bool, subreaper: bool, verb: str,
                 no_new_keyring: bool = False, pidfd_socket: str | None = None) -> None:
        self.g = g
        self.cid = cid
        self.bundle = os.path.abspath(bundle or ".")
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.pidfd_socket = pidfd_socket
        self.pidfd_conn = None  # connected before anything is made
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.detach = detach
        self.subreaper = subreaper
        self.verb = verb
        self.no_new_keyring = no_new_keyring
        self.undo = Undo()
        self.spec: dict = {}
        self.rootless = False
        self.root = ""
        self.rootfs = ""
        self.extensions: list = []
        self.launch = None
        self.cgroup = None
        self.place_init = False  # the parent moves the init into its cgroup
        self.container: Container | None = None
        self.console_parent = None
        self.parent = None  # our end of the sync channel
        self.stage1 = 0
        self.init_pid = 0
        self.hooks_ran = False
        self.netdevs = None  # runtime.netdevices.Mover, once devices move
        self.recorded = False  # creating.json written
        self.master = -1

    def run(self) -> tuple[Container, int, int]:
        """The steps. Returns the locked container, the init's pid and (run
        in the foreground with a terminal) the pty master."""
        try:
            self.load_config()
            self.plan_extensions()
            self.plan_launch()
            self.check_supported()
            self.connect_pidfd_socket()
            self.plan_cgroup()
            self.prepare_seccomp()
            self.make_state_dir()
            self.record_creating()
            self.prepare_extensions()
            self.make_cgroup()
            self.make_console_pair()
            self.make_fifo()
            self.make_idmapped_mounts()
            self.spawn_init()
            self.sync_until_ready()
            self.record_state()
            self.hand_over()
        except BaseException:
            self.undo.run()
            raise
        finally:
            self.close_channels()
        return self.container, self.init_pid, self.master

    # ------------------------------------------------------------ planning
    def load_config(self) -> None:
        from runtime.state import check_id, is_rootless
        from spec.config import ConfigError, load_config
        check_id(self.cid)
        try:
            self.spec = load_config(self.bundle)
        except ConfigError as e:
            raise HakoError(f"config.json: {e}") from None
        self.rootless = is_rootless(self.g.get("rootless"))
        self.root = state_root(self.g)
        root = self.spec["root"]["path"]
        self.rootfs = root if os.path.isabs(root) else os.path.join(self.bundle, root)

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, self.cid)

    def plan_extensions(self) -> None:
        """Layered storage, networking...: each may add hooks and mounts."""
        from runtime import extensions
        ctx = extensions.Context(self.cid, self.state_dir, self.bundle)
        self.extensions = extensions.plan_all(self.spec, ctx)

    def plan_launch(self) -> None:
        from runtime.launch import Launch
        listen = _listen_fds()
        self.launch = launch = Launch(
            self.spec, self.bundle, self.state_dir, rootless=self.rootless,
            no_pivot=self.no_pivot, preserve_fds=listen + self.preserve_fds,
            console_socket=self.console_socket)
        launch.extensions = self.extensions
        launch.waits = self.verb == "create"
        launch.keyring = None if self.no_new_keyring else "_ses." + self.cid
        if listen:
            # socket activation, as runc: the fds come first, the process is told
            # (only the init: exec starts from the saved config without them)
            proc = dict(self.spec.get("process") or {})
            proc["env"] = list(proc.get("env") or []) + [f"LISTEN_FDS={listen}", "LISTEN_PID=1"]
            launch.spec = {**self.spec, "process": proc}
        launch.hook_state = {"ociVersion": self.spec.get("ociVersion", OCI_VERSION),
                             "id": self.cid, "bundle": self.bundle,
                             "annotations": self.spec.get("annotations") or {}}
        if (self.spec.get("linux") or {}).get("netDevices"):
            launch.hook_sync = True  # the init stops in its namespaces: devices move then

    def check_supported(self) -> None:
        from runtime.checks import check_supported
        check_supported(self.spec, self.launch, console_socket=self.console_socket,
                        detach=self.detach, rootless=self.rootless)
        if not os.path.isdir(self.rootfs):
            raise HakoError(f"config.json: root.path: {self.rootfs} is not a directory")

    def connect_pidfd_socket(self) -> None:
        if self.pidfd_socket:
            from runtime.pidfd_socket import connect
            self.pidfd_conn = connect(self.pidfd_socket)

    def plan_cgroup(self) -> None:
        from runtime import cgroups
        self.cgroup = cgroups.create_manager(self.spec, self.cid, rootless=self.rootless,
                                             systemd=bool(self.g.get("systemd-cgroup")))

    def prepare_seccomp(self) -> None:
        """Compiled in the parent (libseccomp), loaded raw by the init."""
        cfg = (self.spec.get("linux") or {}).get("seccomp")
        if not cfg:
            return
        from runtime import seccomp
        try:
            self.launch.seccomp = seccomp.prepare(cfg, state=self.launch.hook_state)
        except HakoError as e:
            raise HakoError(f"config.json: {e}") from None

    # -------------------------------------------------------------- making
    def make_state_dir(self) -> None:
        self.container = c = Container.new(self.root, self.cid)
        self.undo.push("the state directory", c.remove)

    def record_creating(self) -> None:
        """What `delete` of the leftover directory must take back if hako dies
        before state.json exists: the cgroup (recorded before it is made) and
        the extensions. Nothing to write for a plain rootless container."""
        if self.cgroup is None and not self.extensions:
            return
        from runtime import fastjson
        with open(os.path.join(self.container.dir, CREATING), "w") as f:
            f.write(fastjson.dumps({
                "cgroup": self.cgroup.to_state() if self.cgroup is not None else None,
                "extensions": [e.name for e in self.extensions],
                "annotations": self.spec.get("annotations") or {},
                "bundle": self.bundle}))
        self.recorded = True

    def prepare_extensions(self) -> None:
        from runtime.extensions import cleanup_all
        # registered first: an extension whose prepare fails half-way is cleaned too
        self.undo.push("extensions", cleanup_all, self.extensions)
        for ext in self.extensions:
            ext.prepare()

    def make_cgroup(self) -> None:
        cg = self.cgroup
        if cg is None:
            return
        self.undo.push("the cgroup", _destroy_cgroup, cg)
        cg.create()
        cg.apply((self.spec.get("linux") or {}).get("resources") or {})
        # A write to cgroup.procs waits for an RCU grace period (5-25 ms here)
        # after a quiet spell. A cgroupfs cgroup is joined by the first child
        # as it is born, which waits for none (quick.Joiner). The systemd
        # driver's cgroup: with a cgroup namespace (its root is fixed at
        # unshare) or hooks (they may look), stage-1 joins before anything
        # else; otherwise the parent moves the init while it sets up its
        # rootfs, and the init's cgroup mount binds the container's cgroups
        # by name (cgroup_dirs).
        from runtime.cgroups.quick import Joiner
        record = cg.to_state()
        self.launch.cgroup_joiner = Joiner.from_record(record)
        if self.launch.cgroup_joiner is not None:
            if "cgroup" not in self.launch.plan.new:
                self.launch.cgroup_dirs = record.get("paths")
            return
        if "cgroup" in self.launch.plan.new or self.launch.hook_sync:
            self.launch.cgroup = cg
        else:
            self.place_init = True
            self.launch.cgroup_dirs = cg.to_state().get("paths")

    def make_console_pair(self) -> None:
        """run in the foreground with a terminal: the init sends the pty here."""
        if not (self.spec.get("process") or {}).get("terminal") or self.console_socket:
            return
        import socket
        self.console_parent, child = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.launch.console_fd = child.detach()

    def make_fifo(self) -> None:
        c = self.container
        os.mkfifo(FIFO, 0o622, dir_fd=c.dirfd)
        os.chmod(FIFO, 0o622, dir_fd=c.dirfd)
        # the init holds the fifo itself (never its directory: see runtime/init.py)
        self.launch.fifo_fd = os.open(FIFO, os.O_PATH | os.O_CLOEXEC, dir_fd=c.dirfd)
        self.launch.state_fd = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def make_idmapped_mounts(self) -> None:
        """Idmapped bind mounts are made here, where their host IDs mean what
        they say; the init moves them into place (runtime/idmapped.py)."""
        if self.launch.idmap_wanted:
            from runtime import idmapped
            from runtime.syscalls import SYS
            try:
                self.launch.idmapped = idmapped.prepare(self.spec, self.launch, SYS)
            except HakoError as e:
                raise HakoError(f"config.json: {e}") from None
            self.undo.push("idmapped mounts", self._close_idmapped)

    def _close_idmapped(self) -> None:
        for fd in self.launch.idmapped.values():
            os.close(fd)
        self.launch.idmapped = {}

    def spawn_init(self) -> None:
        from runtime import process
        from runtime.channel import Channel
        launch = self.launch
        if self.subreaper:
            from runtime.syscalls import PR_SET_CHILD_SUBREAPER, SYS
            SYS.prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.parent, child = Channel.pair()
        theirs = [self.container.dirfd]
        if self.pidfd_conn is not None:
            theirs.append(self.pidfd_conn.fileno())
        try:
            self.stage1, pid = process.spawn(launch, self.parent, child,
                                             close_in_child=theirs,
                                             reaped=self.detach or self.subreaper)
        finally:
            os.close(launch.fifo_fd)
            os.close(launch.state_fd)
            self._close_idmapped()  # the init holds them
            child.close()
            if launch.console_fd >= 0:
                os.close(launch.console_fd)
        self.undo.push("the container's processes", self._stop_processes)
        if launch.seccomp is not None:
            launch.seccomp.close()  # the init holds the listener connection now
        if pid:
            self._init_started(pid)  # forked by us: no stage-1 to report it

    def _stop_processes(self) -> None:
        """The init (and whatever it started), stage-1; then poststop, since
        the spec continues a lifecycle whose runtime hooks ran at "delete"."""
        from runtime.process import wait_child
        from runtime.supervise import kill_and_wait
        if self.init_pid:
            kill_and_wait(self.init_pid)
            if self.cgroup is not None:
                self.cgroup.kill_all(9)
        if self.stage1:
            try:
                os.kill(self.stage1, 9)
            except ProcessLookupError:
                pass
            wait_child(self.stage1)
            self.stage1 = 0
        if self.hooks_ran:
            from runtime import hooks
            launch = self.launch
            hooks.run_warn("poststop", launch.hooks, hooks.state_for(launch.hook_state))

    def sync_until_ready(self) -> None:
        """Stage-1 reports the init's pid and the init reports progress on the
        same pipe, in either order: act on "hooks"/"ready" once the pid is known."""
        from runtime import process
        hooks_wanted = ready = False
        while not (ready and self.init_pid):
            msg = self.parent.recv()
            if msg is None:
                code = process.wait_child(self.stage1) if self.stage1 else 0
                self.stage1 = 0
                raise HakoError(f"{self.verb}: the container's init exited before it was "
                                f"ready (status {code})")
            if "map" in msg:
                self._map_ids(msg["map"])
            elif "pid" in msg:
                self._init_started(int(msg["pid"]))
            elif "error" in msg:
                raise HakoError(f"{self.verb}: {msg['error']}")
            elif msg.get("hooks"):
                hooks_wanted = True
            elif msg.get("ready"):
                ready = True
            if hooks_wanted and self.init_pid:
                hooks_wanted = False
                self._move_net_devices()
                self._run_runtime_hooks()

    def _map_ids(self, pid: int) -> None:
        from runtime import process
        try:
            process.map_ids(self.launch, pid)
        except BaseException:
            self.parent.send(error="mapping failed")
            raise
        self.parent.send(mapped=True)

    def _init_started(self, pid: int) -> None:
        from runtime import process
        self.init_pid = pid
        if self.place_init:
            try:
                self.cgroup.enter(pid)  # before "go": no user code runs outside it
            except HakoError as e:
                # ESRCH: the init failed (e.g. executable not found) and
                # exited meanwhile; its own error follows on the channel
                if getattr(e, "errno", 0) != 3:
                    raise
        if self.stage1:
            process.wait_child(self.stage1)
            self.stage1 = 0
        self._prepare_state()

    def _move_net_devices(self) -> None:
        """linux.netDevices, before any hook (runtime/netdevices.py)."""
        if not (self.spec.get("linux") or {}).get("netDevices"):
            return
        from runtime.netdevices import Mover
        self.netdevs = Mover(self.spec, self.init_pid)
        self.undo.push("network devices", self.netdevs.undo)
        self.netdevs.move_all()

    def _run_runtime_hooks(self) -> None:
        """prestart and createRuntime, in the runtime's namespace, while the
        init waits before pivot_root; createContainer follows in the init."""
        from runtime import hooks
        launch = self.launch
        self.hooks_ran = True
        st = hooks.state_for(launch.hook_state, self.init_pid)
        hooks.run("prestart", launch.hooks, st)
        hooks.run("createRuntime", launch.hooks, st)
        self.parent.send(hooks_done=True, pid=self.init_pid)

    def _prepare_state(self) -> None:
        """What record_state writes, but for the root mount, made while the init
        sets itself up; and the config exec starts from, written now (a failed
        create removes the directory with it)."""
        from runtime import fastjson
        c = self.container
        st = proc_stat(self.init_pid)
        spec = self.spec
        c.state = {
            "ociVersion": spec.get("ociVersion", OCI_VERSION),
            "id": self.cid,
            "pid": self.init_pid,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": _now_rfc3339(),
            "owner": _owner(c.dir),
            "annotations": spec.get("annotations") or {},
            "hako": {
                "init_start": st[1] if st else -1,
                "rootless": self.rootless,
                "pidns": "pid" in self.launch.plan.new,
                # without a cgroup, what finds its processes once the init is gone
                "root_mount": None,  # record_state: the init's, once it is ready
                "hooks": self.launch.hooks,
                "cgroup": self.cgroup.to_state() if self.cgroup is not None else None,
                "extensions": [e.name for e in self.extensions],
                # exec joins "_ses.<id>" too, unless create had --no-new-keyring
                "no_new_keyring": self.no_new_keyring,
            },
        }
        with open(os.path.join(c.dir, "config.json"), "w") as f:
            f.write(fastjson.dumps(spec))

    def record_state(self) -> None:
        """state.json: what every other verb reads."""
        c = self.container
        if self.cgroup is None and "mount" in self.launch.plan.new:
            c.state["hako"]["root_mount"] = _root_mount(self.init_pid)
        c.save()
        if self.recorded:
            os.unlink(CREATING, dir_fd=c.dirfd)

    def hand_over(self) -> None:
        """The pty to a foreground run, the pid file and the pidfd to the
        engine, then "go": the init opens exec.fifo and waits for start."""
        if self.console_parent is not None:
            from runtime.terminal import receive_master
            self.master = receive_master(self.console_parent, timeout=10)
        if self.pid_file:
            from runtime.supervise import write_pid_file
            write_pid_file(self.pid_file, self.init_pid)
        if self.pidfd_conn is not None:
            from runtime.pidfd_socket import INIT, send
            conn, self.pidfd_conn = self.pidfd_conn, None
            send(conn, self.init_pid, INIT)
        self.parent.send(go=True)
        if self.launch.waits:
            # until the init is settled in its wait (runtime/residency.py); if
            # it died instead, the container is simply stopped
            self.parent.recv()

    def close_channels(self) -> None:
        if self.netdevs is not None:
            self.netdevs.close()
        if self.parent is not None:
            self.parent.close()
        if self.console_parent is not None:
            self.console_parent.close()
        if self.pidfd_conn is not None:
            self.pidfd_conn.close()


def create(g: dict, cid: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False,
           preserve_fds: int = 0, detach: bool = True, subreaper: bool = False,
           verb: str = "create", no_new_keyring: bool = False,
           pidfd_socket: str | None = None) -> tuple[Container, int, int]:
    """Returns the locked container, the init's pid and (run in the foreground
    with a terminal) the pty master, once the init waits for start."""
    return Creation(g, cid, bundle, pid_file=pid_file, console_socket=console_socket,
                    no_pivot=no_pivot, preserve_fds=preserve_fds, detach=detach,
                    subreaper=subreaper, verb=verb, no_new_keyring=no_new_keyring,
                    pidfd_socket=pidfd_socket).run()


def _destroy_cgroup(cg) -> None:
    cg.kill_all(9)
    cg.wait_empty(5)
    cg.destroy()


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
