"""The seccomp kernel ABI (linux/seccomp.h, filter.h, audit.h), the probes
that ask the running kernel what it supports, and runc's -ENOSYS prefix."""

from __future__ import annotations

import ctypes
import errno as E
import struct

from runtime import syscalls as S

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
