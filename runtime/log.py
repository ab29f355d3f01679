"""Runtime logging in runc's two formats.

Engines read errors from ``--log FILE --log-format json`` (containerd's shim
parses JSON lines ``{"level":"error","msg":...,"time":...}``); people read
stderr. Errors always go to stderr too, so an engine that only captures
stderr (conmon) still shows the message.
"""

import posix
import sys
import time

_log_path: str | None = None
_log_json = False
_debug = False


def configure(path: str | None, fmt: str, debug: bool) -> None:
    global _log_path, _log_json, _debug
    _log_path = path or None
    _log_json = fmt == "json"
    _debug = debug


def _timestamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _write_file(level: str, msg: str) -> None:
    if not _log_path:
        return
    if _log_json:
        from runtime import fastjson
        line = fastjson.dumps({"level": level, "msg": msg, "time": _timestamp()})
    else:
        line = f'time="{_timestamp()}" level={level} msg="{msg}"'
    try:
        fd = posix.open(_log_path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC,
                        0o644)
        try:
            posix.write(fd, (line + "\n").encode())
        finally:
            posix.close(fd)
    except OSError:
        pass


def error(msg: str) -> None:
    msg = " ".join(msg.splitlines())
    # with --log /dev/stderr (runc's default spelling) print only once
    if _log_path not in ("/dev/stderr", "/proc/self/fd/2"):
        _write_file("error", msg)
    try:
        sys.stderr.write(f"hako: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def warn(msg: str) -> None:
    _write_file("warning", msg)
    try:
        sys.stderr.write(f"hako: warning: {msg}\n")
    except (OSError, ValueError):
        pass


def debug(msg: str) -> None:
    if _debug:
        _write_file("debug", msg)
        if not _log_path:
            sys.stderr.write(f"hako: debug: {msg}\n")


def is_debug() -> bool:
    return _debug
