"""Seccomp filters from ``linux.seccomp``: compiled by libseccomp, loaded raw.

Integration (two calls; written against init.py/container.py of 932daa1)
-------------------------------------------------------------------------
1. Parent, ``container.create()``, right after ``launch.hook_state = {...}`` and
   before ``process.spawn(...)`` (and drop the "not supported yet" refusal of
   ``linux.seccomp`` in ``_check_supported``)::

       from runtime import seccomp
       launch.seccomp = seccomp.prepare((spec.get("linux") or {}).get("seccomp"),
                                        state=launch.hook_state)

   ``None`` without a seccomp section. Every mistake in the profile is a
   HakoError here, before anything is forked; the children inherit the
   compiled program (and the connected listener socket) through fork.
   Optional, after ``process.spawn``: ``if launch.seccomp:
   launch.seccomp.close()`` (the parent's copy of the listener connection).

2. Init, ``init.container_init()``, where runc's standard_init_linux.go does it:

   * ``process.noNewPrivileges`` false: loading needs CAP_SYS_ADMIN (in the
     container's user namespace, so rootless works too), so load it while the
     init still has it, just before ``exe, args, env = become(...)``::

         if launch.seccomp and not proc.get("noNewPrivileges"):
             launch.seccomp.install(pid=host_pid, sc=sc)

   * ``noNewPrivileges`` true: as late as possible, after the startContainer
     hook and before ``os.write(fifo, b"0")``::

         if launch.seccomp and proc.get("noNewPrivileges"):
             try:
                 launch.seccomp.install(pid=host_pid, sc=sc)
             except HakoError as e:
                 os.write(fifo, b"E" + str(e).encode()[:4000])
                 os._exit(1)

   ``host_pid`` (the init's pid as the host sees it, sent to a NOTIFY
   listener) is only known today when hooks ran; ``host_pid =
   int(os.readlink("/proc/self"))`` before ``setup_rootfs`` gives it always
   (/proc is still the host's there). ``hako exec`` wants the same two calls
   (prepare from the saved config in the exec parent, install in
   ``execute._become_and_exec``) as runc applies the container's filter to
   exec'd processes.

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

import ctypes
import errno as E
import os
import struct

from runtime import log
from runtime import syscalls as S
from runtime.errors import HakoError
from runtime.fastjson import dumps as _dumps

# -- kernel ABI (linux/seccomp.h, linux/filter.h, linux/audit.h) ------------
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_WAIT_KILLABLE_RECV = 1 << 5

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
BPF_MAXINSNS = 4096

#: spec action name -> (kernel action without data, takes an errno)
ACTIONS = {
    "SCMP_ACT_KILL": (RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_THREAD": (RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (RET_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (RET_TRAP, False),
    "SCMP_ACT_ERRNO": (RET_ERRNO, True),
    "SCMP_ACT_TRACE": (RET_TRACE, True),
    "SCMP_ACT_LOG": (RET_LOG, False),
    "SCMP_ACT_ALLOW": (RET_ALLOW, False),
    "SCMP_ACT_NOTIFY": (RET_USER_NOTIF, False),
}
OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
             "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
#: every architecture the runtime-spec names; libseccomp's name is the lower case
ARCHES = ("X86", "X86_64", "X32", "ARM", "AARCH64", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL",
          "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC",
          "PARISC64", "RISCV64", "LOONGARCH64", "M68K", "SH", "SHEB")
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": FLAG_TSYNC, "SECCOMP_FILTER_FLAG_LOG": FLAG_LOG,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": FLAG_SPEC_ALLOW,
         "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": FLAG_WAIT_KILLABLE_RECV}
#: syscalls the init itself makes between loading the filter and handing the
#: notify fd over: NOTIFY on them would wait for a listener that never gets it
NOTIFY_REFUSED = ("sendmsg",)

_AUDIT_ARCH_X86_64 = 0xC000003E
_SCMP_ARCH_X32 = 0x4000003E  # libseccomp's token; the kernel sees x86_64 + bit 30
_X32_SYSCALL_BIT = 0x40000000
_OPTIMIZE_ABOVE = 32  # rules; libseccomp <= 2.5.4 misbehaves with a tree of 0 rules

ContainerState = dict


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


# -- libseccomp ------------------------------------------------------------
_lib_cache: list = []


def _lib() -> ctypes.CDLL:
    """libseccomp, loaded on first use: a config without seccomp never pays for it."""
    if _lib_cache:
        return _lib_cache[0]
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise HakoError("linux.seccomp: libseccomp (libseccomp.so.2) is not installed on this "
                        "host; install the libseccomp2 package, or remove linux.seccomp") from None
    c_u32, c_int, c_void_p, c_char_p = ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    sig = {
        "seccomp_init": (c_void_p, [c_u32]),
        "seccomp_release": (None, [c_void_p]),
        "seccomp_arch_add": (c_int, [c_void_p, c_u32]),
        "seccomp_arch_native": (c_u32, []),
        "seccomp_arch_resolve_name": (c_u32, [c_char_p]),
        "seccomp_syscall_resolve_name": (c_int, [c_char_p]),
        "seccomp_syscall_resolve_name_arch": (c_int, [c_u32, c_char_p]),
        "seccomp_rule_add_array": (c_int, [c_void_p, c_u32, c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]),
        "seccomp_attr_set": (c_int, [c_void_p, c_int, c_u32]),
        "seccomp_export_bpf": (c_int, [c_void_p, c_int]),
        "seccomp_version": (ctypes.POINTER(ctypes.c_uint * 3), []),
    }
    for name, (res, args) in sig.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise HakoError(f"linux.seccomp: the installed libseccomp lacks {name}(); "
                            f"hako needs libseccomp >= 2.5") from None
        fn.restype = res
        fn.argtypes = args
    _lib_cache.append(lib)
    return lib


def library_version() -> str:
    v = _lib().seccomp_version().contents
    return f"{v[0]}.{v[1]}.{v[2]}"


# -- kernel probes -----------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _seccomp_raw(op: int, flags: int, arg) -> tuple[int, int]:
    nr = S._NR.get("seccomp")
    if nr is None:
        return -1, E.ENOSYS
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_uint(op), ctypes.c_uint(flags), arg)
    return r, (ctypes.get_errno() if r < 0 else 0)


def kernel_has_action(action: int) -> bool:
    """SECCOMP_GET_ACTION_AVAIL: KILL_PROCESS and LOG need 4.14, USER_NOTIF 5.0."""
    val = ctypes.c_uint32(action)
    r, _ = _seccomp_raw(SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(val))
    return r == 0


def kernel_has_flag(flag: int) -> bool:
    """A NULL program with a known flag fails with EFAULT; an unknown flag, EINVAL
    (the probe libseccomp itself uses). WAIT_KILLABLE_RECV is only valid with
    NEW_LISTENER, so it is probed together with it."""
    if flag == FLAG_WAIT_KILLABLE_RECV:
        flag |= FLAG_NEW_LISTENER
    r, err = _seccomp_raw(SECCOMP_SET_MODE_FILTER, flag, None)
    return r < 0 and err == E.EFAULT


# -- BPF stub ---------------------------------------------------------------
_LD_W_ABS, _JEQ, _JGT, _JSET, _JA, _RET = 0x20, 0x15, 0x25, 0x45, 0x05, 0x06


def _enosys_stub(max_nr: dict[int, dict[str, int]]) -> bytes:
    """A prefix sending syscalls newer than the profile to -ENOSYS (runc's patchbpf).

    ``max_nr`` maps an AUDIT_ARCH value to {"": highest nr} or, on x86_64,
    to {"x86_64": n, "x32": m}. Conditional jumps only ever skip one or two
    instructions; every long way is an unconditional ``ja`` (32-bit offset), so
    no jump can overflow whatever the size of the filter behind it.
    """
    enosys = RET_ERRNO | E.ENOSYS
    # instructions: (code, jt, jf, k) with k a label name for `ja`
    code: list[tuple[int, int, int, object]] = [(_LD_W_ABS, 0, 0, 4)]  # arch
    arches = sorted(max_nr)
    for a in arches:
        code.append((_JEQ, 0, 1, a))
        code.append((_JA, 0, 0, f"arch{a}"))
    code.append((_JA, 0, 0, "filter"))
    labels: dict[str, int] = {}

    def check(limit: int | None) -> list[tuple[int, int, int, object]]:
        if limit is None:
            return [(_JA, 0, 0, "filter")]
        return [(_JGT, 0, 1, limit), (_RET, 0, 0, enosys), (_JA, 0, 0, "filter")]

    for a in arches:
        labels[f"arch{a}"] = len(code)
        code.append((_LD_W_ABS, 0, 0, 0))  # syscall number
        m = max_nr[a]
        if a == _AUDIT_ARCH_X86_64:
            native, x32 = check(m.get("x86_64")), check(m.get("x32"))
            code.append((_JSET, len(native), 0, _X32_SYSCALL_BIT))
            code.extend(native)
            code.extend(x32)
        else:
            code.extend(check(m.get("")))
    labels["filter"] = len(code)
    out = bytearray()
    for i, (c, jt, jf, k) in enumerate(code):
        if c == _JA:
            k = labels[k] - (i + 1)  # type: ignore[index]
        out += struct.pack("=HBBI", c, jt, jf, k)
    return bytes(out)


# -- validation helpers -------------------------------------------------------
def _j(v) -> str:
    """A config value as the user wrote it (JSON), for messages."""
    try:
        return _dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _uint(v, where: str, bits: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise HakoError(f"{where}: must be an unsigned integer, not {_j(v)}")
    if not 0 <= v < (1 << bits):
        raise HakoError(f"{where}: {v} is out of range (0 to {(1 << bits) - 1})")
    return v


def _str(v, where: str) -> str:
    if not isinstance(v, str):
        raise HakoError(f"{where}: must be a string, not {_j(v)}")
    return v


def _list(v, where: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise HakoError(f"{where}: must be an array, not {_j(v)}")
    return v


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


def _compile(default: int, arch_names: list[tuple[int, str]], rules: list, default_errno) -> bytes:
    lib = _lib()
    where = "linux.seccomp"
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise HakoError(f"{where}.defaultAction: libseccomp {library_version()} refused it")
    try:
        native = lib.seccomp_arch_native()
        tokens = {native}
        for i, name in arch_names:
            tok = lib.seccomp_arch_resolve_name(name[10:].lower().encode())
            if not tok:
                raise HakoError(f'{where}.architectures[{i}]: "{name}" is not supported by '
                                f'libseccomp {library_version()}')
            rc = lib.seccomp_arch_add(ctx, tok)
            if rc < 0 and rc != -E.EEXIST:
                raise HakoError(f"{where}.architectures[{i}]: adding {name}: {os.strerror(-rc)}")
            tokens.add(tok)
        if len(rules) > _OPTIMIZE_ABOVE:
            if lib.seccomp_attr_set(ctx, 8, 2) < 0:  # SCMP_FLTATR_CTL_OPTIMIZE: binary tree
                log.debug("seccomp: binary tree optimization not available")

        all_names: set[str] = set()
        for w, names, act, conds in rules:
            all_names.update(names)
            if act == default:
                continue  # redundant; libseccomp refuses it (EACCES)
            indexes = [c[0] for c in conds]
            # libseccomp refuses two conditions on one argument in a rule:
            # like runc, make each condition a rule of its own then
            groups = [conds] if len(set(indexes)) == len(indexes) else [[c] for c in conds]
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR; other negatives are valid pseudo-syscalls
                    log.debug(f'seccomp: unknown syscall "{name}" ignored ({w})')
                    continue
                for group in groups:
                    arr = (_ArgCmp * max(1, len(group)))(*[_ArgCmp(*c) for c in group])
                    rc = lib.seccomp_rule_add_array(ctx, act, nr, len(group), arr)
                    if rc < 0:
                        raise HakoError(f"{w}: adding the rule for {name}: {os.strerror(-rc)}"
                                        f" (libseccomp {library_version()})")

        program = _export(lib, ctx)
        allowing = default in (RET_ALLOW, RET_LOG) or (default & 0xFFFF0000) == RET_TRACE
        if not allowing and default != (RET_ERRNO | E.ENOSYS):
            program = _enosys_stub(_max_syscalls(lib, tokens, all_names)) + program
    finally:
        lib.seccomp_release(ctx)
    if len(program) // 8 > BPF_MAXINSNS:
        raise HakoError(f"{where}: the compiled filter has {len(program) // 8} instructions; "
                        f"the kernel takes at most {BPF_MAXINSNS}")
    return program


def _export(lib, ctx) -> bytes:
    fd = os.memfd_create("hako-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise HakoError(f"linux.seccomp: compiling the filter: {os.strerror(-rc)}")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _max_syscalls(lib, tokens: set[int], names: set[str]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for tok in tokens:
        top = 0
        for name in names:
            nr = lib.seccomp_syscall_resolve_name_arch(tok, name.encode())
            if nr > top:
                top = nr
        if not top:
            continue
        if tok == _SCMP_ARCH_X32:
            out.setdefault(_AUDIT_ARCH_X86_64, {})["x32"] = top
        elif tok == _AUDIT_ARCH_X86_64:
            out.setdefault(_AUDIT_ARCH_X86_64, {})["x86_64"] = top
        else:
            out.setdefault(tok, {})[""] = top
    return out
