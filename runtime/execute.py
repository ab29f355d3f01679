"""``hako exec``: run another process inside a running container.

    hako exec (stays in the caller's namespaces; waits, forwards signals)
      +-- fork -> joiner: setns(user) first (it grants the rights the others
      |           need), then pid, ipc/uts/net/cgroup/time, and mount last
      |           (after it "/" and cwd are the container's)
      |           +-- fork -> the process, in the container's pid namespace:
      |                       pty, identity, capabilities, then execve
      <---------- "pid N" (joiner exits), then "ready" / "error"

setns(CLONE_NEWPID) needs CAP_SYS_ADMIN in the caller's own user namespace
too, so a rootless hako cannot do it from the parent: the joiner enters the
user namespace first. In the foreground hako is a subreaper, so the
process is reparented to it when the joiner exits and waitpid gives its status.

As root, in a container without a user namespace of its own, there is no
joiner: hako enters the container's pid namespace for the one fork (it only
decides where children go) and goes back; the process joins the other
namespaces itself.

The first child (the joiner, or the process) joins the container's cgroup as
it is born (runtime/cgroups/quick.Joiner), without the RCU grace period a
write to cgroup.procs waits for. Under the systemd driver hako moves it
(the joiner itself, or hako while the process sets up, telling it "placed"
before it may exec).
"""

from __future__ import annotations

import os
import select

from runtime import fastjson, security
from runtime import syscalls as S
from runtime.channel import Channel
from runtime.errors import HakoError, error_text
from runtime.process import fork_and_return, fork_child, own_pidns
from runtime.procsetup import become, close_inherited, exec_process, join_keyring, set_oom_score
from runtime.state import Container, state_root

# Everything the forked child uses is imported above: after it joins the
# container's mount namespace the host's sys.path no longer resolves.

# /proc/<pid>/ns names, in join order after "user" (mount last: it changes
# what every later path means)
NS_FILES = [("ipc", "ipc"), ("uts", "uts"), ("network", "net"), ("cgroup", "cgroup"),
            ("time", "time"), ("mount", "mnt")]


def load_process_file(path: str) -> dict:
    from spec.config import ConfigError, _check_process, parse_json
    from spec.validate import first_error, load_schema
    try:
        with open(path, "rb") as f:
            proc = parse_json(f.read())
    except OSError as e:
        raise HakoError(f"--process {path}: {e.strerror}") from None
    except ConfigError as e:
        raise HakoError(f"--process {path}: {e}") from None
    defs = load_schema("config.schema.json")["$defs"]
    err = first_error(proc, {"$ref": "#/$defs/Process", "$defs": defs})
    if err:
        where = f"process.{err[0]}" if err[0] else "process"
        raise HakoError(f"--process {path}: {where}: {err[1]}")
    try:
        _check_process(proc)
    except ConfigError as e:
        raise HakoError(f"--process {path}: {e}") from None
    return proc


def process_from_flags(base: dict, opts: dict, args: list[str]) -> dict:
    """runc's exec: the container's own process, overridden by the flags."""
    proc = fastjson.loads(fastjson.dumps(base))  # deep copy
    if not args:
        raise HakoError("exec: a command is required (or --process FILE)", 2)
    proc["args"] = args
    proc["terminal"] = bool(opts.get("tty"))
    proc.pop("consoleSize", None)
    if opts.get("cwd"):
        proc["cwd"] = opts["cwd"]
    env = list(proc.get("env") or [])
    for kv in opts.get("env", []):
        if "=" not in kv:
            raise HakoError(f"--env {kv!r}: expected KEY=value", 2)
        key = kv.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [kv]
    proc["env"] = env
    if opts.get("user"):
        uid_s, _, gid_s = opts["user"].partition(":")
        try:
            user = {"uid": int(uid_s), "gid": int(gid_s) if gid_s else 0}
        except ValueError:
            raise HakoError(f"--user {opts['user']!r}: expected UID[:GID] as numbers", 2) from None
        proc["user"] = user
    if opts.get("additional-gids"):
        try:
            proc.setdefault("user", {})["additionalGids"] = [int(g) for g in opts["additional-gids"]]
        except ValueError:
            raise HakoError("--additional-gids: expected numbers", 2) from None
    if opts.get("cap"):
        caps = proc.setdefault("capabilities", {})
        for c in opts["cap"]:
            name = c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
            for s in ("bounding", "effective", "permitted"):
                if name not in caps.setdefault(s, []):
                    caps[s].append(name)
    if opts.get("no-new-privs"):
        proc["noNewPrivileges"] = True
    if opts.get("apparmor"):
        proc["apparmorProfile"] = opts["apparmor"]
    if opts.get("process-label"):
        proc["selinuxLabel"] = opts["process-label"]
    return proc


def exec_in(g: dict, cid: str, proc: dict | None, opts: dict, args: list[str]) -> int:
    root = state_root(g)
    with Container.open(root, cid, shared=True) as c:
        status = c.status()
        if status == "stopped":
            raise HakoError("cannot exec in a stopped container")
        if status == "paused" and not opts.get("ignore-paused"):
            raise HakoError("cannot exec in a paused container (use --ignore-paused)")
        state = c.state
        init_pid = c.pid
        from runtime.cgroups.quick import Joiner, joiner
        if opts.get("cgroup"):  # a sub-cgroup (runc's exec --cgroup)
            from runtime.cgroups import subcgroup
            cgroup = subcgroup.joiner_for((state.get("hako") or {}).get("cgroup"),
                                          subcgroup.parse(opts["cgroup"]))
        else:
            cgroup = joiner(state)
        born = cgroup if isinstance(cgroup, Joiner) else None  # joins at fork
        try:
            with open(os.path.join(c.dir, "config.json"), "rb") as f:
                spec = fastjson.loads(f.read())
        except OSError as e:
            raise HakoError(f"container {cid}: its saved config is unreadable: {e.strerror}") from None
    if proc is None:
        proc = process_from_flags(spec.get("process") or {}, opts, args)
    else:
        if opts.get("tty"):
            proc["terminal"] = True
    detach = bool(opts.get("detach"))
    console_socket = opts.get("console-socket")
    # the session keyring to join first, as runc's exec: None when the
    # container was created with --no-new-keyring
    keyring = None if state.get("hako", {}).get("no_new_keyring") else "_ses." + cid
    pspec = {"process": proc, "linux": spec.get("linux") or {}, "keyring": keyring}
    security.lsm_check(pspec)
    security.check_process_attrs(pspec)
    filt = None
    if (spec.get("linux") or {}).get("seccomp"):
        from runtime import seccomp
        filt = seccomp.prepare(spec["linux"]["seccomp"],
                               state={"ociVersion": state.get("ociVersion", "1.3.0"), "id": cid,
                                      "bundle": state.get("bundle", ""),
                                      "annotations": state.get("annotations") or {}})
    if proc.get("terminal") and detach and not console_socket:
        raise HakoError("exec: --tty with --detach needs --console-socket")
    if console_socket:
        if not proc.get("terminal"):
            raise HakoError("--console-socket given, but the process has no terminal (--tty)")
        from runtime.terminal import check_socket_path
        check_socket_path(console_socket)
    pidfd_conn = None  # connected now: a bad path fails before anything starts
    if opts.get("pidfd-socket"):
        from runtime.pidfd_socket import connect
        pidfd_conn = connect(opts["pidfd-socket"])
    from runtime.capabilities import CapPlan
    caps = CapPlan(proc["capabilities"]) if proc.get("capabilities") is not None else None
    preserve = int(opts.get("preserve-fds") or 0)

    # open every namespace of the init now, before anything changes
    own_userns = any(n.get("type") == "user" for n in
                     (spec.get("linux") or {}).get("namespaces") or [])
    direct = os.geteuid() == 0 and not own_userns  # see the module's docstring
    pid = 0
    ns_fds: list[tuple[str, int, int]] = []  # (name, fd, flag)
    from runtime.namespaces import FLAGS
    try:
        wanted = ([("user", "user")] if own_userns else []) + NS_FILES + [("pid", "pid")]
        for t, name in wanted:
            path = f"/proc/{init_pid}/ns/{name}"
            try:
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue  # shared with us: nothing to join
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # kernel without this namespace type
            except PermissionError:
                if status == "created":
                    # the waiting init is non-dumpable (CVE-2019-5736) and its memory
                    # still belongs to the host's user namespace: only root may enter
                    raise HakoError("cannot exec in a created container without root: "
                                    "start it first") from None
                raise HakoError(f"exec: cannot open {path}: permission denied") from None
            except OSError as e:
                raise HakoError(f"exec: cannot open {path}: {e.strerror}") from None
            ns_fds.append((t, fd, FLAGS[t]))
        console_parent = None
        console_sock = None
        if proc.get("terminal"):
            import socket
            from runtime import terminal  # noqa: F401  (imported before fork on purpose)
            if console_socket:
                console_sock = terminal.connect(console_socket)
            else:
                console_parent, console_sock = socket.socketpair(
                    socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        if not detach:
            S.SYS.prctl(S.PR_SET_CHILD_SUBREAPER, 1)  # the process comes back to us
        parent, child = Channel.pair()
        # detached: the process execs once hako has exited (see _become_and_exec)
        waitfd = os.pidfd_open(os.getpid()) if detach else -1
        def joiner_body() -> None:
            parent.close()
            if console_parent is not None:
                console_parent.close()
            _join_and_fork(pspec, caps, ns_fds, console_sock, preserve, child, filt,
                           None if born is not None else cgroup, waitfd)
        joiner = 0
        if direct:
            pid = _fork_direct(pspec, caps, ns_fds, console_sock, preserve, child, filt,
                               waitfd, (parent, console_parent), cgroup)
            direct = pid > 0
        if not direct:
            joiner = fork_child(child, joiner_body, cgroup=born)
        if waitfd >= 0:
            os.close(waitfd)
    finally:
        for _, fd, _ in ns_fds:
            os.close(fd)
    child.close()
    if console_sock is not None:
        console_sock.close()
    if direct and cgroup is not None and born is None:
        _place(cgroup, pid, parent)
    # the joiner sends "pid", the process "ready": two writers, either order
    ready = False
    msg: dict | None = {}
    while not (pid and ready):
        msg = parent.recv()
        if msg is None or "error" in msg:
            break
        if "pid" in msg:
            pid = int(msg["pid"])
            os.waitpid(joiner, 0)
            joiner = 0
        if msg.get("ready"):
            ready = True
    parent.close()
    if joiner:
        os.waitpid(joiner, 0)
    if msg is None or "error" in msg:
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        raise HakoError(f"exec failed: {msg['error'] if msg else 'the process died'}")
    master = -1
    if console_parent is not None:
        from runtime.terminal import receive_master
        master = receive_master(console_parent, timeout=10)
        console_parent.close()
    if opts.get("pid-file"):
        from runtime.supervise import write_pid_file
        write_pid_file(opts["pid-file"], pid)
    if pidfd_conn is not None:
        from runtime.pidfd_socket import EXEC, send
        try:
            send(pidfd_conn, pid, EXEC)
        except HakoError:
            from runtime.supervise import kill_and_wait
            kill_and_wait(pid)  # a process its engine cannot track must not run
            raise
    if detach:
        return 0
    from runtime.supervise import wait_forwarding
    return wait_forwarding(pid, master)


def _fork_direct(pspec: dict, caps, ns_fds: list[tuple[str, int, int]], console,
                 preserve: int, chan: Channel, filt, waitfd: int, ours: tuple,
                 cgroup) -> int:
    """Fork the process from hako itself (root, no user namespace to join):
    setns(pid) decides only where our children go, and is undone right after.
    0 when we could not go back (see process.own_pidns): the joiner does it.
    A quick.Joiner ``cgroup`` is joined at birth; any other is hako's to
    enter while the process waits for "placed" (_place)."""
    from runtime.cgroups.quick import Joiner
    born = isinstance(cgroup, Joiner)
    sc = S.SYS
    own = -1
    pidns = [fd for t, fd, _ in ns_fds if t == "pid"]
    if pidns:
        own = own_pidns()
        if own < 0:
            return 0
        try:
            sc.setns(pidns[0], S.CLONE_NEWPID, "pid namespace of the container")
        except OSError as e:
            os.close(own)
            raise HakoError(f"exec failed: {error_text(e)}") from None

    def body() -> None:
        for ch in ours:
            if ch is not None:
                ch.close()
        set_oom_score(pspec["process"])
        sc.prctl(S.PR_SET_DUMPABLE, 0)  # see runtime/init.py: CVE-2019-5736
        for t, fd, flag in ns_fds:
            if t != "pid":
                sc.setns(fd, flag, f"{t} namespace of the container")
        _become_and_exec(pspec, caps, console, preserve, chan, filt, waitfd,
                         placed=cgroup is not None and not born)

    return fork_and_return(own, chan, body, cgroup=cgroup if born else None)


def _place(cgroup, pid: int, parent: Channel) -> None:
    """Move the process into the container's cgroup, then let it exec. If it
    died meanwhile (ESRCH), its own error follows on the channel."""
    if cgroup is not None:
        try:
            cgroup.enter(pid)
        except HakoError as e:
            if getattr(e, "errno", 0) != 3:
                parent.close()  # it leaves at EOF instead of exec'ing
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                raise
    parent.send(placed=True)


def _join_and_fork(pspec: dict, caps, ns_fds: list[tuple[str, int, int]], console,
                   preserve: int, chan: Channel, filt, cgroup=None, waitfd: int = -1) -> None:
    """In the first child: join (user first, so that the others are allowed),
    then fork the process itself, which lands in the container's pid namespace."""
    sc = S.SYS
    set_oom_score(pspec["process"])
    sc.prctl(S.PR_SET_DUMPABLE, 0)  # see runtime/init.py: CVE-2019-5736
    if cgroup is not None:
        cgroup.enter(os.getpid())  # before setns(user/cgroup): the process inherits it
    for t, fd, flag in ns_fds:
        if t == "user":
            sc.setns(fd, flag, "user namespace of the container")
            try:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            except OSError:
                pass
    for t, fd, flag in ns_fds:
        if t == "pid":
            sc.setns(fd, flag, "pid namespace of the container")
    for t, fd, flag in ns_fds:
        if t not in ("user", "pid"):
            sc.setns(fd, flag, f"{t} namespace of the container")
    pid = fork_child(chan, _become_and_exec, pspec, caps, console, preserve, chan, filt, waitfd)
    chan.send(pid=pid)


def _become_and_exec(pspec: dict, caps, console, preserve: int, chan: Channel, filt,
                     waitfd: int = -1, placed: bool = False) -> None:
    """``placed``: wait until hako has moved us into the cgroup (_place)."""
    sc = S.SYS
    proc = pspec["process"]
    # the container's "_ses.<id>" (the init's, when it may search it; else a
    # new one): first, before the user switch and seccomp
    join_keyring(pspec.get("keyring"), sc)
    # nothing of the caller's beyond stdio and --preserve-fds may be open when
    # we chdir into the container (CVE-2024-21626: /proc/self/fd/N as cwd)
    close_inherited(chan, console, filt, preserve, sc, extra=(waitfd,))
    security.apply_initial_affinity(pspec, sc)
    if console is not None:
        from runtime import terminal
        os.setsid()
        user = proc.get("user") or {}
        terminal.setup_pty(console, proc.get("consoleSize"), int(user.get("uid", 0)),
                           int(user.get("gid", 0)), mount_console=False)
    security.apply_process_attrs(pspec, sc)
    nnp = bool(proc.get("noNewPrivileges"))
    if filt is not None and not nnp:
        filt.install(sc=sc)
    exe, args, env = become(proc, caps, sc)
    security.lsm_apply(pspec)
    if filt is not None and nnp:
        filt.install(sc=sc)
    if placed:
        msg = chan.recv()
        if msg is None or not msg.get("placed"):
            os._exit(1)  # hako failed or died: leave quietly
    chan.send(ready=True)
    chan.close()
    if waitfd >= 0:
        # Detached, an engine (conmon, containerd's shim) is our subreaper and
        # learns our pid from --pid-file once hako has exited; an exit of ours
        # it reaps before that can be lost (containerd 1.6's shim then never
        # reports the exec's exit). So exec only once hako is gone: its pidfd
        # turns readable when it has exited.
        select.select([waitfd], [], [])
        os.close(waitfd)
    exec_process(exe, args, env, preserve, sc)
