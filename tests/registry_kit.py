"""Registries for the tests and the pull benchmark, all on 127.0.0.1 with free ports:

- ``Registry``: Debian's ``docker-registry`` (distribution 2.8): plain HTTP,
  HTTPS (a test CA, ``make_ca``), htpasswd basic auth, or token auth;
- ``TokenServer``: the token service of the token flow (RS256 JWTs signed
  with ``openssl``, x5c header; users and a public namespace);
- ``FaultProxy``: an HTTP proxy in front of a registry that can answer 429/503,
  tamper with a body, or cut a body short, a given number of times per path,
  and logs every request (method, path, Range);
- ``push``: ``skopeo copy`` from an OCI layout (tests/imagebuild.py) to a registry.

Every process has a timeout and is stopped by ``close()``; all files live in
the directory the caller gives.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


def missing_tools() -> list[str]:
    return [t for t in ("docker-registry", "skopeo", "openssl") if not shutil.which(t)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# ----------------------------------------------------------------------- TLS
def make_ca(d: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost (openssl)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=hako test CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "ext.cnf"
    _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
          "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext])
    # a client certificate (for registries that require one)
    ckey, ccsr, ccrt, cext = d / "client.key", d / "client.csr", d / "client.cert", \
        d / "client-ext.cnf"
    _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", ckey, "-out", ccsr, "-subj", "/CN=hako test client"])
    cext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _run(["openssl", "x509", "-req", "-in", ccsr, "-CA", ca_crt, "-CAkey", ca_key,
          "-CAcreateserial", "-out", ccrt, "-days", "2", "-extfile", cext])
    for p in d.iterdir():
        os.chmod(p, 0o644)
    return {"ca": ca_crt, "cert": crt, "key": key, "client_cert": ccrt, "client_key": ckey}


def htpasswd(path: Path, users: dict[str, str]) -> Path:
    """bcrypt entries (what docker-registry accepts), through libcrypt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    lines = [f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))}"
             for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ registry
class Registry:
    def __init__(self, d: Path, *, tls: dict | None = None, htpasswd_file: Path | None = None,
                 token: "TokenServer | None" = None) -> None:
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = tls
        cfg = ["version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: true",
               "storage:", "  filesystem:", f"    rootdirectory: {self.dir / 'data'}",
               "  delete:", "    enabled: true",
               # a manifest's layer urls: loopback only (none are allowed by default)
               "validation:", "  manifests:", "    urls:", "      allow:",
               "        - '^https?://127\\.0\\.0\\.1:[0-9]+/'",
               "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: hako-test"]
        if tls:
            cfg += ["  tls:", f"    certificate: {tls['cert']}", f"    key: {tls['key']}"]
            if tls.get("require_client_cert"):
                cfg += ["    clientcas:", f"      - {tls['ca']}"]
        if htpasswd_file:
            cfg += ["auth:", "  htpasswd:", "    realm: hako-test", f"    path: {htpasswd_file}"]
        if token:
            cfg += ["auth:", "  token:", f"    realm: {token.url}/token",
                    f"    service: {token.service}", f"    issuer: {token.issuer}",
                    f"    rootcertbundle: {token.cert}"]
        (self.dir / "config.yml").write_text("\n".join(cfg) + "\n")
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_port(self.port, self.proc)
        except BaseException:
            self.close()
            raise RuntimeError("docker-registry did not start: "
                               + (self.dir / "registry.log").read_text()[-2000:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()

    def manifest(self, repo: str, ref: str, creds: tuple[str, str] | None = None
                 ) -> tuple[bytes, str]:
        """(bytes, digest) of a manifest as the registry serves it (no auth)."""
        conn = self._conn()
        try:
            conn.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET manifest {repo}:{ref}: HTTP {r.status}")
            return data, "sha256:" + hashlib.sha256(data).hexdigest()
        finally:
            conn.close()


    def _conn(self):
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=str(self.tls["ca"]))
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> None:
        conn = self._conn()
        try:
            conn.request("PUT", f"/v2/{repo}/manifests/{ref}", body=data,
                         headers={"Content-Type": media_type})
            r = conn.getresponse()
            body = r.read()
            if r.status != 201:
                raise RuntimeError(f"PUT manifest {repo}:{ref}: HTTP {r.status}: {body[:300]}")
        finally:
            conn.close()

    def delete_blob(self, repo: str, digest: str) -> None:
        """Unlink the blob from the repository (it then answers 404 there)."""
        conn = self._conn()
        try:
            conn.request("DELETE", f"/v2/{repo}/blobs/{digest}")
            r = conn.getresponse()
            r.read()
            if r.status != 202:
                raise RuntimeError(f"DELETE blob {repo}@{digest}: HTTP {r.status}")
        finally:
            conn.close()


class BlobServer:
    """Plain HTTP on loopback: GET path -> the bytes given for it (404
    otherwise); every request's path and headers are kept."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                body = body if body is not None else b"not here"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def push(layout: Path, name: str, dest: str, *, all_platforms: bool = False,
         docker_format: bool = False, creds: str | None = None,
         cert_dir: Path | None = None) -> None:
    """skopeo copy oci:LAYOUT:NAME docker://DEST (no TLS verification; a
    client certificate from *cert_dir*)."""
    argv = [SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    if cert_dir:
        argv += ["--dest-cert-dir", str(cert_dir)]
    if all_platforms:
        argv.append("--all")
    if docker_format:
        argv += ["--format", "v2s2"]
    if creds:
        argv += ["--dest-creds", creds]
    argv += [f"oci:{layout}:{name}", f"docker://{dest}"]
    _run(argv, timeout=180, env={**os.environ, "HOME": str(layout.parent)})


# --------------------------------------------------------------- token server
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (hako aborting its other downloads)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """GET /token?service=&scope=&account=: a JWT for the requested scopes.
    Users (Basic auth) get what they ask for; anonymous callers get pull on
    repositories under ``public/`` only; a wrong password gets 401. POST
    /token (OAuth2, grant_type=refresh_token) swaps an identity token of
    ``identities`` for its user's JWT; an unknown one gets 400."""

    def __init__(self, d: Path, users: dict[str, str],
                 identities: dict[str, str] | None = None) -> None:
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.identities = dict(identities or {})
        self.service = "hako-test-registry"
        self.issuer = "hako-test-issuer"
        self.key, self.cert = self.dir / "token.key", self.dir / "token.crt"
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
              "-out", self.cert, "-days", "2", "-subj", "/CN=hako test token signer"])
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             capture_output=True, timeout=30, check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued: list[str] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                server._handle(self)

            def do_POST(self):
                server._handle_post(self)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing = _b64url(json.dumps(header).encode()) + "." + _b64url(
            json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing.encode(), capture_output=True, timeout=30,
                             check=True).stdout
        return signing + "." + _b64url(sig)

    @staticmethod
    def _refuse(h, status: int, body: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h) -> None:
        from urllib.parse import parse_qs, urlsplit
        q = parse_qs(urlsplit(h.path).query)
        user = None
        auth = h.headers.get("Authorization") or ""
        with self.lock:
            self.requests.append({"path": urlsplit(h.path).path, "query": q, "method": "GET",
                                  "auth": auth.split(" ")[0] if auth else None})
        if auth.startswith("Basic "):
            try:
                u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                u, p = "", ""
            if self.users.get(u) != p:
                self._refuse(h, 401, b'{"details":"incorrect username or password"}')
                return
            user = u
        self._issue(h, user, q)

    def _handle_post(self, h) -> None:
        from urllib.parse import parse_qs, urlsplit
        n = int(h.headers.get("Content-Length") or 0)
        form = parse_qs(h.rfile.read(n).decode()) if n else {}
        auth = h.headers.get("Authorization") or ""
        with self.lock:
            self.requests.append({"path": urlsplit(h.path).path, "query": form,
                                  "method": "POST", "url_query": urlsplit(h.path).query,
                                  "auth": auth.split(" ")[0] if auth else None})
        token = (form.get("refresh_token") or [""])[0]
        if form.get("grant_type") != ["refresh_token"] or token not in self.identities:
            self._refuse(h, 400, b'{"error":"invalid_grant"}')
            return
        self._issue(h, self.identities[token], form)

    def _issue(self, h, user: str | None, q: dict) -> None:
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                typ, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                wanted = [a for a in actions.split(",") if a]
                if user is None:
                    wanted = [a for a in wanted if a == "pull"] if name.startswith(
                        "public/") else []
                if typ == "repository" and wanted:
                    access.append({"type": "repository", "name": name, "actions": wanted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        tok = self._sign(claims)
        with self.lock:
            self.issued.append(tok)
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


# ---------------------------------------------------------------- fault proxy
class FaultProxy:
    """A plain-HTTP proxy to *upstream* (host:port of a plain registry).

    ``add(pattern, action, times=1, **kw)``: the next *times* GET requests whose
    path matches the regex get *action*: ``"status"`` (``code``, ``headers``;
    nothing is forwarded), ``"tamper"`` (one byte of the body changed),
    ``"cut"`` (``after`` bytes of the body, then the connection is closed).
    ``log`` lists (method, path, Range header, status sent)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[dict] = []
        self.log: list[tuple] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy._handle(self, "GET")

            def do_HEAD(self):
                proxy._handle(self, "HEAD")

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, pattern: str, action: str, times: int = 1, **kw) -> None:
        with self.lock:
            self.rules.append({"re": re.compile(pattern), "action": action, "left": times, **kw})

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()

    def requests(self, pattern: str = "") -> list[tuple]:
        with self.lock:
            return [x for x in self.log if re.search(pattern, x[1])]

    def _rule(self, method: str, path: str) -> dict | None:
        with self.lock:
            for r in self.rules:
                if r["left"] > 0 and method == "GET" and r["re"].search(path):
                    r["left"] -= 1
                    return r
        return None

    def _handle(self, h, method: str) -> None:
        rule = self._rule(method, h.path)
        rng = h.headers.get("Range")
        if rule and rule["action"] == "status":
            body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS" if rule["code"] == 429
                                           else "UNAVAILABLE", "message": "test fault"}]}).encode()
            h.send_response(rule["code"])
            for k, v in (rule.get("headers") or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            with self.lock:
                self.log.append((method, h.path, rng, rule["code"]))
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items()
                       if k.lower() not in ("host", "connection")}
            conn.request(method, h.path, headers=headers)
            r = conn.getresponse()
            body = r.read()
            status = r.status
            out_headers = [(k, v) for k, v in r.getheaders()
                           if k.lower() not in ("connection", "transfer-encoding",
                                                "content-length")]
        finally:
            conn.close()
        with self.lock:
            self.log.append((method, h.path, rng, status))
        if rule and rule["action"] == "tamper" and body:
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
        h.send_response(status)
        for k, v in out_headers:
            if k.lower() == "location" and v.startswith(f"http://{self.upstream}"):
                v = v.replace(self.upstream, self.host, 1)
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        if rule and rule["action"] == "cut":
            h.send_header("Connection", "close")
            h.end_headers()
            if method == "GET":
                h.wfile.write(body[:rule.get("after", len(body) // 3)])
                h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        h.end_headers()
        if method == "GET":
            h.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
