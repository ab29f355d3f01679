"""What a pull shows: a bar per layer on a terminal (podman-like), plain
lines otherwise, nothing with ``--quiet``. ``HAKO_PROGRESS=1|0`` forces the
bars on or off. Every write to the terminal happens under the fork gate
(``httpc.GATE``): a rootless unpack forks while the bars are redrawn."""

from __future__ import annotations

import os
import sys
import threading
import time

from runtime.image import httpc


def human(n: int) -> str:
    if n < 1 << 20:
        return f"{n / 1024:.1f}KiB"
    return f"{n / (1 << 20):.1f}MiB" if n < 1 << 30 else f"{n / (1 << 30):.2f}GiB"


class Display:
    """Per-layer bars on a terminal (redrawn by a thread), plain lines
    otherwise, nothing with --quiet. Writes happen under the fork gate."""

    def __init__(self, quiet: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        force = os.environ.get("HAKO_PROGRESS")
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.quiet = quiet
        self.tty = not quiet and (force == "1" or (tty and force != "0"))
        self.rows: list[dict] = []
        self.drawn = 0
        self.last = ""
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def _write(self, s: str) -> None:
        with httpc.GATE.shared():
            try:
                self.stream.write(s)
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            with self.lock:
                bars, lines = self._render()
                self._write(self._erase() + text + "\n" + bars)
                self.drawn, self.last = lines, bars
        else:
            self._write(text + "\n")

    def add(self, label: str, total: int | None, state: str) -> dict:
        row = {"label": label, "total": total, "done": 0, "state": state, "t0": None}
        with self.lock:
            self.rows.append(row)
        return row

    def set(self, row: dict, state: str, note: str | None = None) -> None:
        row["state"] = state
        if state == "downloading" and row["t0"] is None:
            row["t0"] = time.monotonic()
        if not self.tty and not self.quiet and note:
            self._write(f"{row['label']}: {note}\n")

    def start(self) -> None:
        if self.tty:
            self.redraw()
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self.redraw()

    def redraw(self) -> None:
        with self.lock:
            text, lines = self._render()
            if text == self.last:
                return  # nothing changed: write nothing
            self._write(self._erase() + text)
            self.drawn, self.last = lines, text

    def _erase(self) -> str:
        n = self.drawn
        return f"\x1b[{n}A\r\x1b[J" if n else ""

    def _render(self) -> str:
        import shutil
        width = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
        out = []
        for r in self.rows:
            total, done, st = r["total"], r["done"], r["state"]
            if st == "downloading" and total:
                barw = max(10, width - len(r["label"]) - 30)
                fill = min(barw, done * barw // total) if total else 0
                bar = "=" * max(0, fill - 1) + (">" if fill else "") + "-" * (barw - fill)
                text = f"{r['label']} [{bar}] {human(done)} / {human(total)}"
            elif st == "downloading":
                text = f"{r['label']} {human(done)}"
            else:
                text = f"{r['label']} {st}" + (f" {human(total)}" if total else "")
            out.append(text[:width])
        return "".join(t + "\n" for t in out), len(out)

    def finish(self, summary: str | None = None) -> None:
        """Stop redrawing; the summary goes below the bars."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
            self.redraw()
        if summary and not self.quiet:
            self._write(summary + "\n")
