"""docker-credential-helpers' protocol: ``docker-credential-<name> get|store|erase``
found on ``$PATH``, the server on stdin, JSON ``{"ServerURL", "Username",
"Secret"}`` back (``get``) or in (``store``). A Username of ``<token>`` means
the Secret is an OAuth2 identity (refresh) token, not a password.

Kept apart from regauth so a pull that needs no helper never forks one. A
helper's answer may hold a secret: errors quote only its first line of
stdout/stderr for failures (helpers print their errors there), never what it
returned on success.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from runtime.errors import HakoError

PREFIX = "docker-credential-"
TIMEOUT = 60.0
NOT_FOUND = "credentials not found in native keychain"
IDENTITY_USER = "<token>"


class HelperError(HakoError):
    pass


def check_name(name: object, where: str) -> str:
    """A helper name is the suffix of a program on $PATH, never a path."""
    if not isinstance(name, str) or not name or "/" in name or "\0" in name \
            or name in (".", ".."):
        raise HelperError(f"{where}: {name!r} is not a credential helper name "
                          f"(the part of {PREFIX}NAME after the dash)")
    return name


def _program(name: str, where: str) -> str:
    path = shutil.which(PREFIX + name)
    if path is None:
        raise HelperError(f"{where}: credential helper {PREFIX}{name} is not in $PATH")
    return path


def _call(name: str, action: str, data: bytes, where: str) -> tuple[int, bytes]:
    prog = _program(name, where)
    try:
        p = subprocess.run([prog, action], input=data, capture_output=True,
                           timeout=TIMEOUT, close_fds=True)
    except subprocess.TimeoutExpired:
        raise HelperError(f"{where}: credential helper {PREFIX}{name} {action} did not "
                          f"answer in {TIMEOUT:.0f}s") from None
    except OSError as e:
        raise HelperError(f"{where}: credential helper {prog}: {e.strerror}") from None
    if p.returncode != 0:
        return p.returncode, (p.stdout.strip() or p.stderr.strip())
    return 0, p.stdout


def _why(out: bytes) -> str:
    line = out.decode(errors="replace").splitlines()[0] if out else ""
    return (line[:200] + "...") if len(line) > 200 else (line or "no message")


def _ask(name: str, action: str, server: str, data: bytes, where: str) -> bytes | None:
    """The helper's stdout; None when it says it holds nothing for server."""
    rc, out = _call(name, action, data, where)
    if rc == 0:
        return out
    if action != "store" and NOT_FOUND in out.decode(errors="replace"):
        return None
    raise HelperError(f"{where}: credential helper {PREFIX}{name} {action} {server}: "
                      f"{_why(out)}")


def get(name: str, server: str, where: str) -> tuple[str, str] | None:
    """(user, secret) the helper holds for server, or None when it has none."""
    out = _ask(name, "get", server, server.encode(), where)
    if out is None:
        return None
    try:
        doc = json.loads(out)
        user, secret = doc.get("Username"), doc.get("Secret")
    except (ValueError, AttributeError):
        user = secret = None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise HelperError(f"{where}: credential helper {PREFIX}{name} get {server}: "
                          "its answer is not JSON with Username and Secret")
    if not secret:
        return None
    return user, secret


def store(name: str, server: str, user: str, secret: str, where: str) -> None:
    data = json.dumps({"ServerURL": server, "Username": user, "Secret": secret}).encode()
    _ask(name, "store", server, data, where)


def erase(name: str, server: str, where: str) -> bool:
    """False when the helper held nothing for server."""
    return _ask(name, "erase", server, server.encode(), where) is not None
