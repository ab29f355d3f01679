"""PyInstaller entry point of the frozen hako (packaging/hako.spec)."""

import sys

from runtime.cli import main

sys.exit(main())
