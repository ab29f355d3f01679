"""Reading and writing cgroupfs files, with errors that name the file.

cgroupfs wants one ``write(2)`` per value (a second write is a second value),
no ``O_CREAT`` (a missing file means "this kernel or controller has no such
knob", which must surface, not create a regular file on a fake root), and
reads that are retried on ``EINTR``. Every failure becomes a one-line
``HakoError`` that says which file, which value and why, because "Invalid
argument" alone is useless to whoever wrote config.json.

``WRITE_LOG``: tests set it to a list to record every (path, value) written,
in order (the devices rules, for one, are only meaningful as a sequence).
"""

from __future__ import annotations

import errno
import os
import time

from runtime.errors import HakoError

WRITE_LOG: list[tuple[str, str]] | None = None

# The kernel populates a new cgroup directory and lets rmdir remove it with
# its files; a fake cgroupfs (tests) replaces these two with emulations.
_mkdir = os.mkdir
_rmdir = os.rmdir


class CgroupFileError(HakoError):
    """A cgroup file operation failed; ``errno`` is kept for callers that care."""

    def __init__(self, msg: str, err: int) -> None:
        super().__init__(msg)
        self.errno = err


def _why(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "no such file (not supported by this kernel or controller not enabled)"
    return e.strerror or str(e)


def write(dirpath: str, name: str, value: str | int, *, what: str = "") -> None:
    """Write one value to ``dirpath/name``. ``what`` names the config field."""
    path = os.path.join(dirpath, name)
    data = str(value)
    if WRITE_LOG is not None:
        WRITE_LOG.append((path, data))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupFileError(f"{what + ': ' if what else ''}cannot open {path}: {_why(e)}",
                              e.errno or 0) from None
    try:
        while True:
            try:
                os.write(fd, data.encode())
                return
            except InterruptedError:
                continue
            except OSError as e:
                raise CgroupFileError(
                    f"{what + ': ' if what else ''}cannot write {data!r} to {path}: {_why(e)}",
                    e.errno or 0) from None
    finally:
        os.close(fd)


def read(dirpath: str, name: str) -> str:
    """The whole file; OSError propagates (callers decide what missing means)."""
    with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
        out = b""
        while True:
            try:
                chunk = f.read(65536)
            except InterruptedError:
                continue
            if not chunk:
                return out.decode()
            out += chunk


def read_or(dirpath: str, name: str, default: str | None = None) -> str | None:
    try:
        return read(dirpath, name)
    except (FileNotFoundError, ProcessLookupError, OSError):
        return default


def read_uint(dirpath: str, name: str) -> int:
    """A single number; "max" reads as 2**64-1 like runc's GetCgroupParamUint."""
    text = read(dirpath, name).strip()
    if text == "max":
        return 2**64 - 1
    v = int(text)
    return max(v, 0)  # negative values (e.g. -1 in cfs_quota) read as 0 like runc


def flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events ...)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_pids(dirpath: str) -> list[int]:
    try:
        text = read(dirpath, "cgroup.procs")
    except FileNotFoundError:
        return []
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:  # threaded cgroup
            text = read(dirpath, "cgroup.threads")
        else:
            raise
    return [int(x) for x in text.split()]


def write_pid(dirpath: str, pid: int) -> None:
    """Move ``pid`` into the cgroup. EINVAL can mean the task is still being
    forked (TASK_NEW): retried a few times as runc does."""
    for attempt in range(5):
        try:
            write(dirpath, "cgroup.procs", pid)
            return
        except CgroupFileError as e:
            if e.errno != errno.EINVAL or attempt == 4:
                raise
            time.sleep(0.03)


def mkdir_p(path: str, mode: int = 0o755) -> list[str]:
    """``mkdir -p`` that returns the directories it made (to undo on error)."""
    made: list[str] = []
    todo = []
    p = path
    while not os.path.isdir(p):
        todo.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(todo):
        try:
            _mkdir(d, mode)
            made.append(d)
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupFileError(f"cannot create cgroup {d}: {e.strerror}", e.errno or 0) from None
    return made


def rmdir_tree(path: str, *, tries: int = 10) -> str | None:
    """Remove a cgroup directory and its sub-cgroups (deepest first).

    A cgroup with a dying task answers EBUSY for a moment: retried with a
    doubling delay (1 ms .. ~0.5 s, as runc's RemovePath). Returns None when
    gone, else a one-line reason.
    """
    try:
        _rmdir(path)
        return None
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path}: {e.strerror}"
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            why = rmdir_tree(e.path, tries=tries)
            if why:
                return why
    delay = 0.001
    for attempt in range(tries + 1):
        try:
            _rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == tries:
                return f"{path}: {e.strerror}"
        time.sleep(delay)
        delay *= 2
    return f"{path}: busy"  # pragma: no cover - loop always returns
