"""Entry point of the frozen hako.

dist/hako's launcher runs ``<build>/hako -I -S -X utf8 -c "import _hako_entry"``
(the build's own interpreter; packaging/layout.py compiles this file to
``lib/python3.x/_hako_entry.pyc``). Every module but the three the interpreter
imports before this runs (encodings, encodings.aliases, encodings.utf_8) is in
one file, ``lib/python3.x/hako.modules``: an index, then each module's
marshalled code. The finder below serves imports from it, after the built-in
and frozen modules and before the path finder (extension modules, anything
else), so a call opens one file per module instead of walking directories,
and the launcher verifies ~25 files instead of ~330 (packaging/README.md).

In PyInstaller's own builds (packaging/measure.py's variants) this is the
script the bootloader runs, with its own importer.
"""

import gc
import sys

# A hako call allocates its modules and exits: the default gen-0 threshold (700)
# runs ~6 collections during the imports of a hot verb for nothing to collect
# (0.25 ms). 10000 still collects in long-lived hako processes (run, hooks).
gc.set_threshold(10000)

if not hasattr(sys, "_MEIPASS"):
    import marshal
    import posix
    from _frozen_importlib import ModuleSpec

    MAGIC = b"HAKOMOD1"

    class _Modules:
        """Finder and loader of hako.modules. Opened per import, never held open:
        a forked container init imports after closing every fd it inherited."""

        def __init__(self, directory: str) -> None:
            self.dir = directory
            self.path = directory + "/hako.modules"
            fd = posix.open(self.path, posix.O_RDONLY | posix.O_CLOEXEC)
            try:
                head = posix.pread(fd, 24, 0)
                if head[:8] != MAGIC or head[8:12] != _magic():
                    raise ImportError(f"{self.path}: not a module file of this interpreter")
                size = int.from_bytes(head[16:24], "little")
                #: name -> (is package, offset, size, path relative to dir)
                self.index = marshal.loads(posix.pread(fd, size, 24))
            finally:
                posix.close(fd)
            self.base = 24 + size

        def find_spec(self, name, path=None, target=None):
            entry = self.index.get(name)
            if entry is None:
                return None
            origin = self.dir + "/" + entry[3]
            spec = ModuleSpec(name, self, origin=origin, is_package=entry[0])
            spec.has_location = True  # __file__: spec/validate.py reads schemas beside it
            if entry[0]:
                spec.submodule_search_locations = [origin.rpartition("/")[0]]
            return spec

        def create_module(self, spec):
            return None

        def exec_module(self, module) -> None:
            entry = self.index[module.__spec__.name]
            fd = posix.open(self.path, posix.O_RDONLY | posix.O_CLOEXEC)
            try:
                data = posix.pread(fd, entry[2], self.base + entry[1])
            finally:
                posix.close(fd)
            if len(data) != entry[2]:
                raise ImportError(f"{self.path}: truncated at {module.__spec__.name}")
            exec(marshal.loads(data), module.__dict__)

    def _magic() -> bytes:
        from _frozen_importlib_external import MAGIC_NUMBER
        return MAGIC_NUMBER

    _at = [getattr(f, "__name__", "") for f in sys.meta_path] + ["PathFinder"]
    sys.meta_path.insert(_at.index("PathFinder"), _Modules(__file__.rpartition("/")[0]))
    sys.frozen = True  # hooks/network/plan.py: a frozen hako runs its hook as $HAKO_LAUNCHER
    sys.argv[0] = "hako"

from runtime.cli import run  # noqa: E402

run()
