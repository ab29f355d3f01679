"""Entry point of the frozen hako.

dist/hako's launcher runs ``<build>/hako -I -S -X utf8 -c "import _hako_entry"``
(the build's own interpreter). This module, and every pure-Python module hako
imports, is a frozen module of that interpreter: ``lib/libhakofrozen.so``
(packaging/frozen.py) holds their code and the table the interpreter's
FrozenImporter reads, so imports touch no file. Extension modules (``_json``,
``_ctypes``...) stay files of ``lib/python3.x``, found by the path finder.

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
    sys.frozen = True  # hooks/network/plan.py: a frozen hako runs its hook as $HAKO_LAUNCHER
    sys.argv[0] = "hako"

from runtime.cli import run  # noqa: E402

run()
