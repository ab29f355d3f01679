#!/usr/bin/env python3
"""Replace pip's ``hako`` console script with a launcher that starts fast.

pip's script runs the venv's python with ``site``, which processes the venv
and the editable-install hooks: ~20 ms of a ~30 ms ``hako state``. hako
needs only the standard library at run time, so the launcher runs the real
interpreter (not a symlink chain, never a pyenv shim) with ``-I -S``
(isolated, no site) and puts the directory holding the ``runtime`` package
first on sys.path and the venv's site-packages last (only what the standard
library lacks is looked up there: jeepney, for the systemd driver); ``runtime.cli.run`` exits without the interpreter's
teardown. Usage: venv_launcher.py VENV_DIR
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{python} -IS
# hako launcher written by packaging/venv_launcher.py (see there for why)
import gc, sys
gc.set_threshold(10000)  # as packaging/entry.py: no collections during the imports
sys.path.insert(0, {src!r})
sys.path.append({site!r})  # the venv's packages (jeepney for --systemd-cgroup), last: never a stdlib module's way
from runtime.cli import run
run()
"""


def main() -> int:
    venv = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".venv")
    python = os.path.realpath(os.path.join(venv, "bin", "python"))
    import runtime
    src = os.path.dirname(os.path.dirname(os.path.abspath(runtime.__file__)))
    import sysconfig  # run by the venv's python: its site-packages
    site = sysconfig.get_path("purelib")
    target = os.path.join(venv, "bin", "hako")
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(TEMPLATE.format(python=python, src=src, site=site))
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    print(f"fast launcher: {target} -> {python} -IS, source {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
