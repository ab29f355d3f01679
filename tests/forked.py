"""Run a function in a forked child that may install a seccomp filter or change
its scheduling, and wait for it with a deadline (the child is killed after it).

The child's function returns its exit status (an int) and may write to the
pipe fd it gets; it leaves with os._exit, never through pytest.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Result:
    status: int  # raw wait status
    output: bytes

    @property
    def code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    def __str__(self) -> str:
        how = f"exit {self.code}" if self.code is not None else f"signal {self.signal}"
        return f"{how}, output {self.output[-2000:]!r}"


def run(body: Callable[[int], int], timeout: float = 20.0,
        parent: Callable[[int], None] | None = None) -> Result:
    """``body(wfd)`` in a child; ``parent(pid)``, if given, runs meanwhile here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(r)
            code = body(w)
        except BaseException as e:  # noqa: BLE001 - a child never returns to pytest
            try:
                os.write(w, f"\nchild raised {e!r}".encode())
            except BaseException:
                pass
            code = 71
        finally:
            os._exit(code if isinstance(code, int) else 0)
    os.close(w)
    out = bytearray()
    os.set_blocking(r, False)
    deadline = time.monotonic() + timeout
    try:
        if parent is not None:
            parent(pid)
        while True:
            try:
                chunk = os.read(r, 65536)
                if chunk:
                    out += chunk
            except BlockingIOError:
                pass
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                while True:
                    try:
                        chunk = os.read(r, 65536)
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    out += chunk
                return Result(status, bytes(out))
            if time.monotonic() > deadline:
                raise TimeoutError(f"forked child {pid} still running after {timeout}s; "
                                   f"output so far {bytes(out)!r}")
            time.sleep(0.003)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    finally:
        os.close(r)
