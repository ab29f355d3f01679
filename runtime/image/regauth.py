"""Registry credentials in the files podman and docker write
(containers-auth.json(5)), read for pulls and written by ``hako images login``.

Read, first match wins: ``--authfile`` (or ``$REGISTRY_AUTH_FILE``), else
``$XDG_RUNTIME_DIR/containers/auth.json`` (root without it:
``/run/containers/0/auth.json``), ``$XDG_CONFIG_HOME/containers/auth.json``
(``~/.config/...``), ``~/.docker/config.json``, ``~/.dockercfg``. An entry's key
is ``host[:port]`` or ``host[:port]/namespace[/repo]`` (the longest that matches
the repository wins), docker's ``https://index.docker.io/v1/`` for docker.io;
its ``auth`` is base64 of ``user:password``. Credential helpers
(``credHelpers``, ``credsStore``) are not run.

Written: the first of those paths (``--authfile`` or the runtime one), mode
0600, replaced atomically. Secrets are never printed: errors name the file
and the registry, never the content.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from runtime.errors import HakoError
from runtime.image import reference as R

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io",
                   "registry-1.docker.io")


class AuthError(HakoError):
    pass


class Credentials:
    """user + password; repr/str never show the password."""

    __slots__ = ("user", "password", "source")

    def __init__(self, user: str, password: str, source: str) -> None:
        self.user = user
        self.password = password
        self.source = source

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, from {self.source})"

    __str__ = __repr__

    def basic(self) -> str:
        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def parse_creds(text: str) -> Credentials:
    """--creds USER[:PASSWORD] (podman's syntax; the password may hold ':')."""
    user, sep, pw = text.partition(":")
    if not user:
        raise AuthError("--creds: expected USER:PASSWORD (the user name is empty)")
    if not sep:
        import getpass
        import sys
        if not sys.stdin.isatty():
            raise AuthError("--creds: expected USER:PASSWORD (no password, and no terminal "
                            "to ask for it)")
        pw = getpass.getpass(f"Password for {user}: ")
    return Credentials(user, pw, "--creds")


def _runtime_path() -> str | None:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "containers", "auth.json")
    if os.geteuid() == 0:
        return "/run/containers/0/auth.json"
    return None


def read_paths(authfile: str | None = None) -> list[str]:
    authfile = authfile or os.environ.get("REGISTRY_AUTH_FILE")
    if authfile:
        return [authfile]
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    cfg = xdg if xdg and os.path.isabs(xdg) else os.path.join(home, ".config")
    out = [p for p in (_runtime_path(),) if p]
    out += [os.path.join(cfg, "containers", "auth.json"),
            os.path.join(home, ".docker", "config.json"), os.path.join(home, ".dockercfg")]
    return out


def write_path(authfile: str | None = None) -> str:
    authfile = authfile or os.environ.get("REGISTRY_AUTH_FILE")
    if authfile:
        return authfile
    p = _runtime_path()
    if p:
        return p
    xdg = os.environ.get("XDG_CONFIG_HOME")
    cfg = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"),
                                                               ".config")
    return os.path.join(cfg, "containers", "auth.json")


def _load(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AuthError(f"auth file {path}: {e.strerror}") from None
    try:
        doc = json.loads(data or b"{}")
    except ValueError:
        raise AuthError(f"auth file {path}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise AuthError(f"auth file {path}: not a JSON object")
    if path.endswith(".dockercfg") and "auths" not in doc:
        doc = {"auths": doc}  # the legacy format: the entries at the top
    return doc


def _key_host(key: str) -> str:
    k = key
    for p in ("https://", "http://"):
        if k.startswith(p):
            k = k[len(p):]
    k = k.rstrip("/")
    if k.endswith("/v1") or k.endswith("/v2"):
        k = k[:-3]
    return k


def _candidates(registry: str, repository: str) -> list[str]:
    """Keys to look up, most specific first."""
    parts = repository.split("/")
    out = [f"{registry}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    out.append(registry)
    return out


def _decode(entry: dict, key: str, path: str) -> Credentials | None:
    auth = entry.get("auth")
    if not isinstance(auth, str) or not auth:
        return None
    try:
        raw = base64.b64decode(auth, validate=False).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError(f"auth file {path}: the entry for {key} is not base64 of "
                        "user:password") from None
    user, sep, pw = raw.partition(":")
    if not sep or not user:
        raise AuthError(f"auth file {path}: the entry for {key} is not base64 of "
                        "user:password")
    return Credentials(user, pw, path)


def lookup(registry: str, repository: str = "", authfile: str | None = None
           ) -> Credentials | None:
    """Credentials for registry (host[:port]) and repository, or None."""
    wanted = _candidates(registry, repository) if repository else [registry]
    for path in read_paths(authfile):
        doc = _load(path)
        if not doc:
            continue
        auths = doc.get("auths") or {}
        if not isinstance(auths, dict):
            continue
        by_host: dict[str, tuple[str, dict]] = {}
        for k, v in auths.items():
            if isinstance(v, dict):
                h = _key_host(k)
                if h in DOCKER_HUB_KEYS:
                    h = R.DOCKER_HUB
                by_host.setdefault(h, (k, v))
        for want in wanted:
            if want in by_host:
                k, v = by_host[want]
                c = _decode(v, k, path)
                if c is not None:
                    return c
    return None


def store_login(registry: str, creds: Credentials, authfile: str | None = None) -> str:
    """Write the entry; returns the file."""
    path = write_path(authfile)
    doc = _load(path) or {}
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise AuthError(f"auth file {path}: \"auths\" is not an object")
    key = registry
    auths[key] = {"auth": base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode()}
    _write(path, doc)
    return path


def remove_login(registry: str | None, authfile: str | None = None) -> tuple[str, list[str]]:
    """Drop *registry*'s entries (every entry with None); (file, removed keys)."""
    path = write_path(authfile)
    doc = _load(path)
    auths = (doc or {}).get("auths") or {}
    if registry is None:
        gone = list(auths)
    else:
        host = R.DOCKER_HUB if registry in DOCKER_HUB_KEYS else registry
        gone = [k for k in auths if _key_host(k) == host
                or (host == R.DOCKER_HUB and _key_host(k) in DOCKER_HUB_KEYS)
                or k.startswith(host + "/")]
    if not gone:
        return path, []
    for k in gone:
        del auths[k]
    _write(path, doc)
    return path, gone


def _write(path: str, doc: dict) -> None:
    d = os.path.dirname(path) or "."
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent="\t")
            f.write("\n")
        os.rename(tmp, path)
    except OSError as e:
        raise AuthError(f"auth file {path}: {e.strerror}") from None
