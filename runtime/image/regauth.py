"""Registry credentials in the files podman and docker write
(containers-auth.json(5)), read for pulls and written by ``hako images login``.

Read, first match wins: ``--authfile`` (or ``$REGISTRY_AUTH_FILE``), else
``$XDG_RUNTIME_DIR/containers/auth.json`` (root without it:
``/run/containers/0/auth.json``), ``$XDG_CONFIG_HOME/containers/auth.json``
(``~/.config/...``), ``~/.docker/config.json``, ``~/.dockercfg``. An entry's key
is ``host[:port]`` or ``host[:port]/namespace[/repo]`` (the longest that matches
the repository wins), docker's ``https://index.docker.io/v1/`` for docker.io;
its ``auth`` is base64 of ``user:password``.

Credential helpers (credhelper.py), in each file, as podman and docker: a
registry named in ``credHelpers`` is asked of that helper only (its ``auths``
entry is not used); otherwise the ``auths`` entry; otherwise ``credsStore``, the
helper docker keeps every login in. A helper with nothing for the registry
passes on to the next file. ``login``/``logout`` store in and erase from the
helper that the written file names for the registry.

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

HUB_SERVER = "https://index.docker.io/v1/"  # what docker gives its helpers for docker.io

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io",
                   "registry-1.docker.io")


class AuthError(HakoError):
    pass


class Credentials:
    """user + password; repr/str never show the password. An identity token
    (a helper's ``<token>`` user) is an OAuth2 refresh token, only good for a
    token server."""

    __slots__ = ("user", "password", "source", "identity_token")

    def __init__(self, user: str, password: str, source: str,
                 identity_token: bool = False) -> None:
        self.user = user
        self.password = password
        self.source = source
        self.identity_token = identity_token

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, from {self.source})"

    __str__ = __repr__

    def basic(self) -> str:
        if self.identity_token:
            raise AuthError(f"the credentials from {self.source} are an identity token, "
                            "which only a registry with a token server accepts")
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


def _host_keys(table: dict) -> dict[str, str]:
    """host[:port] -> the key as written (docker.io's spellings folded)."""
    out: dict[str, str] = {}
    for k in table:
        h = _key_host(k)
        out.setdefault(R.DOCKER_HUB if h in DOCKER_HUB_KEYS else h, k)
    return out


def _helper_for(doc: dict, registry: str, path: str) -> tuple[str, str, bool] | None:
    """(helper, server to give it, from credsStore?) for registry in doc."""
    from runtime.image import credhelper
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        key = _host_keys(helpers).get(registry)
        if key is not None:
            name = credhelper.check_name(helpers[key], f"auth file {path}: "
                                                       f"credHelpers[{key!r}]")
            return name, key, False
    store = doc.get("credsStore")
    if store:
        name = credhelper.check_name(store, f"auth file {path}: credsStore")
        return name, HUB_SERVER if registry == R.DOCKER_HUB else registry, True
    return None


def _from_helper(name: str, server: str, path: str) -> Credentials | None:
    from runtime.image import credhelper
    got = credhelper.get(name, server, f"auth file {path}")
    if got is None:
        return None
    user, secret = got
    source = f"{credhelper.PREFIX}{name} ({path})"
    if user == credhelper.IDENTITY_USER:
        return Credentials(user, secret, source, identity_token=True)
    return Credentials(user, secret, source)


def lookup(registry: str, repository: str = "", authfile: str | None = None
           ) -> Credentials | None:
    """Credentials for registry (host[:port]) and repository, or None."""
    wanted = _candidates(registry, repository) if repository else [registry]
    for path in read_paths(authfile):
        doc = _load(path)
        if not doc:
            continue
        helper = _helper_for(doc, registry, path)
        if helper is not None and not helper[2]:  # credHelpers: that helper only
            c = _from_helper(helper[0], helper[1], path)
            if c is not None:
                return c
            continue
        auths = doc.get("auths") or {}
        if isinstance(auths, dict):
            entries = {k: v for k, v in auths.items() if isinstance(v, dict)}
            by_host = {h: (k, entries[k]) for h, k in _host_keys(entries).items()}
            for want in wanted:
                if want in by_host:
                    k, v = by_host[want]
                    c = _decode(v, k, path)
                    if c is not None:
                        return c
        if helper is not None:  # credsStore
            c = _from_helper(helper[0], helper[1], path)
            if c is not None:
                return c
    return None


def store_login(registry: str, creds: Credentials, authfile: str | None = None) -> str:
    """Write the entry, or hand it to the file's helper; returns where it went."""
    path = write_path(authfile)
    doc = _load(path) or {}
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise AuthError(f"auth file {path}: \"auths\" is not an object")
    helper = _helper_for(doc, registry, path)
    if helper is not None:
        from runtime.image import credhelper
        name, server, from_store = helper
        credhelper.store(name, server, creds.user, creds.password, f"auth file {path}")
        if not from_store:
            return f"{credhelper.PREFIX}{name}"
        auths[registry] = {}  # docker's placeholder: the secret is in the store
        _write(path, doc)
        return f"{credhelper.PREFIX}{name} ({path})"
    key = registry
    auths[key] = {"auth": base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode()}
    _write(path, doc)
    return path


def remove_login(registry: str | None, authfile: str | None = None) -> tuple[str, list[str]]:
    """Drop *registry*'s entries (every entry with None), in the file and in its
    helpers; (file, removed keys)."""
    path = write_path(authfile)
    doc = _load(path) or {}
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        raise AuthError(f"auth file {path}: \"auths\" is not an object")
    if registry is None:
        gone = list(auths)
    else:
        host = R.DOCKER_HUB if registry in DOCKER_HUB_KEYS else registry
        gone = [k for k in auths if _key_host(k) == host
                or (host == R.DOCKER_HUB and _key_host(k) in DOCKER_HUB_KEYS)
                or k.startswith(host + "/")]
    erased = _erase_in_helpers(doc, registry, path)
    for k in gone:
        del auths[k]
    if gone:
        _write(path, doc)
    return path, sorted(set(gone) | set(erased))


def _erase_in_helpers(doc: dict, registry: str | None, path: str) -> list[str]:
    """Erase from the helpers the file names; the registries some helper held."""
    from runtime.image import credhelper
    where = f"auth file {path}"
    if registry is not None:
        helper = _helper_for(doc, registry, path)
        if helper is None:
            return []
        return [registry] if credhelper.erase(helper[0], helper[1], where) else []
    out = []
    helpers = doc.get("credHelpers")
    for key, name in (helpers.items() if isinstance(helpers, dict) else ()):
        name = credhelper.check_name(name, f"{where}: credHelpers[{key!r}]")
        if credhelper.erase(name, key, where):
            out.append(key)
    store = doc.get("credsStore")
    auths = doc.get("auths")
    if store and isinstance(auths, dict):
        name = credhelper.check_name(store, f"{where}: credsStore")
        for key in auths:
            h = _key_host(key)
            server = HUB_SERVER if h in DOCKER_HUB_KEYS else key
            if credhelper.erase(name, server, where):
                out.append(key)
    return out


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
