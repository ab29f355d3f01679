"""Progress of long operations on a terminal (stderr), nothing otherwise.

``HAKO_PROGRESS=1`` forces it on (and ``0`` off), e.g. to see it through a pipe;
forced on, short operations are shown too (from their first update).
"""

from __future__ import annotations

import os
import sys
import time


def _enabled() -> bool:
    force = os.environ.get("HAKO_PROGRESS")
    if force in ("0", "1"):
        return force == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class Progress:
    def __init__(self, label: str, total: int | None, *, enabled: bool | None = None,
                 interval: float = 0.1) -> None:
        self.label = label
        self.total = total
        self.enabled = _enabled() if enabled is None else enabled
        self.quiet_first = os.environ.get("HAKO_PROGRESS") != "1"
        self.interval = interval
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        if now - self.start < 0.3 and not self.shown and self.quiet_first:
            return  # short operations stay quiet
        if self.total:
            pct = min(100, done * 100 // self.total)
            text = f"{self.label}: {_mib(done)} / {_mib(self.total)} ({pct}%)"
        else:
            text = f"{self.label}: {_mib(done)}"
        self._write("\r" + text + "\x1b[K")
        self.shown = True

    def done(self, text: str | None = None) -> None:
        if not self.enabled:
            return
        if self.shown or text:
            msg = text or f"{self.label}: done"
            self._write(f"\r{msg} ({time.monotonic() - self.start:.1f}s)\x1b[K\n")

    @staticmethod
    def _write(s: str) -> None:
        try:
            sys.stderr.write(s)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
