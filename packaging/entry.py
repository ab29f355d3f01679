"""Entry point of the frozen hako.

dist/hako's launcher runs ``<build>/hako -I -S -X utf8 -c "import _hako_entry"``
(the build's own interpreter). This module, and every pure-Python module hako
imports, is a frozen module of that interpreter: ``lib/libhakofrozen.so``
(packaging/frozen.py) holds their code and the table the interpreter's
FrozenImporter reads, so imports touch no file. Extension modules (``_json``,
``_ctypes``...) stay files of ``lib/python3.x``, found by the path finder.

The same library takes that command line over (packaging/boot.c) and starts
the interpreter in two phases: only its core (types, builtins, sys, the
built-in and frozen importers) before importing this module. That is all
the hot verbs need, and half of the interpreter's start. Every other verb,
and a hot verb as soon as it imports anything beyond its own modules, first
completes the start (``_hakoboot.finish()``): see ``_core_mode``.

In PyInstaller's own builds (packaging/measure.py's variants) this is the
script the bootloader runs, with its own importer.
"""

import gc
import sys

# A hako call allocates its modules and exits: the default gen-0 threshold (700)
# runs ~6 collections during the imports of a hot verb for nothing to collect
# (0.25 ms). 10000 still collects in long-lived hako processes (run, hooks).
gc.set_threshold(10000)

#: verbs whose ordinary path needs only built-in and frozen modules: the hot
#: ones, which never import os, an extension module or open() a file
#: (tests/test_hot_path.py); none also covers --version and --help
CORE_VERBS = frozenset(("state", "start", "kill", "delete", "list", "ls", None))

try:
    import _hakoboot  # packaging/boot.c: only when it started the interpreter
except ImportError:
    _hakoboot = None


class _Stream:
    """sys.stdout/sys.stderr while only the core is up (the interpreter makes
    its own streams in the second phase): unbuffered writes of UTF-8, with the
    error handler UTF-8 mode gives each stream."""

    def __init__(self, fd: int, errors: str) -> None:
        self.fd = fd
        self.errors = errors
        self.encoding = "utf-8"

    def write(self, text: str) -> int:
        import posix
        view = memoryview(text.encode("utf-8", self.errors))
        while view:
            view = view[posix.write(self.fd, view):]
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        import posix
        return posix.isatty(self.fd)


#: built-in (C) modules the hot verbs import, known to work with only the core up
_CORE_BUILTINS = frozenset(("posix", "fcntl", "select", "marshal", "time", "gc", "errno",
                            "_hakoboot"))


class _CoreGuard:
    """First on sys.meta_path while only the core is up: any import but hako's
    own runtime modules and the built-ins above completes the start first.

    Before the module is made, never during: the second phase imports io,
    abc, codecs, encodings... itself and must not find one of them half
    made (a hot verb that reached ``os`` would have ``abc`` half made when
    ``_abc`` asked). Some built-ins need the second phase anyway (``_signal``
    reads the handlers it sets up)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if not (name in _CORE_BUILTINS or name == "runtime" or name.startswith("runtime.")):
            _finish()
        return None


def _finish() -> None:
    """Complete the interpreter's start (idempotent)."""
    if _hakoboot.is_core():
        if _CoreGuard in sys.meta_path:
            sys.meta_path.remove(_CoreGuard)
        _hakoboot.finish()  # sys.std*, builtins.open, sys.path, PathFinder, signals


def _open(*args, **kwargs):
    _finish()
    import builtins
    return builtins.open(*args, **kwargs)  # io.open now


def _core_mode() -> bool:
    """Stay with the core for this call? Only for the hot verbs, and with a
    way out for anything they might reach off their ordinary path."""
    from runtime.cli import ALIASES, GLOBAL_FLAGS, UsageError, parse_flags
    try:
        g, rest = parse_flags(sys.argv[1:], GLOBAL_FLAGS, stop_at_positional=True)
    except UsageError:
        return False  # the full interpreter reports it, as before
    verb = ALIASES.get(rest[0], rest[0]) if rest else None
    if verb not in CORE_VERBS or g.get("debug"):
        return False
    import builtins
    sys.stdout = sys.__stdout__ = _Stream(1, "surrogateescape")
    sys.stderr = sys.__stderr__ = _Stream(2, "backslashreplace")
    builtins.open = _open
    sys.meta_path.insert(0, _CoreGuard)
    return True


if not hasattr(sys, "_MEIPASS"):
    sys.frozen = True  # hooks/network/plan.py: a frozen hako runs its hook as $HAKO_LAUNCHER
    if _hakoboot is not None:
        sys.argv = list(_hakoboot.argv)
        if _hakoboot.is_core() and not _core_mode():
            _finish()
    sys.argv[0] = "hako"

from runtime.cli import run  # noqa: E402

run()
