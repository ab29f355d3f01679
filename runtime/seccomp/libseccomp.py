"""libseccomp through ctypes, in the parent only: syscall tables of every
architecture, argument comparisons and the arch dispatch, exported as a raw
BPF program that the init loads without the library."""

from __future__ import annotations

import ctypes
import errno as E
import os

from runtime import log
from runtime.errors import HakoError
from runtime.seccomp.abi import (
    _AUDIT_ARCH_X86_64, _OPTIMIZE_ABOVE, _SCMP_ARCH_X32, BPF_MAXINSNS, RET_ALLOW, RET_ERRNO,
    RET_LOG, RET_TRACE, _enosys_stub,
)


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
