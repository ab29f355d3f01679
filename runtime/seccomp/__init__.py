"""Seccomp filters from ``linux.seccomp``: compiled by libseccomp, loaded raw.

``prepare`` (the parent of create and exec, before fork) validates the
profile and compiles it; the init (runtime/init.py) and the exec child
(runtime/execute.py) ``install`` the raw program: before dropping
capabilities without noNewPrivileges, as late as possible with it.
The kernel ABI and probes are in abi.py, the libseccomp binding in
libseccomp.py.

Design
------
libseccomp is used for what it is good at (syscall tables of every
architecture, argument comparisons, the arch dispatch), but only in the
parent: :func:`prepare` builds the filter there, exports the BPF program
(``seccomp_export_bpf`` into a memfd) and keeps the bytes. The init then needs
no library at all after pivot_root (it could not dlopen one anyway): loading is
one ``seccomp(SECCOMP_SET_MODE_FILTER)`` (or ``prctl(PR_SET_SECCOMP)``) with
the raw program. Loading ourselves is also what lets the filter flags
(``SECCOMP_FILTER_FLAG_LOG/SPEC_ALLOW/WAIT_KILLABLE_RECV``, ``NEW_LISTENER``
for NOTIFY) go to the kernel directly; they are probed against the kernel in
:func:`prepare` so an unsupported one is a create-time error.

As runc's patchbpf does, the program gets a short prefix returning -ENOSYS for
syscall numbers above the highest one the profile names (per architecture), so
a libc probing a syscall newer than the profile (clone3, fchmodat2...) falls
back instead of failing with the default action's EPERM. It is skipped when
the default action already allows (ALLOW/LOG/TRACE) or is ERRNO(ENOSYS).

Semantics follow runc: unknown syscall names are skipped (debug log line),
rules whose action equals the default action are dropped, several conditions
on the same argument index become one rule per condition, KILL is
KILL_THREAD, SECCOMP_FILTER_FLAG_TSYNC is accepted and ignored (the init is
single-threaded, and the kernel refuses it together with NEW_LISTENER).
Stricter than runc: an ``errnoRet`` on an action that takes none is an error
(the runtime-spec says so), and NOTIFY is refused on ``sendmsg``: that is the
one syscall the init makes under the filter before the listener has the fd.
"""

from __future__ import annotations

import errno as E
import os

from runtime import syscalls as S
from runtime.errors import HakoError
from runtime.fastjson import dumps as _dumps
# the ABI names and probes, used here and by callers as runtime.seccomp.X
from runtime.seccomp.abi import (  # noqa: F401
    ACTIONS, ARCHES, BPF_MAXINSNS, FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC,
    FLAG_WAIT_KILLABLE_RECV, FLAGS, NOTIFY_REFUSED, OPERATORS, RET_ALLOW, RET_ERRNO,
    RET_KILL_PROCESS, RET_KILL_THREAD, RET_LOG, RET_TRACE, RET_TRAP, RET_USER_NOTIF,
    _enosys_stub, kernel_has_action, kernel_has_flag,
)
from runtime.seccomp.libseccomp import _compile, _lib, library_version  # noqa: F401
from runtime.validators import as_list as _list
from runtime.validators import as_str as _str
from runtime.validators import as_uint as _uint

ContainerState = dict

def _action(name, errno_ret, where: str, errno_where: str) -> int:
    name = _str(name, where)
    if name not in ACTIONS:
        raise HakoError(f'{where}: unknown action "{name}" (known: {", ".join(sorted(ACTIONS))})')
    base, takes_errno = ACTIONS[name]
    if errno_ret is not None:
        if not takes_errno:
            raise HakoError(f"{errno_where}: {name} takes no errno (only SCMP_ACT_ERRNO and "
                            f"SCMP_ACT_TRACE do)")
        _uint(errno_ret, errno_where, 16)
    if takes_errno:
        return base | (E.EPERM if errno_ret is None else errno_ret)
    return base


class Prepared:
    """A compiled filter, ready to load with one syscall."""

    def __init__(self, program: bytes, flags: int, *, default_action: int,
                 listener_path: str | None = None, metadata: str = "",
                 state: ContainerState | None = None) -> None:
        self.program = program
        self.flags = flags
        self.default_action = default_action
        self.listener_path = listener_path
        self.metadata = metadata
        self.state = dict(state or {})
        self.sock = None  # socket.socket, connected when NOTIFY has a listener
        self._scm: tuple = ()

    @property
    def notify(self) -> bool:
        return bool(self.flags & FLAG_NEW_LISTENER)

    def __len__(self) -> int:
        return len(self.program) // 8

    def connect(self) -> None:
        """Connect to listenerPath (a host path: call before pivot_root)."""
        if not (self.notify and self.listener_path) or self.sock is not None:
            return
        import array  # only a NOTIFY profile pays for these imports
        import socket
        # kept for install(), which may run after pivot_root: no imports then
        self._scm = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array)
        where = "linux.seccomp.listenerPath"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(10)
        try:
            s.connect(self.listener_path)
            s.settimeout(None)
        except (OSError, ValueError) as e:
            s.close()
            why = getattr(e, "strerror", None) or str(e)
            raise HakoError(f"{where}: connecting to the seccomp agent at "
                            f"{self.listener_path}: {why}") from None
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def payload(self, pid: int) -> bytes:
        """The container process state runc sends to the agent (runtime-spec
        ``ContainerProcessState``), the notify fd going along as "seccompFd"."""
        st = dict(self.state)
        st.setdefault("ociVersion", "1.3.0")
        st["status"] = "creating"
        st["pid"] = pid
        msg: dict = {"ociVersion": st["ociVersion"], "fds": ["seccompFd"], "pid": pid,
                     "state": st}
        if self.metadata:
            msg["metadata"] = self.metadata
        return _dumps(msg).encode()

    def install(self, pid: int | None = None, sc: S.Syscalls = S.SYS) -> int | None:
        """Load the filter into the calling process; the last thing before execve.

        Returns the notify fd (O_CLOEXEC, so the container's program never sees
        it) when the profile has NOTIFY actions, after sending it to the
        listener. Without no_new_privs the kernel wants CAP_SYS_ADMIN: EACCES
        is explained rather than passed on.
        """
        payload = None
        if self.sock is not None:
            # everything that allocates is done before the filter is on
            payload = self.payload(pid if pid is not None else os.getpid())
            level, kind, array = self._scm
        try:
            fd = sc.seccomp_filter(self.program, self.flags)
        except OSError as e:
            raise HakoError(_load_error(e, self.flags)) from None
        if not self.notify:
            return None
        if payload is not None:
            try:
                sent = self.sock.sendmsg([payload], [(level, kind, array("i", [fd]))])
                if sent < len(payload):
                    self.sock.sendall(payload[sent:])
            except OSError as e:
                raise HakoError(f"linux.seccomp.listenerPath: sending the notify fd to "
                                f"{self.listener_path}: {e.strerror} (the profile must allow "
                                f"sendmsg)") from None
            finally:
                self.close()
        return fd


def _load_error(e: OSError, flags: int) -> str:
    what = f"linux.seccomp: loading the filter: {os.strerror(e.errno or 0)}"
    if e.errno == E.EACCES:
        return (what + " (without process.noNewPrivileges only a process with CAP_SYS_ADMIN "
                "may load a seccomp filter: set noNewPrivileges, or load it before the "
                "capabilities are dropped)")
    if e.errno == E.EBUSY and flags & FLAG_NEW_LISTENER:
        return what + " (an outer filter already has a NOTIFY listener)"
    if e.errno == E.ENOMEM:
        return what + " (the filters of this process together are too long)"
    if e.errno == E.EINVAL:
        return what + f" (the kernel refused the program or the flags {flags:#x})"
    return what


def prepare(seccomp: dict | None, *, state: ContainerState | None = None,
            connect: bool = True) -> Prepared | None:
    """Validate ``linux.seccomp`` and compile it; ``None`` when there is none.

    Call before pivot_root (ideally in the parent): it needs libseccomp and,
    for NOTIFY with a listenerPath, connects to that host socket. ``state`` is
    the container's OCI state (ociVersion, id, bundle, annotations) for the
    listener. Raises only HakoError.
    """
    if seccomp is None:
        return None
    where = "linux.seccomp"
    if not isinstance(seccomp, dict):
        raise HakoError(f"{where}: must be an object")
    if "defaultAction" not in seccomp:
        raise HakoError(f"{where}.defaultAction: missing (it is required)")
    default = _action(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"),
                      f"{where}.defaultAction", f"{where}.defaultErrnoRet")
    if default == RET_USER_NOTIF:
        raise HakoError(f"{where}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action "
                        f"(the init could not hand the notify fd over)")

    # arches, flags, rules: validated in full before libseccomp is touched
    arch_names = []
    for i, a in enumerate(_list(seccomp.get("architectures"), f"{where}.architectures")):
        a = _str(a, f"{where}.architectures[{i}]")
        if not a.startswith("SCMP_ARCH_") or a[10:] not in ARCHES:
            raise HakoError(f'{where}.architectures[{i}]: unknown architecture "{a}"')
        arch_names.append((i, a))
    flags = 0
    for i, f in enumerate(_list(seccomp.get("flags"), f"{where}.flags")):
        f = _str(f, f"{where}.flags[{i}]")
        if f not in FLAGS:
            raise HakoError(f'{where}.flags[{i}]: unknown flag "{f}" (known: '
                            f'{", ".join(FLAGS)})')
        if FLAGS[f] != FLAG_TSYNC:  # single-threaded init: nothing to sync (as runc)
            flags |= FLAGS[f]
    rules = []  # (where, names, action, [(index, op, a, b)])
    for i, sc in enumerate(_list(seccomp.get("syscalls"), f"{where}.syscalls")):
        w = f"{where}.syscalls[{i}]"
        if not isinstance(sc, dict):
            raise HakoError(f"{w}: must be an object")
        if "action" not in sc:
            raise HakoError(f"{w}.action: missing (it is required)")
        act = _action(sc["action"], sc.get("errnoRet"), f"{w}.action", f"{w}.errnoRet")
        names = []
        for j, n in enumerate(_list(sc.get("names"), f"{w}.names")):
            n = _str(n, f"{w}.names[{j}]")
            if not n or "\0" in n:
                raise HakoError(f"{w}.names[{j}]: {n!r} is not a syscall name")
            if act == RET_USER_NOTIF and n in NOTIFY_REFUSED:
                raise HakoError(f"{w}: SCMP_ACT_NOTIFY cannot be used for {n}: the init "
                                f"needs it to hand the notify fd to the listener")
            names.append(n)
        conds = []
        for j, arg in enumerate(_list(sc.get("args"), f"{w}.args")):
            aw = f"{w}.args[{j}]"
            if not isinstance(arg, dict):
                raise HakoError(f"{aw}: must be an object")
            index = _uint(arg.get("index"), f"{aw}.index", 32)
            if index > 5:
                raise HakoError(f"{aw}.index: {index} is out of range (a syscall has "
                                f"arguments 0 to 5)")
            op = _str(arg.get("op"), f"{aw}.op")
            if op not in OPERATORS:
                raise HakoError(f'{aw}.op: unknown operator "{op}" (known: '
                                f'{", ".join(OPERATORS)})')
            a = _uint(arg.get("value", 0), f"{aw}.value", 64)
            b = _uint(arg.get("valueTwo", 0), f"{aw}.valueTwo", 64)
            conds.append((index, OPERATORS[op], a, b))
        rules.append((w, names, act, conds))
    notify = any(r[2] == RET_USER_NOTIF for r in rules)
    listener = seccomp.get("listenerPath")
    if listener is not None:
        listener = _str(listener, f"{where}.listenerPath")
    metadata = seccomp.get("listenerMetadata")
    metadata = "" if metadata is None else _str(metadata, f"{where}.listenerMetadata")
    if notify:
        if not listener:
            raise HakoError(f"{where}.listenerPath: SCMP_ACT_NOTIFY needs a listenerPath to "
                            f"send the notify fd to")
        if not os.path.isabs(listener) or "\0" in listener:
            raise HakoError(f"{where}.listenerPath: {listener!r} is not an absolute path")
        flags |= FLAG_NEW_LISTENER
    elif flags & FLAG_WAIT_KILLABLE_RECV:
        raise HakoError(f"{where}.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies "
                        f"to a filter with SCMP_ACT_NOTIFY actions")

    # the kernel: actions and flags it lacks are create-time errors
    used = {default & 0xFFFF0000} | {r[2] & 0xFFFF0000 for r in rules}
    for name, (base, _) in ACTIONS.items():
        if base in used and not kernel_has_action(base):
            raise HakoError(f"{where}: this kernel does not support {name}")
    for name, bit in FLAGS.items():
        if flags & bit and not kernel_has_flag(bit):
            raise HakoError(f"{where}.flags: this kernel does not support {name}")

    program = _compile(default, arch_names, rules, seccomp.get("defaultErrnoRet"))
    p = Prepared(program, flags, default_action=default, listener_path=listener if notify else None,
                 metadata=metadata, state=state)
    if connect:
        p.connect()
    return p
