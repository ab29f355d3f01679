"""A small HTTP/1.1 client for registries, on http.client + ssl.

Why not a library: hako is frozen with the standard library only, and a
registry pull needs little: kept-alive connections per host (a pool shared
by the download threads), TLS contexts per registry (certs.d), redirects
that drop credentials when they leave the host, and streaming bodies. Retries
and Range resumption are the registry client's (``registry``), which knows
what may be repeated. Imported by ``hako images``/``hako bundle`` only.

Fork safety: the pull's download threads run while the rootless unpack
forks a child into a user namespace. Sections that may hold libc/OpenSSL
locks (name resolution, connect, TLS handshake, new hash objects) run under
``GATE.shared()``; ``hold_gate_across_fork()`` makes ``os.fork`` take the gate
exclusively, so the child never inherits one of those locks held.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import urllib.parse
from contextlib import contextmanager

from runtime.errors import HakoError

TIMEOUT = 60.0
MAX_REDIRECTS = 5


class TransportError(HakoError):
    """The connection failed (refused, reset, timed out, TLS): maybe transient."""

    def __init__(self, msg: str, *, tls: bool = False, refused: bool = False) -> None:
        super().__init__(msg)
        self.tls = tls
        self.refused = refused


class _Gate:
    """A shared/exclusive lock: many risky sections, or one fork."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.readers = 0
        self.writer = False

    @contextmanager
    def shared(self):
        with self.cond:
            while self.writer:
                self.cond.wait()
            self.readers += 1
        try:
            yield
        finally:
            with self.cond:
                self.readers -= 1
                if not self.readers:
                    self.cond.notify_all()

    def acquire_exclusive(self) -> None:
        self.cond.acquire()
        while self.writer or self.readers:
            self.cond.wait()
        self.writer = True
        # keep the condition's own lock released: the child must not inherit it held
        self.cond.release()

    def release_exclusive(self) -> None:
        with self.cond:
            self.writer = False
            self.cond.notify_all()

    def reset_in_child(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.readers = 0
        self.writer = False


GATE = _Gate()
_hooked = False


def hold_gate_across_fork() -> None:
    global _hooked
    if not _hooked:
        os.register_at_fork(before=GATE.acquire_exclusive,
                            after_in_parent=GATE.release_exclusive,
                            after_in_child=GATE.reset_in_child)
        _hooked = True


class Response:
    """A response whose body is read by the caller; close() gives the
    connection back to the pool when the body was read to the end."""

    def __init__(self, client: "Client", key: tuple, conn, resp, url: str) -> None:
        self.client = client
        self.key = key
        self.conn = conn
        self.resp = resp
        self.url = url
        self.status = resp.status
        self.headers = resp.headers

    def header(self, name: str) -> str | None:
        return self.resp.getheader(name)

    def read(self, n: int = -1) -> bytes:
        try:
            return self.resp.read(n) if n >= 0 else self.resp.read()
        except http.client.IncompleteRead as e:
            raise TransportError(f"{_host(self.url)}: connection closed after "
                                 f"{len(e.partial)} more bytes (incomplete body)") from None
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(f"{_host(self.url)}: {_why(e)}") from None

    def readinto(self, buf) -> int:
        try:
            return self.resp.readinto(buf)
        except http.client.IncompleteRead as e:
            raise TransportError(f"{_host(self.url)}: connection closed mid-body "
                                 f"({len(e.partial)} bytes)") from None
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(f"{_host(self.url)}: {_why(e)}") from None

    def read_all(self, limit: int, what: str) -> bytes:
        n = self.resp.getheader("Content-Length")
        if n and n.isdigit() and int(n) > limit:
            self.close()
            raise HakoError(f"{what}: {n} bytes, more than the {limit >> 20} MiB allowed")
        data = self.read(limit + 1)
        if len(data) > limit:
            self.close()
            raise HakoError(f"{what}: more than the {limit >> 20} MiB allowed")
        self.close()
        return data

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if self.resp.isclosed() and not self.resp.will_close:
            self.client._give_back(self.key, conn)
        else:
            self.client._forget(conn)
            self.resp.close()
            conn.close()


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _why(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e}"
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower() if e.strerror[0].isupper() else e.strerror
    return f"{type(e).__name__}: {e}"


class Client:
    """Connections per (scheme, host, port), shared by threads."""

    def __init__(self, tls_context, timeout: float = TIMEOUT) -> None:
        self.tls_context = tls_context  # (host[:port]) -> ssl.SSLContext
        self.timeout = timeout
        self.lock = threading.Lock()
        self.idle: dict[tuple, list] = {}
        self.active: set = set()

    def abort(self) -> None:
        """Shut down every connection in use (threads blocked reading return)."""
        with self.lock:
            conns = list(self.active)
        for c in conns:
            try:
                if c.sock is not None:
                    c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _give_back(self, key: tuple, conn) -> None:
        with self.lock:
            self.active.discard(conn)
            self.idle.setdefault(key, []).append(conn)

    def _forget(self, conn) -> None:
        with self.lock:
            self.active.discard(conn)

    def _take(self, key: tuple):
        with self.lock:
            lst = self.idle.get(key)
            return lst.pop() if lst else None

    def close(self) -> None:
        with self.lock:
            conns = [c for lst in self.idle.values() for c in lst]
            self.idle.clear()
        for c in conns:
            c.close()

    def _new(self, key: tuple):
        scheme, host, port = key
        if scheme == "https":
            ctx = self.tls_context(f"{host}:{port}" if port else host)
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        with GATE.shared():
            try:
                conn.connect()
            except ssl.SSLCertVerificationError as e:
                conn.close()
                raise TransportError(f"{_netloc(key)}: {_why(e)}", tls=True) from None
            except ssl.SSLError as e:
                conn.close()
                raise TransportError(f"{_netloc(key)}: {_why(e)}", tls=True) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(f"{_netloc(key)}: {_why(e)}",
                                     refused=isinstance(e, ConnectionRefusedError)) from None
        return conn

    def request(self, method: str, url: str, headers: dict | None = None, *,
                follow: bool = True, body: bytes | None = None) -> Response:
        """Send; follow redirects (Authorization only to the same host)."""
        headers = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._once(method, url, headers, body)
            if not follow or resp.status not in (301, 302, 303, 307, 308):
                return resp
            loc = resp.header("Location")
            resp.read()
            resp.close()
            if not loc:
                raise HakoError(f"{_host(url)}: redirect ({resp.status}) without a Location")
            new = urllib.parse.urljoin(url, loc)
            if _host(new) != _host(url) or urllib.parse.urlsplit(new).scheme != \
                    urllib.parse.urlsplit(url).scheme:
                headers.pop("Authorization", None)
            if method == "POST" and resp.status in (301, 302, 303):
                method, body = "GET", None  # as browsers and Go's client do
                headers.pop("Content-Type", None)
            url = new
        raise HakoError(f"{_host(url)}: more than {MAX_REDIRECTS} redirects")

    def _once(self, method: str, url: str, headers: dict, body: bytes | None = None
              ) -> Response:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise HakoError(f"{url}: unsupported URL scheme {u.scheme!r}")
        key = (u.scheme, u.hostname, u.port)
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        hdrs = {"User-Agent": "hako", "Host": u.netloc, **headers}
        for attempt in (0, 1):
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = self._new(key)
            with self.lock:
                self.active.add(conn)
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self._forget(conn)
                conn.close()
                if reused and attempt == 0 and method in ("GET", "HEAD"):
                    continue  # a kept-alive connection the server had closed
                raise TransportError(f"{u.netloc}: {_why(e)}",
                                     tls=isinstance(e, ssl.SSLError)) from None
            return Response(self, key, conn, resp, url)
        raise AssertionError("unreachable")


def _netloc(key: tuple) -> str:
    return f"{key[1]}:{key[2]}" if key[2] else key[1]
