"""Registry configuration as podman reads it: containers-registries.conf(5)
and the certs.d directories (containers-certs.d(5)).

registries.conf: ``$CONTAINERS_REGISTRIES_CONF`` if set, else
``~/.config/containers/registries.conf`` when it exists (it replaces the
system file, as in podman), else ``/etc/containers/registries.conf``; then the
``registries.conf.d/*.conf`` drop-ins next to it, in name order. Read:

- ``unqualified-search-registries``: where short names are looked for, in
  order (none configured: docker.io, as docker does);
- ``[aliases]``: short name -> qualified name;
- ``[[registry]]`` with ``prefix``/``location`` (rewrites), ``insecure``,
  ``blocked`` and ``[[registry.mirror]]`` (``location``, ``insecure``,
  ``pull-from-mirror`` all|digest-only|tag-only), tried before the location;
- the v1 tables ``[registries.search|insecure|block] registries = [...]``.

certs.d: ``HOST:PORT/`` (or ``HOST/``) under ``$XDG_CONFIG_HOME/containers/certs.d``
(``~/.config/...``), ``/etc/containers/certs.d`` and ``/etc/docker/certs.d``:
``*.crt`` are CAs added to the system ones, ``NAME.cert`` + ``NAME.key`` a
client certificate. ``--cert-dir DIR`` replaces them with one flat directory.
"""

from __future__ import annotations

import os

from runtime.errors import HakoError
from runtime.image import reference as R


class ConfigError(HakoError):
    pass


def _home() -> str:
    return os.path.expanduser("~")


def _config_home() -> str:
    x = os.environ.get("XDG_CONFIG_HOME")
    return x if x and os.path.isabs(x) else os.path.join(_home(), ".config")


def conf_paths() -> list[str]:
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if env:
        main = env
    else:
        user = os.path.join(_config_home(), "containers", "registries.conf")
        main = user if os.path.exists(user) else "/etc/containers/registries.conf"
    out = [main]
    d = main[:-len(".conf")] + ".conf.d" if main.endswith(".conf") else main + ".d"
    try:
        out += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".conf")]
    except OSError:
        pass
    return out


class Endpoint:
    """One place to pull a reference from: a mirror or the location."""

    __slots__ = ("ref", "insecure", "mirror")

    def __init__(self, ref: R.Reference, insecure: bool, mirror: bool) -> None:
        self.ref = ref
        self.insecure = insecure
        self.mirror = mirror

    def __repr__(self) -> str:
        return f"Endpoint({self.ref}, insecure={self.insecure}, mirror={self.mirror})"


class RegistriesConf:
    def __init__(self) -> None:
        self.search: list[str] | None = None
        self.aliases: dict[str, str] = {}
        self.registries: dict[str, dict] = {}   # prefix -> table
        self.files: list[str] = []

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, paths: list[str] | None = None) -> "RegistriesConf":
        import tomllib
        conf = cls()
        for p in paths if paths is not None else conf_paths():
            try:
                with open(p, "rb") as f:
                    doc = tomllib.load(f)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise ConfigError(f"{p}: {e.strerror}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{p}: not valid TOML: {e}") from None
            conf.files.append(p)
            conf._merge(doc, p)
        return conf

    def _merge(self, doc: dict, path: str) -> None:
        def strings(v, key: str) -> list[str]:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{path}: {key}: expected a list of strings")
            return v
        if "unqualified-search-registries" in doc:
            self.search = strings(doc["unqualified-search-registries"],
                                  "unqualified-search-registries")
        aliases = doc.get("aliases") or {}
        if not isinstance(aliases, dict):
            raise ConfigError(f"{path}: aliases: expected a table")
        for k, v in aliases.items():
            if not isinstance(v, str):
                raise ConfigError(f"{path}: aliases.{k}: expected a string")
            self.aliases[k] = v
        regs = doc.get("registry") or []
        if not isinstance(regs, list):
            raise ConfigError(f"{path}: registry: expected [[registry]] tables")
        for i, t in enumerate(regs):
            if not isinstance(t, dict):
                raise ConfigError(f"{path}: registry[{i}]: expected a table")
            prefix = t.get("prefix") or t.get("location")
            if not isinstance(prefix, str) or not prefix:
                raise ConfigError(f"{path}: registry[{i}]: needs a prefix or a location")
            if prefix.startswith("*.") and t.get("location"):
                raise ConfigError(f"{path}: registry[{i}]: a wildcard prefix ({prefix}) "
                                  "cannot have a location")
            mirrors = t.get("mirror") or []
            if not isinstance(mirrors, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("location"), str) for m in mirrors):
                raise ConfigError(f"{path}: registry[{i}].mirror: each needs a location")
            self.registries[prefix] = t
        v1 = doc.get("registries")
        if isinstance(v1, dict):
            for kind in ("search", "insecure", "block"):
                lst = (v1.get(kind) or {}).get("registries") if isinstance(
                    v1.get(kind), dict) else None
                if lst is None:
                    continue
                for reg in strings(lst, f"registries.{kind}.registries"):
                    if kind == "search":
                        self.search = (self.search or []) + [reg]
                    else:
                        t = self.registries.setdefault(reg, {"prefix": reg})
                        t["insecure" if kind == "insecure" else "blocked"] = True

    # ------------------------------------------------------------- resolution
    def search_registries(self) -> list[str]:
        return list(self.search) if self.search is not None else [R.DOCKER_HUB]

    def candidates(self, ref: R.Reference) -> list[R.Reference]:
        """The qualified references a (possibly short) reference stands for."""
        if ref.qualified:
            return [ref]
        alias = self.aliases.get(ref.repository)
        if alias:
            target = R.parse(alias)
            if not target.qualified:
                raise ConfigError(f"alias {ref.repository} = {alias!r}: not a qualified name")
            return [R.Reference(target.registry, target.repository,
                                ref.tag or target.tag, ref.digest or target.digest)]
        regs = self.search_registries()
        if not regs:
            raise ConfigError(f"short name {ref}: no unqualified-search-registries are "
                              f"configured ({', '.join(self.files) or 'no registries.conf'}): "
                              "use a fully qualified name")
        return [ref.with_registry(r) for r in regs]

    def _match(self, name: str) -> tuple[str, dict] | None:
        """The [[registry]] whose prefix matches *name* best (longest)."""
        best = None
        for prefix, t in self.registries.items():
            if prefix.startswith("*."):
                host = name.split("/", 1)[0]
                if not host.endswith(prefix[1:]):
                    continue
                matched = host
            elif name == prefix or name.startswith(prefix.rstrip("/") + "/"):
                matched = prefix
            else:
                continue
            if best is None or len(matched) > len(best[0]):
                best = (matched, t)
        return best

    def endpoints(self, ref: R.Reference) -> list[Endpoint]:
        """Mirrors (in order) then the location; refuses blocked registries."""
        m = self._match(ref.name)
        if m is None:
            return [Endpoint(ref, False, False)]
        matched, t = m
        if t.get("blocked"):
            raise ConfigError(f"{ref}: registry {t.get('prefix')} is blocked in registries.conf")
        rest = ref.name[len(matched):]
        out = []
        for mirror in t.get("mirror") or []:
            when = mirror.get("pull-from-mirror") or "all"
            if (when == "digest-only" and not ref.digest) or (when == "tag-only" and ref.digest):
                continue
            out.append(Endpoint(ref.with_name(mirror["location"].rstrip("/") + rest),
                                bool(mirror.get("insecure")), True))
        loc = t.get("location") or matched
        out.append(Endpoint(ref.with_name(loc.rstrip("/") + rest), bool(t.get("insecure")),
                            False))
        return out

    def insecure(self, registry: str) -> bool:
        m = self._match(registry)
        return bool(m and m[1].get("insecure"))


# ------------------------------------------------------------------------ certs.d
def cert_dirs(registry: str, cert_dir: str | None = None) -> list[str]:
    """Existing certs.d directories for *registry* (host[:port]), user's first."""
    if cert_dir:
        return [cert_dir]
    bases = [os.path.join(_config_home(), "containers", "certs.d"),
             "/etc/containers/certs.d", "/etc/docker/certs.d"]
    return [os.path.join(b, registry) for b in bases if os.path.isdir(os.path.join(b, registry))]


def tls_material(dirs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(CA files, [(client cert, key)]) found in *dirs*."""
    cas, pairs = [], []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise ConfigError(f"certificate directory {d}: {e.strerror}") from None
        for n in names:
            p = os.path.join(d, n)
            if n.endswith(".crt"):
                cas.append(p)
            elif n.endswith(".cert"):
                key = p[:-5] + ".key"
                if not os.path.exists(key):
                    raise ConfigError(f"{p}: client certificate without its key {key}")
                pairs.append((p, key))
            elif n.endswith(".key") and not os.path.exists(p[:-4] + ".cert"):
                raise ConfigError(f"{p}: key without its client certificate "
                                  f"{p[:-4]}.cert")
    return cas, pairs


def system_cas(ctx) -> None:
    """The system CAs. From the hashed directory when there is one: OpenSSL
    reads a CA from it when a chain needs it, where the bundle file is parsed
    whole (~60 ms, paid even by a localhost registry that answers plain HTTP)."""
    import ssl
    p = ssl.get_default_verify_paths()
    if not os.environ.get(p.openssl_cafile_env) and p.capath and os.path.isdir(p.capath):
        try:
            hashed = any(len(n) == 10 and n.endswith(".0") for n in os.listdir(p.capath))
        except OSError:
            hashed = False
        if hashed:
            ctx.load_verify_locations(capath=p.capath)
            return
    ctx.load_default_certs()
