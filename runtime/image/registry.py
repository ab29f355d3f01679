"""A client of one registry (OCI distribution spec, registry API v2).

- Scheme: HTTPS with the system CAs plus certs.d; plain HTTP is tried after
  HTTPS fails only for insecure registries (``--tls-verify=false``,
  ``insecure = true`` in registries.conf) and localhost ones.
- Auth, from the server's ``WWW-Authenticate`` challenge: anonymous, Basic,
  or Bearer (a token from realm/service/scope, with the credentials when
  there are any, or by OAuth2 POST for a helper's identity token; tokens
  are cached per scope and refreshed on a 401).
- Retries: connection failures, 408/429/5xx, up to ``RETRIES`` times, waiting
  ``Retry-After`` (capped) or a growing back-off.
- Manifests and small blobs (configs) are read whole and verified here;
  layers stream into files through blobfetch.py (resumed with ``Range``).

Nothing here prints: secrets never reach an error message (errors name the
registry, the user and the status, never a header).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse

from runtime.errors import HakoError
from runtime.image import digest as D
from runtime.image import httpc, regconf
from runtime.image import reference as R
from runtime.image.regauth import Credentials

RETRIES = 5
MAX_WAIT = 30.0
MAX_MANIFEST = 8 << 20
MAX_CONFIG = 32 << 20
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class RegistryError(HakoError):
    """A refusal from the registry (not found, denied ...)."""

    def __init__(self, msg: str, *, status: int | None = None, codes=()) -> None:
        super().__init__(msg)
        self.status = status
        self.codes = tuple(codes)

    @property
    def not_found(self) -> bool:
        return self.status == 404 or bool({"MANIFEST_UNKNOWN", "NAME_UNKNOWN",
                                           "BLOB_UNKNOWN"} & set(self.codes))


class AuthFailed(RegistryError):
    pass


class Stopped(Exception):
    """Another download failed: this one stops."""


def parse_challenge(header: str) -> tuple[str, dict]:
    """('bearer', {realm, service, scope}) from a WWW-Authenticate value."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        k = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            j, buf = i + 1, []
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(rest[j])
                j += 1
            v, i = "".join(buf), j + 1
        else:
            j = rest.find(",", i)
            j = n if j < 0 else j
            v, i = rest[i:j].strip(), j
        params[k] = v
    return scheme.lower(), params


def _retry_after(value: str | None, attempt: int) -> float:
    backoff = min(MAX_WAIT, 0.25 * (2 ** attempt))
    if not value:
        return backoff
    value = value.strip()
    if value.isdigit():
        return min(MAX_WAIT, float(value))
    try:
        from email.utils import parsedate_to_datetime
        return max(0.0, min(MAX_WAIT, parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError, IndexError):
        return backoff


def _errors(body: bytes) -> tuple[str, list[str]]:
    """The registry's error text and codes from its JSON body."""
    try:
        doc = json.loads(body)
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs:
            codes = [str(e.get("code")) for e in errs if isinstance(e, dict)]
            msgs = [str(e.get("message") or e.get("code")) for e in errs if isinstance(e, dict)]
            return "; ".join(m for m in msgs if m)[:300], codes
    except (ValueError, AttributeError):
        pass
    return "", []


def tls_context_for(registry: str, *, verify: bool, cert_dir: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # create_default_context's settings
    if verify:
        regconf.system_cas(ctx)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cas, pairs = regconf.tls_material(regconf.cert_dirs(registry, cert_dir))
    try:
        for ca in cas:
            ctx.load_verify_locations(cafile=ca)
        for cert, key in pairs[:1]:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise regconf.ConfigError(f"{registry}: certificates in "
                                  f"{', '.join(regconf.cert_dirs(registry, cert_dir))}: "
                                  f"{getattr(e, 'strerror', None) or e}") from None
    return ctx


class Registry:
    """One registry host (and its auth state), shared by the download threads."""

    def __init__(self, registry: str, *, insecure: bool, tls_verify: bool = True,
                 creds: Credentials | None = None, cert_dir: str | None = None,
                 client: httpc.Client | None = None, log=None) -> None:
        self.registry = registry
        self.host = R.api_host(registry)
        # plain HTTP only for insecure registries and localhost
        self.allow_http = insecure or not tls_verify or R.is_localhost(registry)
        self.tls_verify = tls_verify and not insecure
        self.creds = creds
        self.cert_dir = cert_dir
        self._ctx: ssl.SSLContext | None = None
        self.client = client or httpc.Client(self._tls)
        self._foreign: httpc.Client | None = None  # for layers' urls (other hosts)
        self.base: str | None = None          # scheme://host after ping()
        self.challenge: tuple[str, dict] | None = None
        self.tokens: dict[str, str] = {}      # scope -> bearer token
        self.lock = threading.Lock()
        self.log = log or (lambda msg: None)

    def close(self) -> None:
        self.client.close()
        if self._foreign is not None:
            self._foreign.close()

    def abort(self) -> None:
        self.client.abort()
        if self._foreign is not None:
            self._foreign.abort()

    def _foreign_client(self) -> httpc.Client:
        """Another host's TLS: the system CAs, never the registry's certs.d or
        credentials."""
        with self.lock:
            if self._foreign is None:
                ctx = ssl.create_default_context()
                self._foreign = httpc.Client(lambda hostport: ctx)
            return self._foreign

    def _tls(self, hostport: str) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = tls_context_for(self.registry, verify=self.tls_verify,
                                        cert_dir=self.cert_dir)
        return self._ctx

    # ------------------------------------------------------------------ ping
    def ping(self) -> None:
        """Find the scheme and the auth challenge (GET /v2/)."""
        if self.base is not None:
            return
        errors = []
        for scheme in ("https", "http") if self.allow_http else ("https",):
            url = f"{scheme}://{self.host}/v2/"
            try:
                resp = self._send("GET", url, {})
            except httpc.TransportError as e:
                errors.append(f"{scheme}: {e}")
                continue
            body = resp.read_all(1 << 16, f"{self.registry} /v2/")
            if resp.status == 401:
                ch = resp.header("WWW-Authenticate")
                if ch:
                    self.challenge = parse_challenge(ch)
            elif resp.status not in (200, 401):
                msg, _ = _errors(body)
                errors.append(f"{scheme}: GET /v2/: HTTP {resp.status}"
                              + (f" ({msg})" if msg else " (not a registry?)"))
                continue
            self.base = f"{scheme}://{self.host}"
            self.log(f"{self.registry}: API at {self.base}, auth "
                     f"{self.challenge[0] if self.challenge else 'none'}")
            return
        hint = "" if self.allow_http else \
            " (a plain-HTTP registry needs --tls-verify=false or insecure = true)"
        raise httpc.TransportError(f"{self.registry}: cannot reach the registry: "
                                   f"{'; '.join(errors)}{hint}")

    def _send(self, method: str, url: str, headers: dict, body: bytes | None = None
              ) -> httpc.Response:
        """One request with retries of transient failures."""
        for attempt in range(RETRIES + 1):
            try:
                resp = self.client.request(method, url, headers, body=body)
            except httpc.TransportError as e:
                if e.tls or attempt == RETRIES or (e.refused and self.base is None):
                    raise  # (nothing listens there at first contact: no point waiting)
                self.log(f"{self.registry}: {e}: retrying")
                time.sleep(_retry_after(None, attempt))
                continue
            if resp.status in _RETRY_STATUS and attempt < RETRIES:
                wait = _retry_after(resp.header("Retry-After"), attempt)
                resp.read()
                resp.close()
                self.log(f"{self.registry}: HTTP {resp.status}: retrying in {wait:.1f}s")
                time.sleep(wait)
                continue
            return resp
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ auth
    def _auth_header(self, scope: str) -> dict:
        if not self.challenge:
            return {}
        scheme, params = self.challenge
        if scheme == "basic":
            try:
                return {"Authorization": self.creds.basic()} if self.creds else {}
            except HakoError as e:
                raise AuthFailed(f"{self.registry}: {e}") from None
        if scheme == "bearer":
            with self.lock:
                tok = self.tokens.get(scope)
            if tok is None:
                tok = self._token(params, scope)
                with self.lock:
                    self.tokens[scope] = tok
            return {"Authorization": "Bearer " + tok}
        raise AuthFailed(f"{self.registry}: unsupported authentication scheme {scheme!r}")

    def _token(self, params: dict, scope: str | None) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthFailed(f"{self.registry}: Bearer challenge without a realm")
        if not realm.startswith("https://") and not self.allow_http:
            raise AuthFailed(f"{self.registry}: token realm {realm} is not HTTPS")
        if self.creds and self.creds.identity_token:
            resp = self._oauth2_refresh(realm, params, scope)
        else:
            q = {}
            if params.get("service"):
                q["service"] = params["service"]
            if scope:
                q["scope"] = scope
            if self.creds:
                q["account"] = self.creds.user
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(q)
            headers = {"Authorization": self.creds.basic()} if self.creds else {}
            resp = self._send("GET", url, headers)
        body = resp.read_all(1 << 20, f"{self.registry}: token")
        if self.creds and self.creds.identity_token and resp.status in (400, 401, 403):
            raise AuthFailed(f"{self.registry}: the token server refused the identity "
                             f"token from {self.creds.source} (HTTP {resp.status}; log "
                             "in again)", status=resp.status)
        if resp.status in (401, 403):
            if self.creds:
                raise AuthFailed(f"{self.registry}: authentication failed for user "
                                 f"{self.creds.user} (invalid username or password; token "
                                 f"server: HTTP {resp.status})", status=resp.status)
            raise AuthFailed(f"{self.registry}: authentication required (log in with `hako "
                             f"images login {self.registry}`, or give --creds)",
                             status=resp.status)
        if resp.status != 200:
            raise AuthFailed(f"{self.registry}: token server {urllib.parse.urlsplit(realm).netloc}"
                             f": HTTP {resp.status}", status=resp.status)
        try:
            doc = json.loads(body)
            tok = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            tok = None
        if not isinstance(tok, str) or not tok:
            raise AuthFailed(f"{self.registry}: the token server's answer has no token")
        return tok

    def _oauth2_refresh(self, realm: str, params: dict, scope: str | None
                        ) -> httpc.Response:
        """The distribution spec's OAuth2 form: an identity token is a refresh
        token, exchanged by POST (it never goes into a URL)."""
        form = {"grant_type": "refresh_token", "refresh_token": self.creds.password,
                "client_id": "hako"}
        if params.get("service"):
            form["service"] = params["service"]
        if scope:
            form["scope"] = scope
        body = urllib.parse.urlencode(form).encode()
        return self._send("POST", realm, {"Content-Type": "application/x-www-form-urlencoded",
                                          "Content-Length": str(len(body))}, body)

    def check_login(self) -> bool:
        """Do the credentials work? False when the registry needs none."""
        self.ping()
        if not self.challenge:
            return False
        scheme, params = self.challenge
        if scheme == "bearer":
            self._token(params, None)
            return True
        resp = self._send("GET", f"{self.base}/v2/", self._auth_header(""))
        resp.read_all(1 << 16, f"{self.registry} /v2/")
        if resp.status == 401:
            raise AuthFailed(f"{self.registry}: authentication failed for user "
                             f"{self.creds.user if self.creds else '?'} (invalid username or "
                             "password)", status=401)
        if resp.status != 200:
            raise RegistryError(f"{self.registry}: GET /v2/: HTTP {resp.status}",
                                status=resp.status)
        return True

    def get(self, repo: str, path: str, what: str, headers: dict | None = None
            ) -> httpc.Response:
        """GET /v2/<repo>/<path> with auth (one re-auth on 401)."""
        self.ping()
        scope = f"repository:{repo}:pull"
        url = f"{self.base}/v2/{repo}/{path}"
        for attempt in (0, 1):
            resp = self._send("GET", url, {**(headers or {}), **self._auth_header(scope)})
            if resp.status != 401:
                return resp
            ch = resp.header("WWW-Authenticate")
            body = resp.read_all(1 << 16, what)
            if attempt == 0 and ch:
                new = parse_challenge(ch)
                with self.lock:
                    changed = self.challenge != new
                    self.challenge = new
                    had_token = self.tokens.pop(scope, None) is not None
                if changed or (new[0] == "bearer" and had_token):
                    continue  # first contact, another scope, or an expired token
            msg, codes = _errors(body)
            if self.challenge and self.challenge[0] == "basic" and self.creds:
                raise AuthFailed(f"{what}: authentication failed for user "
                                 f"{self.creds.user} (invalid username or password)",
                                 status=401, codes=codes)
            who = f"user {self.creds.user}" if self.creds else \
                "anonymous access (log in with `hako images login`, or give --creds)"
            raise AuthFailed(f"{what}: unauthorized for {who}"
                             + (f": {msg}" if msg else ""), status=401, codes=codes)
        raise AssertionError("unreachable")

    def _refusal(self, resp: httpc.Response, what: str) -> RegistryError:
        body = resp.read_all(1 << 16, what)
        msg, codes = _errors(body)
        if resp.status == 404 or "NAME_UNKNOWN" in codes or "MANIFEST_UNKNOWN" in codes:
            return RegistryError(f"{what}: not found" + (f" ({msg})" if msg else ""),
                                 status=resp.status, codes=codes)
        if resp.status == 403:
            return RegistryError(f"{what}: access denied" + (f" ({msg})" if msg else ""),
                                 status=403, codes=codes)
        return RegistryError(f"{what}: HTTP {resp.status}" + (f" ({msg})" if msg else ""),
                             status=resp.status, codes=codes)

    # ------------------------------------------------------------ manifests
    def manifest(self, repo: str, ref: str, what: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, verified when
        *ref* is a digest (and against Docker-Content-Digest otherwise)."""
        resp = self.get(repo, f"manifests/{ref}", what, {"Accept": MANIFEST_ACCEPT})
        if resp.status != 200:
            raise self._refusal(resp, what)
        data = resp.read_all(MAX_MANIFEST, what)
        if ref.startswith(("sha256:", "sha512:")):
            D.verify_bytes(data, ref, what)
            digest = ref
        else:
            digest = D.of_bytes(data)
            header = resp.header("Docker-Content-Digest")
            if header and header.startswith("sha256:") and header != digest:
                raise D.DigestError(f"{what}: digest mismatch: the registry says {header}, "
                                    f"content is {digest}")
        mt = (resp.header("Content-Type") or "").split(";")[0].strip()
        return data, mt, digest

    # ----------------------------------------------------------------- blobs
    def blob_bytes(self, repo: str, desc: dict, what: str, limit: int = MAX_CONFIG) -> bytes:
        dg = desc["digest"]
        resp = self.get(repo, f"blobs/{dg}", what)
        if resp.status != 200:
            raise self._refusal(resp, what)
        data = resp.read_all(limit, what)
        if desc.get("size") is not None and len(data) != desc["size"]:
            raise D.DigestError(f"{what}: size mismatch: expected {desc['size']} bytes, "
                                f"got {len(data)}")
        return D.verify_bytes(data, dg, what)
