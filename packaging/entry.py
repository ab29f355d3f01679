"""Entry point of the frozen hako: the launcher runs ``<build>/hako -c "import _hako_entry"``
(packaging/layout.py compiles this file to ``_hako_entry.pyc``)."""

import sys

# hooks/network.py: a frozen hako names itself ($HAKO_LAUNCHER) for its hooks
sys.frozen = True
sys.argv[0] = "hako"

from runtime.cli import run  # noqa: E402

run()
