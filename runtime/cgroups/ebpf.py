"""The cgroup v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup v2 has no devices.allow/deny files; the kernel asks a BPF program
attached to the cgroup instead. The program is generated from the same folded
rule set as on v1 (devices.Emulator, so a v2 container gets exactly the access
a v1 one would), one block per exception, the default policy last -- the
layout runc (after crun) uses:

    r2 = ctx->access_type & 0xffff   (BPF_DEVCG_DEV_BLOCK 1 / CHAR 2)
    r3 = ctx->access_type >> 16      (ACC_MKNOD 1 / READ 2 / WRITE 4)
    r4 = ctx->major; r5 = ctx->minor
    block i: if r2 != type goto i+1; [if r3 & perms != r3 goto i+1]
             [if r4 != major goto i+1]; [if r5 != minor goto i+1]
             r0 = allow; exit
    r0 = default; exit

It is loaded and attached with bpf(2) through ctypes (x86_64 and aarch64).
A new program is attached with BPF_F_ALLOW_MULTI before the old ones are
detached, so there is no moment without a filter. Attached programs live as
long as the cgroup; nothing is pinned.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

from runtime.cgroups.devices import WILDCARD, Emulator, Rule
from runtime.errors import HakoError

_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4

# opcodes
_LDX_W = 0x61      # BPF_LDX | BPF_MEM | BPF_W
_AND32_K = 0x54    # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X = 0xBC    # BPF_ALU | BPF_MOV | BPF_X
_MOV32_K = 0xB4    # BPF_ALU | BPF_MOV | BPF_K
_JNE_K = 0x55      # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D      # BPF_JMP | BPF_JNE | BPF_X
_EXIT = 0x95       # BPF_JMP | BPF_EXIT

LICENSE = b"Apache\0"


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple:
    return (code, dst, src, off, imm)


def program(rules: list[Rule]) -> list[tuple]:
    """The instructions (code, dst, src, off, imm) for a rule list."""
    emu = Emulator.build(rules)
    insns = [
        _insn(_LDX_W, 2, 1, 0), _insn(_AND32_K, 2, imm=0xFFFF),
        _insn(_LDX_W, 3, 1, 0), _insn(_RSH32_K, 3, imm=16),
        _insn(_LDX_W, 4, 1, 4),
        _insn(_LDX_W, 5, 1, 8),
    ]
    exception = 0 if emu.default_allow else 1
    for (t, major, minor), perms in emu.ordered():
        block: list[tuple] = []
        # jumps are patched to "next block" once the block's length is known
        block.append(["jne_k", 2, DEV_CHAR if t == "c" else DEV_BLOCK])
        acc = (ACC_READ if "r" in perms else 0) | (ACC_WRITE if "w" in perms else 0) \
            | (ACC_MKNOD if "m" in perms else 0)
        if acc != ACC_READ | ACC_WRITE | ACC_MKNOD:
            block.append(_insn(_MOV32_X, 1, 3))
            block.append(_insn(_AND32_K, 1, imm=acc))
            block.append(["jne_x", 1, 3])
        if major != WILDCARD:
            block.append(["jne_k", 4, major])
        if minor != WILDCARD:
            block.append(["jne_k", 5, minor])
        block.append(_insn(_MOV32_K, 0, imm=exception))
        block.append(_insn(_EXIT))
        n = len(block)
        for i, ins in enumerate(block):
            if isinstance(ins, list):
                kind, reg, val = ins
                off = n - i - 1  # to the first instruction after this block
                if kind == "jne_k":
                    block[i] = _insn(_JNE_K, reg, 0, off, _s32(val))
                else:
                    block[i] = _insn(_JNE_X, reg, val, off)
        insns.extend(block)
    insns.append(_insn(_MOV32_K, 0, imm=1 if emu.default_allow else 0))
    insns.append(_insn(_EXIT))
    return insns


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def encode(insns: list[tuple]) -> bytes:
    return b"".join(struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
                    for code, dst, src, off, imm in insns)


def evaluate(insns: list[tuple], dev_type: int, access: int, major: int, minor: int) -> int:
    """A tiny interpreter for exactly the instructions ``program`` emits
    (tests check the generated program against the emulator with it)."""
    regs = [0] * 11
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    pc = 0
    while True:
        code, dst, src, off, imm = insns[pc]
        pc += 1
        if code == _LDX_W:
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == _AND32_K:
            regs[dst] = (regs[dst] & (imm & 0xFFFFFFFF)) & 0xFFFFFFFF
        elif code == _RSH32_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == _MOV32_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == _MOV32_K:
            regs[dst] = imm & 0xFFFFFFFF
        elif code == _JNE_K:
            if regs[dst] != (imm & 0xFFFFFFFFFFFFFFFF if imm >= 0 else imm + (1 << 64)):
                pc += off
        elif code == _JNE_X:
            if regs[dst] != regs[src]:
                pc += off
        elif code == _EXIT:
            return regs[0]
        else:  # pragma: no cover
            raise ValueError(f"unknown opcode {code:#x}")


# ----------------------------------------------------------------- bpf(2)
_libc = None


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    global _libc
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(38, f"bpf(2): unknown syscall number on {platform.machine()}")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr,
                      ctypes.c_uint(ctypes.sizeof(attr)))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def load(insns: list[tuple]) -> int:
    """BPF_PROG_LOAD; returns the program fd. The verifier log is included
    in the error when the kernel refuses the program."""
    code = encode(insns)
    buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(LICENSE)
    for log_level in (0, 1):
        log = ctypes.create_string_buffer(65536 if log_level else 1)
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns),
                         ctypes.addressof(buf), ctypes.addressof(lic), log_level,
                         ctypes.sizeof(log) if log_level else 0,
                         ctypes.addressof(log) if log_level else 0)
        attr[48:52] = b"hako"  # prog_name (NUL-padded)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            if log_level:
                text = log.value.decode(errors="replace").strip().splitlines()
                raise OSError(e.errno, f"{e.strerror} ({' / '.join(text[-3:])})") from None
            if e.errno not in (13, 22):  # EACCES/EINVAL: retry for the log
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def attached(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                     ctypes.addressof(ids), 64)
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:min(count, 64)])


def _fd_by_id(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr)


def _attach(cmd: int, cgroup_fd: int, prog_fd: int, flags: int) -> None:
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags)
    _bpf(cmd, attr)


def attach(cgroup_path: str, insns: list[tuple]) -> None:
    """Attach a new filter, then detach the ones attached before it."""
    cg = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = attached(cg)
        prog = load(insns)
        try:
            _attach(BPF_PROG_ATTACH, cg, prog, BPF_F_ALLOW_MULTI)
        finally:
            os.close(prog)
        for pid in old:
            fd = _fd_by_id(pid)
            try:
                _attach(BPF_PROG_DETACH, cg, fd, 0)
            finally:
                os.close(fd)
    finally:
        os.close(cg)


def apply(cgroup_path: str, rules: list[Rule]) -> None:
    """Enforce ``rules`` on a cgroup v2 directory."""
    insns = program(rules)
    try:
        attach(cgroup_path, insns)
    except OSError as e:
        raise HakoError(f"linux.resources.devices: cannot attach the eBPF device filter to "
                        f"{cgroup_path}: {e.strerror}") from None
