"""The supervisor's and helper's record in the state directory (network.json, with
start times so that a reused pid is never hit) and :func:`cleanup`, which stops
what is left and removes the files (hako's delete, or the hook at poststop).
"""

from __future__ import annotations

import json
import os

from hooks.network.common import (
    API_SOCKET, CTL_SOCKET, LOG_FILE, OWNED_MARK, PASTA_LOG, RESOLV_FILE, STATE_FILE,
    STOP_TIMEOUT,
)


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None  # gone but for its parent's wait
    return int(rest[19])


def _open_verified(pid: int, start: int) -> int:
    """A pidfd for *pid* if it is still the process that started at *start*, else -1."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return -1
    if _start_time(pid) != start:  # exited, or the pid now names another process
        os.close(fd)
        return -1
    return fd


def _wait_fds(fds: list[int], timeout: float) -> list[int]:
    """Wait until every pidfd in *fds* reports an exit; returns those still alive."""
    import select
    import time
    deadline = time.monotonic() + timeout
    left_fds = list(fds)
    while left_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        p = select.poll()
        for fd in left_fds:
            p.register(fd, select.POLLIN)
        done = {fd for fd, _ in p.poll(int(left * 1000) + 1)}
        left_fds = [fd for fd in left_fds if fd not in done]
    return left_fds


def _read_state(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_state(state_dir: str, data: dict) -> None:
    tmp = os.path.join(state_dir, f".{STATE_FILE}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, os.path.join(state_dir, STATE_FILE))


def cleanup(state_dir: str, *, timeout: float = 5.0) -> None:
    """Stop the supervisor and the helper recorded in *state_dir* (if still
    there) and remove this module's files. Safe to call any number of times.

    The supervisor gets SIGTERM first (it stops and reaps the helper itself);
    whatever is still there after a moment gets SIGKILL."""
    import signal
    info = _read_state(state_dir) or {}
    procs: dict[str, tuple[int, int]] = {}
    for key in ("supervisor", "helper"):
        entry = info.get(key)
        if entry:
            fd = _open_verified(int(entry[0]), int(entry[1]))
            if fd >= 0:
                procs[key] = (int(entry[0]), fd)
    try:
        if procs:
            first = procs.get("supervisor") or procs["helper"]
            try:
                signal.pidfd_send_signal(first[1], signal.SIGTERM)
            except OSError:
                pass
            alive = _wait_fds([fd for _, fd in procs.values()], min(timeout, STOP_TIMEOUT + 1))
            for fd in alive:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except OSError:
                    pass
            _wait_fds(alive, timeout)
            for pid, _ in procs.values():
                try:  # ours when run by the caller (hako run is a subreaper)
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
    finally:
        for _, fd in procs.values():
            os.close(fd)
    for name in (STATE_FILE, API_SOCKET, CTL_SOCKET, LOG_FILE, PASTA_LOG, RESOLV_FILE,
                 f"{RESOLV_FILE}.tmp", f".{STATE_FILE}.tmp"):
        try:
            os.unlink(os.path.join(state_dir, name))
        except OSError:
            pass
    if os.path.exists(os.path.join(state_dir, OWNED_MARK)):
        try:
            os.unlink(os.path.join(state_dir, OWNED_MARK))
            os.rmdir(state_dir)
        except OSError:
            pass
