"""The part of ``ctypes`` that runtime/syscalls.py uses, built on ``_ctypes`` alone.

``import ctypes`` costs 3-5 ms cold here (ctypes/__init__.py defines every C
type, function-type caches, and imports struct, types and ctypes._endian for
the byte-swapped structures); ``_ctypes`` alone, plus the dozen types below,
costs ~0.5 ms. create, run and exec load the syscall layer on their way to
fork, and the container's init inherits it, so the difference is paid on
every container start. The classes are defined as ctypes defines them
(CPython's Lib/ctypes/__init__.py), so values behave the same; modules that
need more of ctypes (seccomp's libseccomp binding, the eBPF loader) import
the real one.
"""

from _ctypes import (  # noqa: F401  (re-exported: the subset syscalls.py uses)
    FUNCFLAG_CDECL as _FUNCFLAG_CDECL,
    FUNCFLAG_PYTHONAPI as _FUNCFLAG_PYTHONAPI,
    FUNCFLAG_USE_ERRNO as _FUNCFLAG_USE_ERRNO,
    CFuncPtr as _CFuncPtr,
    Structure,
    _SimpleCData,
    addressof,
    byref,
    dlopen as _dlopen,
    get_errno,
    sizeof,
)


class c_int(_SimpleCData):
    _type_ = "i"


class c_uint(_SimpleCData):
    _type_ = "I"


class c_long(_SimpleCData):
    _type_ = "l"


class c_ulong(_SimpleCData):
    _type_ = "L"


class c_ushort(_SimpleCData):
    _type_ = "H"


class c_void_p(_SimpleCData):
    _type_ = "P"


class c_char(_SimpleCData):
    _type_ = "c"


# Linux, 64-bit (the only targets: see packaging/): as ctypes aliases them
c_int32 = c_int
c_uint32 = c_uint
c_int64 = c_long
c_uint64 = c_ulong
c_size_t = c_ulong
c_ssize_t = c_long


class _FuncPtr(_CFuncPtr):
    """A C function of libc returning int, errno saved (CDLL(use_errno=True))."""
    _flags_ = _FUNCFLAG_CDECL | _FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _PyFuncPtr(_CFuncPtr):
    """The same, called with the GIL held (ctypes.PyDLL): for the Python C API,
    and for a call after which two processes return (clone3: syscalls.py)."""
    _flags_ = _FUNCFLAG_CDECL | _FUNCFLAG_PYTHONAPI | _FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class CDLL:
    """ctypes.CDLL(name, use_errno=True): functions looked up by attribute,
    each object cached (so a ``restype`` set on one sticks)."""

    _func_ = _FuncPtr

    def __init__(self, name: "str | None", use_errno: bool = True) -> None:
        if not use_errno:
            raise ValueError("ctlite.CDLL always saves errno")
        self._name = name
        self._handle = _dlopen(name, 0)  # RTLD_LOCAL, as ctypes' DEFAULT_MODE

    def __getattr__(self, name: str) -> _FuncPtr:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        func = self._func_((name, self))
        func.__name__ = name
        setattr(self, name, func)
        return func


class PyDLL(CDLL):
    """ctypes.PyDLL(name, use_errno=True)."""

    _func_ = _PyFuncPtr


def create_string_buffer(init: bytes, size: int) -> object:
    """A c_char array of ``size`` holding ``init`` (embedded NULs included)."""
    buf = (c_char * size)()
    buf.raw = init
    return buf


def cast(obj: object, typ: type) -> object:
    """Only what syscalls.py casts: a buffer to c_void_p (its address)."""
    if typ is not c_void_p:
        raise TypeError("ctlite.cast: only to c_void_p")
    return c_void_p(addressof(obj))
