"""The container's init: prepare everything, report, wait for start, execve.

Runs as pid 1 of the new pid namespace (when there is one), inside every
namespace of the container. Each step that can fail does so *before*
"ready" is sent, so that ``create`` fails with the reason instead of
``start`` succeeding on a process that dies at once.
"""

from __future__ import annotations

import os
import resource
import signal

# Everything the init needs is imported here, at the top: after pivot_root
# the host's sys.path is gone and a lazy import would fail.
from runtime import syscalls as S
from runtime.channel import Channel
from runtime.errors import HakoError
from runtime.process import Launch
from runtime.rootfs import finalize_rootfs, setup_rootfs

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}


def container_init(launch: Launch, chan: Channel) -> None:
    spec = launch.spec
    plan = launch.plan
    proc = spec.get("process") or {}
    sc = S.SYS
    os.setsid()
    # our own handle on the state dir: the fifo is opened through it after
    # pivot_root, when the host path no longer resolves
    state_fd = os.open(launch.state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    if "network" in plan.new:
        _loopback_up()
    run_hooks = None
    host_pid = 0
    if launch.hook_sync:
        from runtime import hooks as run_hooks  # now: nothing imports after pivot_root

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
                      run_hooks.state_for(launch.hook_state, "creating", host_pid))

    setup_rootfs(spec, launch.bundle, rootless=launch.rootless,
                 new_userns="user" in plan.new, new_netns="network" in plan.new,
                 new_cgroupns="cgroup" in plan.new, no_pivot=launch.no_pivot, sc=sc,
                 before_pivot=before_pivot)
    # the cwd is made (as runc does) before root.readonly takes effect
    cwd = proc.get("cwd") or "/"
    try:
        os.makedirs(cwd, mode=0o755, exist_ok=True)
    except OSError as e:
        raise HakoError(f"process.cwd: cannot create {cwd}: {e.strerror}") from None
    if spec.get("hostname"):
        sc.sethostname(spec["hostname"])
    if spec.get("domainname"):
        sc.setdomainname(spec["domainname"])
    _sysctl(spec.get("linux", {}).get("sysctl") or {})
    finalize_rootfs(spec, sc=sc)

    args = list(proc.get("args") or [])
    env = _environ(proc.get("env") or [])
    user = proc.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    _rlimits(proc.get("rlimits") or [])
    if proc.get("oomScoreAdj") is not None:
        _write("/proc/self/oom_score_adj", str(proc["oomScoreAdj"]), "process.oomScoreAdj")
    if "HOME" not in env:
        env["HOME"] = _home_of(uid)
    exe = _lookup(args[0], env.get("PATH", DEFAULT_PATH)) if args else ""

    caps = launch.caps
    if caps is not None:
        caps.drop_bounding(sc)
        sc.prctl(S.PR_SET_KEEPCAPS, 1)
    _switch_user(uid, gid, user.get("additionalGids") or [], sc)
    if caps is not None:
        sc.prctl(S.PR_SET_KEEPCAPS, 0)
        caps.apply(sc)
    if user.get("umask") is not None:
        os.umask(int(user["umask"]))
    try:
        os.chdir(cwd)
    except OSError as e:
        raise HakoError(f"process.cwd: chdir to {cwd}: {e.strerror}") from None
    if proc.get("noNewPrivileges"):
        sc.prctl(S.PR_SET_NO_NEW_PRIVS, 1)

    chan.send(ready=True)
    msg = chan.recv()
    if msg is None or not msg.get("go"):
        os._exit(1)  # the parent failed or died: leave quietly
    chan.close()

    # a created container may be killed while it waits: die on the usual
    # termination signals like runc's init does (pid 1 ignores unhandled ones)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda s, f: os._exit(128 + s))
    fifo = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_fd)
    if run_hooks is not None and launch.hooks.get("startContainer"):
        try:
            run_hooks.run("startContainer", launch.hooks,
                          run_hooks.state_for(launch.hook_state, "created", host_pid))
        except HakoError as e:
            # `start` reads this from the fifo and reports it
            os.write(fifo, b"E" + str(e).encode()[:4000])
            os._exit(1)
    os.write(fifo, b"0")
    os.close(fifo)
    os.close(state_fd)
    _exec(exe, args, env, launch.preserve_fds, sc)


def _exec(exe: str, args: list[str], env: dict[str, str], preserve: int, sc: S.Syscalls) -> None:
    for sig in range(1, signal.NSIG):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for fd in range(3, 3 + preserve):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    sc.close_range(3 + preserve)
    try:
        os.execve(exe, args, env)
    except OSError as e:
        os.write(2, f"hako: exec {args[0]}: {e.strerror}\n".encode())
        os._exit(127 if e.errno == 2 else 126)


def _environ(entries: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, kv in enumerate(entries):
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise HakoError(f"process.env[{i}]: {kv!r} is not of the form KEY=value")
        env[k] = v
    return env


def _lookup(arg0: str, path: str) -> str:
    """PATH lookup inside the container, with runc's wording for failures
    (engines match on "executable file not found")."""
    if "/" in arg0:
        try:
            st = os.stat(arg0)
        except OSError as e:
            raise HakoError(f'exec: "{arg0}": stat {arg0}: {e.strerror.lower()}') from None
        if not (st.st_mode & 0o170000 == 0o100000 and os.access(arg0, os.X_OK)):
            raise HakoError(f'exec: "{arg0}": permission denied')
        return arg0
    for d in path.split(":"):
        cand = os.path.join(d or ".", arg0)
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if st.st_mode & 0o170000 == 0o100000 and os.access(cand, os.X_OK):
            return cand
    raise HakoError(f'exec: "{arg0}": executable file not found in $PATH')


def _home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def _switch_user(uid: int, gid: int, extra: list[int], sc: S.Syscalls) -> None:
    try:
        with open("/proc/self/setgroups") as f:
            groups_allowed = f.read().strip() == "allow"
    except OSError:
        groups_allowed = True
    try:
        if groups_allowed:
            sc.setgroups([int(g) for g in extra])
        elif extra:
            raise HakoError("process.user.additionalGids: setgroups is denied in this user "
                            "namespace (a single-id mapping); map a range with newgidmap "
                            "or drop additionalGids")
    except OSError as e:
        raise HakoError(f"process.user.additionalGids: setgroups: {e.strerror}") from None
    try:
        sc.setresgid(gid)
    except OSError as e:
        raise HakoError(f"process.user.gid: cannot switch to gid {gid}: {e.strerror}"
                        f"{' (not mapped in the user namespace)' if e.errno == 22 else ''}") from None
    try:
        sc.setresuid(uid)
    except OSError as e:
        raise HakoError(f"process.user.uid: cannot switch to uid {uid}: {e.strerror}"
                        f"{' (not mapped in the user namespace)' if e.errno == 22 else ''}") from None
    # after a uid change the kernel marks us non-dumpable; nothing here needs
    # /proc/self of ourselves any more, and execve recomputes it anyway


def _rlimits(limits: list[dict]) -> None:
    for i, rl in enumerate(limits):
        num = RLIMITS.get(rl["type"])
        if num is None:
            raise HakoError(f"process.rlimits[{i}].type: unknown resource limit {rl['type']!r}")
        soft, hard = int(rl["soft"]), int(rl["hard"])
        conv = lambda v: resource.RLIM_INFINITY if v >= 2**63 - 1 or v < 0 else v  # noqa: E731
        try:
            resource.setrlimit(num, (conv(soft), conv(hard)))
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            raise HakoError(f"process.rlimits[{i}]: setting {rl['type']} to {soft}:{hard}: {why}"
                            f" (raising a hard limit needs CAP_SYS_RESOURCE)") from None


def _sysctl(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/")
        _write(path, str(value), f"linux.sysctl.{key}")


def _write(path: str, data: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(data)
    except OSError as e:
        raise HakoError(f"{what}: writing {path}: {e.strerror}") from None


def _loopback_up() -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM|SOCK_CLOEXEC
    if fd < 0:
        return
    try:
        ifr = ctypes.create_string_buffer(40)
        ifr[0:2] = b"lo"
        SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
        if libc.ioctl(fd, SIOCGIFFLAGS, ifr) == 0:
            flags = int.from_bytes(ifr.raw[16:18], "little") | 0x1  # IFF_UP
            ifr[16:18] = flags.to_bytes(2, "little")
            if libc.ioctl(fd, SIOCSIFFLAGS, ifr) != 0:
                err = ctypes.get_errno()
                raise HakoError(f"bringing up loopback: {os.strerror(err)}")
    finally:
        os.close(fd)
