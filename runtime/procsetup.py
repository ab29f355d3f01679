"""Turning a process into the container's process: identity, limits, exec.

Shared by the container's init and by ``exec``. Everything here runs after
pivot_root (or setns into the container's mount namespace), so this module
imports all it needs at the top and nothing lazily.
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # the C module: "signal" imports enum (~4 ms)

from runtime import syscalls as S
from runtime.capabilities import CapPlan
from runtime.errors import HakoError
from runtime.inroot import mkdir_all, open_in_root

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}


# key permission bits (linux/key.h): search by the owner's uid, by others
KEY_USR_SEARCH = 0x00080000
KEY_OTH_SEARCH = 0x00000008


def join_keyring(name: "str | None", sc: S.Syscalls = S.SYS, searchable: int = 0) -> None:
    """Leave the caller's session keyring for the one named ``name`` (runc's
    ``_ses.<id>``), so the container cannot read or add to the keys of
    whoever started it; ``None``: keep it (--no-new-keyring). The init, which
    makes the keyring, adds the ``searchable`` bits so that an exec'd process
    may find it by name and join it too (runc's mask: every other bit kept).
    First, before the user switch and seccomp (a profile may deny keyctl).
    A kernel without keyrings (ENOSYS) is no error: this is best effort there."""
    if name is None:
        return
    step = "joining it"
    try:
        serial = sc.join_session_keyring(name)
        if searchable:
            step = "making it searchable"
            fields = sc.describe_key(serial).split(";")
            sc.set_key_perm(serial, int(fields[3], 16) | searchable)
    except OSError as e:
        if e.errno == errno.ENOSYS and step == "joining it":
            return
        why = os.strerror(e.errno) if e.errno else str(e)
        raise HakoError(f"session keyring {name}: {step}: {why} "
                        f"(create/run --no-new-keyring keeps the caller's)") from None
    except (IndexError, ValueError):
        raise HakoError(f"session keyring {name}: {step}: its description is not "
                        f"type;uid;gid;perm;name") from None


def set_oom_score(proc: dict) -> None:
    """Before the process turns non-dumpable: after that its /proc/self files
    belong to root of the host's user namespace and a rootless write fails."""
    if proc.get("oomScoreAdj") is not None:
        write_file("/proc/self/oom_score_adj", str(proc["oomScoreAdj"]), "process.oomScoreAdj")


def become(proc: dict, caps: "CapPlan | None", sc: S.Syscalls = S.SYS) -> tuple[str, list[str], dict[str, str]]:
    """Apply ``process`` (rlimits, oom score, user, capabilities, umask, cwd,
    noNewPrivileges) to this process; returns (executable, argv, env) for
    exec_process. Every check that can fail happens here, before "ready"."""
    cwd = proc.get("cwd") or "/"
    args = list(proc.get("args") or [])
    env = environ(proc.get("env") or [])
    user = proc.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    rlimits(proc.get("rlimits") or [], sc)
    if "HOME" not in env:
        env["HOME"] = home_of(uid)
    exe = lookup(args[0], env.get("PATH", DEFAULT_PATH)) if args else ""
    if caps is not None:
        caps.drop_bounding(sc)
        sc.prctl(S.PR_SET_KEEPCAPS, 1)
    switch_user(uid, gid, user.get("additionalGids") or [], sc)
    if caps is not None:
        sc.prctl(S.PR_SET_KEEPCAPS, 0)
        caps.apply(sc)
    if user.get("umask") is not None:
        os.umask(int(user["umask"]))
    enter_cwd(cwd)
    if proc.get("noNewPrivileges"):
        sc.prctl(S.PR_SET_NO_NEW_PRIVS, 1)

    return exe, args, env


def close_fds_except(keep: "set[int] | list[int]", preserve: int, sc: S.Syscalls = S.SYS) -> None:
    """Close every fd but stdio, the ``preserve`` fds after them and ``keep``.

    Called before the process changes into its working directory: an fd that
    is still open then (close-on-exec acts only at execve) can be named as
    ``/proc/self/fd/N`` and lead out of the container (CVE-2024-21626)."""
    lo = 3 + max(preserve, 0)
    for fd in sorted({k for k in keep if k >= lo}):
        if fd > lo:
            sc.close_range(lo, fd - 1)
        lo = fd + 1
    sc.close_range(lo)


def close_inherited(chan, console, seccomp, preserve: int, sc: S.Syscalls = S.SYS,
                    extra: tuple[int, ...] = ()) -> None:
    """What the init and an exec'd process keep until execve: stdio, the
    preserved fds, their sync pipes (``chan``), the console socket, the seccomp
    listener connection and ``extra``. Only the init's ``extra`` holds
    directories (the state dir, idmapped mount trees), all closed before the
    container's process can run; whatever the caller held (a lock, a log
    file, an engine's stray descriptors) is closed before the rootfs or the
    working directory is touched."""
    keep = {*chan.fds(), *extra}
    if console is not None:
        keep.add(console.fileno())
    sock = getattr(seccomp, "sock", None)
    if sock is not None:
        keep.add(sock.fileno())
    close_fds_except(keep, preserve, sc)


def make_cwd(cwd: str) -> None:
    """Create the working directory inside the root (as runc does), resolving
    every component in it: never through a /proc magic link, never outside."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(mkdir_all(root, cwd, 0o755))
    except OSError as e:
        raise HakoError(f"process.cwd: cannot create {cwd}: {_why(e)}") from None
    finally:
        os.close(root)


def enter_cwd(cwd: str) -> None:
    """chdir into ``cwd`` resolved inside the container's root, then check that
    the kernel agrees the result is inside it (getcwd fails for a directory
    outside the root: "(unreachable)")."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(root, cwd, os.O_PATH | os.O_DIRECTORY)
    except OSError as e:
        raise HakoError(f"process.cwd: chdir to {cwd}: {_why(e)}") from None
    finally:
        os.close(root)
    try:
        os.fchdir(fd)
    except OSError as e:
        raise HakoError(f"process.cwd: chdir to {cwd}: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        where = os.getcwd()
    except OSError:
        where = ""
    if not where.startswith("/"):
        raise HakoError(f"process.cwd: {cwd} is outside the container's root filesystem")


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return ("too many levels of symbolic links, or a /proc magic link "
                "(such as /proc/self/fd/N), which could lead outside the container")
    return e.strerror or str(e)


def exec_process(exe: str, args: list[str], env: dict[str, str], preserve: int, sc: S.Syscalls) -> None:
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


def environ(entries: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, kv in enumerate(entries):
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise HakoError(f"process.env[{i}]: {kv!r} is not of the form KEY=value")
        env[k] = v
    return env


def lookup(arg0: str, path: str) -> str:
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


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def switch_user(uid: int, gid: int, extra: list[int], sc: S.Syscalls) -> None:
    try:
        with open("/proc/self/setgroups") as f:
            groups_allowed: bool | None = f.read().strip() == "allow"
    except OSError:
        groups_allowed = None  # no procfs in the container: try, and see
    if groups_allowed is False:
        if extra:
            raise HakoError("process.user.additionalGids: setgroups is denied in this user "
                            "namespace (a single-id mapping); map a range with newgidmap "
                            "or drop additionalGids")
    else:
        try:
            sc.setgroups([int(g) for g in extra])
        except OSError as e:
            # unknown (no procfs) and "deny" after all: with nothing to set, nothing to drop
            if not (groups_allowed is None and not extra and e.errno == errno.EPERM):
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


def rlimits(limits: list[dict], sc: S.Syscalls = S.SYS) -> None:
    for i, rl in enumerate(limits):
        num = RLIMITS.get(rl["type"])
        if num is None:
            raise HakoError(f"process.rlimits[{i}].type: unknown resource limit {rl['type']!r}")
        soft, hard = int(rl["soft"]), int(rl["hard"])
        conv = lambda v: S.RLIM_INFINITY if v >= 2**63 - 1 or v < 0 else v  # noqa: E731
        try:
            sc.setrlimit(num, conv(soft), conv(hard))
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            hint = " (raising a hard limit needs CAP_SYS_RESOURCE)" if e.errno == 1 else ""
            raise HakoError(f"process.rlimits[{i}]: setting {rl['type']} to {soft}:{hard}: "
                            f"{why}{hint}") from None


def write_file(path: str, data: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(data)
    except OSError as e:
        raise HakoError(f"{what}: writing {path}: {e.strerror}") from None


