"""Looking after processes from the outside: pid files, killing and waiting,
and the foreground wait of ``run`` and ``exec`` (signals forwarded, a
terminal bridged)."""

import os
import time

from runtime.errors import HakoError
from runtime.state import proc_stat


def write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.hako-tmp")
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)
    except OSError as e:
        raise HakoError(f"--pid-file: cannot write {path}: {e.strerror}") from None


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL and wait until the process is gone (or a zombie nobody reaps)."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            wpid, _ = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                return
        except ChildProcessError:
            pass
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            return
        time.sleep(0.002)


def wait_forwarding(pid: int, master: int = -1) -> int:
    """Wait for the init, forwarding the signals hako gets to it (and, with a
    terminal, bridging it to ours)."""
    import _signal as signal  # the C module: "signal" imports enum (~4 ms)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in range(1, 32):
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    result: list[int] = []

    def reap(block: bool) -> bool:
        while not result:
            try:
                wpid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                # not our child (no subreaper): poll until it is gone
                while (st := proc_stat(pid)) is not None and st[0] not in ("Z", "X"):
                    time.sleep(0.01)
                result.append(0)
                break
            if wpid == 0:
                return False
            if wpid == pid:
                result.append(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status)
                              else os.WEXITSTATUS(status))
        return True

    if master >= 0:
        from runtime.terminal import bridge
        try:
            bridge(master, lambda: reap(False))
        finally:
            os.close(master)
    reap(True)
    return result[0]
