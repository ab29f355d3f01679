"""The container's init: prepare everything, report, wait for start, execve.

Runs as pid 1 of the new pid namespace (when there is one), inside every
namespace of the container. Each step that can fail does so *before*
"ready" is sent, so that ``create`` fails with the reason instead of
``start`` succeeding on a process that dies at once.
"""

from __future__ import annotations

import _signal as signal  # the C module: "signal" imports enum (~4 ms)
import os

# Everything the init needs is imported here, at the top: after pivot_root
# the host's sys.path is gone and a lazy import would fail.
from runtime import security
from runtime import syscalls as S
from runtime.channel import Channel
from runtime.errors import HakoError
from runtime.procsetup import (
    KEY_OTH_SEARCH, KEY_USR_SEARCH, become, close_inherited, exec_process, join_keyring,
    make_cwd, set_oom_score, write_file,
)
from runtime.launch import Launch
from runtime.residency import drop_clean_pages, safe_under
from runtime.rootfs import finalize_rootfs, setup_rootfs

def container_init(launch: Launch, chan: Channel) -> None:
    spec = launch.spec
    plan = launch.plan
    proc = spec.get("process") or {}
    sc = S.SYS
    os.setsid()
    # CVE-2019-5736: until execve, this process is hako (the interpreter) living
    # in the container's pid namespace; non-dumpable, its /proc/PID/exe cannot
    # be opened from the container without CAP_SYS_PTRACE. execve resets it.
    set_oom_score(proc)
    sc.prctl(S.PR_SET_DUMPABLE, 0)
    # a session keyring of the container's own, as runc's init: first, inside
    # the namespaces and as their root (it owns the keyring), before hooks,
    # rootfs, the user switch and seccomp. Made searchable by runc's rule:
    # by its owner's uid, by others in a user namespace.
    join_keyring(launch.keyring, sc,
                 KEY_OTH_SEARCH if plan.has("user") else KEY_USR_SEARCH)
    security.apply_initial_affinity(spec, sc)
    # the host pid, while the host's /proc is still there (seccomp listeners
    # and hooks are told it)
    host_pid = int(os.readlink("/proc/self"))
    # an O_PATH handle on exec.fifo itself, reopened through /proc/self/fd
    # after "go"; the state directory's handle only where no procfs in the
    # container shows our fds (see _fifo_opener)
    fifo_fd = launch.fifo_fd

    if "network" in plan.new:
        _loopback_up()
    console = None
    if proc.get("terminal"):
        import socket

        from runtime import terminal  # before pivot_root, like every import here
        console = (socket.socket(fileno=launch.console_fd) if launch.console_fd >= 0
                   else terminal.connect(launch.console_socket))
    run_hooks = None
    if launch.hook_sync:
        from runtime import hooks as run_hooks  # now: nothing imports after pivot_root
    # the state dir's handle only until _fifo_opener decides it is not needed
    close_inherited(chan, console, launch.seccomp, launch.preserve_fds, sc,
                    extra=(launch.fifo_fd, launch.state_fd, *launch.idmapped.values()))

    def before_pivot() -> None:
        """The parent runs prestart/createRuntime hooks now; then createContainer."""
        nonlocal host_pid
        if run_hooks is None:
            return
        chan.send(hooks=True)
        msg = chan.recv()
        if msg is None or "error" in msg:
            os._exit(1)
        host_pid = int(msg["pid"])
        run_hooks.run("createContainer", launch.hooks,
                      run_hooks.state_for(launch.hook_state, host_pid))

    # lifecycle extensions (runtime/extensions.py), e.g. the layers of a bundle
    # made by `hako bundle --image`, mounted on the rootfs in our namespaces
    # before setup_rootfs binds the rootfs onto itself
    for ext in launch.extensions:
        ext.in_init(spec)
    setup_rootfs(spec, launch.bundle, rootless=launch.rootless,
                 new_userns="user" in plan.new, new_netns="network" in plan.new,
                 new_cgroupns="cgroup" in plan.new, no_pivot=launch.no_pivot, sc=sc,
                 before_pivot=before_pivot, cgroup_dirs=launch.cgroup_dirs,
                 idmapped=launch.idmapped)
    for fd in launch.idmapped.values():
        os.close(fd)  # attached now
    # the cwd is made (as runc does) before root.readonly takes effect
    make_cwd(proc.get("cwd") or "/")
    if spec.get("hostname"):
        sc.sethostname(spec["hostname"])
    if spec.get("domainname"):
        sc.setdomainname(spec["domainname"])
    _sysctl(spec.get("linux", {}).get("sysctl") or {})
    if console is not None:
        user = proc.get("user") or {}
        terminal.setup_pty(console, proc.get("consoleSize"), int(user.get("uid", 0)),
                           int(user.get("gid", 0)), mount_console=True)
    finalize_rootfs(spec, sc=sc)

    security.apply_process_attrs(spec, sc)
    nnp = bool(proc.get("noNewPrivileges"))
    # what stays resident while the init waits for `start`: its own memory only
    # (runtime/residency.py), dropped as the last thing before it blocks; not
    # for `run` (no wait: it would only fault back in), nor where the user's
    # seccomp filter, loaded by then, might kill it for it
    drop = launch.waits and (launch.seccomp is None or nnp or safe_under(
        (spec.get("linux") or {}).get("seccomp")))
    if launch.seccomp is not None and not nnp:
        # without no_new_privs loading needs CAP_SYS_ADMIN: before caps are dropped
        launch.seccomp.install(pid=host_pid, sc=sc)
    open_fifo = _fifo_opener(fifo_fd, launch)
    exe, args, env = become(proc, launch.caps, sc)
    chan.send(ready=True)
    msg = chan.recv()
    if msg is None or not msg.get("go"):
        os._exit(1)  # the parent failed or died: leave quietly

    # a created container may be killed while it waits: die on the usual
    # termination signals like runc's init does (pid 1 ignores unhandled ones)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda s, f: os._exit(128 + s))
    if drop:
        drop_clean_pages(sc)
    if launch.waits:
        chan.send(idle=True)  # `create` returns with the init as it will wait
    chan.close()
    fifo = open_fifo()
    if run_hooks is not None and launch.hooks.get("startContainer"):
        try:
            run_hooks.run("startContainer", launch.hooks,
                          run_hooks.state_for(launch.hook_state, host_pid))
        except HakoError as e:
            # `start` reads this from the fifo and reports it
            os.write(fifo, b"E" + str(e).encode()[:4000])
            os._exit(1)
    try:
        security.lsm_apply(spec)
        if launch.seccomp is not None and nnp:
            # as late as possible: only the user's program runs under it
            launch.seccomp.install(pid=host_pid, sc=sc)
    except HakoError as e:
        os.write(fifo, b"E" + str(e).encode()[:4000])
        os._exit(1)
    os.write(fifo, b"0")
    os.close(fifo)
    exec_process(exe, args, env, launch.preserve_fds, sc)


def _fifo_opener(fifo_fd: int, launch: Launch):
    """How the init will open exec.fifo for writing once it may (after "go").

    Through /proc/self/fd/<fifo_fd>, as runc does, when the container's /proc
    shows our fds: then the state directory's handle is closed now, before
    the init changes into process.cwd, and nothing it holds is a directory.
    A container without a procfs of its own (rootless without a pid
    namespace cannot mount one) keeps the directory handle until the fifo is
    open: with no procfs showing the init's fds it cannot be named from
    inside, and process.cwd never resolves through a magic link anyway."""
    path = f"/proc/self/fd/{fifo_fd}"
    ours = os.fstat(fifo_fd)
    try:
        reachable = _same_file(ours, os.stat(path))
    except OSError:
        reachable = False
    state_fd = launch.state_fd
    if reachable:
        os.close(state_fd)

        def through_proc() -> int:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            os.close(fifo_fd)
            return fd
        return through_proc

    def through_dir() -> int:
        fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_fd)
        if not _same_file(ours, os.fstat(fd)):
            os._exit(1)  # replaced under us: never start on somebody else's fifo
        os.close(state_fd)
        os.close(fifo_fd)
        return fd
    return through_dir


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _sysctl(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = security.sysctl_path(key)
        write_file(path, str(value), f"linux.sysctl.{key}")


def _loopback_up() -> None:
    import fcntl

    from runtime import ctlite  # not ctypes: ~3 ms more for the init
    fd = ctlite.CDLL(None).socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM|SOCK_CLOEXEC
    if fd < 0:
        return
    try:
        ifr = bytearray(40)
        ifr[0:2] = b"lo"
        SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
        try:
            fcntl.ioctl(fd, SIOCGIFFLAGS, ifr, True)
        except OSError:
            return
        flags = int.from_bytes(ifr[16:18], "little") | 0x1  # IFF_UP
        ifr[16:18] = flags.to_bytes(2, "little")
        try:
            fcntl.ioctl(fd, SIOCSIFFLAGS, ifr, True)
        except OSError as e:
            raise HakoError(f"bringing up loopback: {os.strerror(e.errno)}") from None
    finally:
        os.close(fd)
