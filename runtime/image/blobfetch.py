"""Verified, resumable blob downloads for a Registry: a blob streams into a
file while it is hashed, a connection cut midway resumes at the byte reached
(``Range``), a file a killed pull left is hashed and continued, and a layer's
``urls`` are other sources tried before the registry. The kernel writes the
file back while it streams in (content.Writeback), so the fsync before the
rename waits for the tail only.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from runtime.errors import HakoError
from runtime.image import digest as D
from runtime.image import httpc
from runtime.image.content import Writeback
from runtime.image.registry import (RETRIES, Registry, RegistryError, Stopped,
                                    _retry_after)

CHUNK = 1 << 20


def download(reg: Registry, repo: str, desc: dict, path: str, what: str, *, progress=None,
             stop: threading.Event | None = None) -> None:
    """The blob into *path* (continuing a partial file there), verified;
    on a mismatch the file is removed and DigestError raised. A layer's
    ``urls`` (non-distributable layers) are tried first, in order, as
    podman does, and the registry after them: the digest decides, not
    the source."""
    failed = []
    for url in desc.get("urls") or ():
        try:
            _download(reg, repo, desc, path, what, progress, stop, url)
            return
        except Stopped:
            raise
        except HakoError as e:
            reg.log(f"{e}: trying the next source")
            failed.append(str(e))
    try:
        _download(reg, repo, desc, path, what, progress, stop, None)
    except RegistryError as e:
        if failed:
            raise RegistryError(f"{e}; its urls failed too ({failed[-1]})",
                                status=e.status, codes=e.codes) from None
        raise


def _download(reg: Registry, repo: str, desc: dict, path: str, what: str, progress, stop,
              url: str | None) -> None:
    dg = desc["digest"]
    algo, _ = D.parse(dg, what)
    size = desc.get("size")
    if url is not None:
        what = f"{what} from {url}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    ok = False
    try:
        with os.fdopen(fd, "r+b", buffering=0) as f:
            st = _Partial(f, algo)
            st.rehash()
            if size is not None and st.offset > size:
                st.restart()
            leftover = st.offset > 0  # from a pull that was killed
            while True:
                _fetch_all(reg, repo, dg, st, size, what, progress, stop, url)
                got = f"{algo}:{st.h.hexdigest()}"
                if got == dg and (size is None or st.offset == size):
                    break
                if leftover:
                    # what the killed pull left was not the start of this blob
                    reg.log(f"{what}: the partial download left earlier does not "
                             "match: starting again")
                    leftover = False
                    st.restart()
                    continue
                if size is not None and st.offset != size:
                    raise D.DigestError(f"{what}: size mismatch: expected {size} bytes, "
                                        f"got {st.offset}")
                raise D.DigestError(f"{what}: digest mismatch: expected {dg}, content "
                                    f"is {got}")
            ok = True
    finally:
        if not ok:
            try:
                os.unlink(path)
            except OSError:
                pass


def _fetch_all(reg: Registry, repo: str, dg: str, st: "_Partial", size: int | None, what: str,
               progress, stop, url: str | None) -> None:
    """From st.offset to the end, resuming after connection failures (a
    layer's url gets one retry: the registry is the next source)."""
    failures = 0
    retries = RETRIES if url is None else 1
    while True:
        if stop is not None and stop.is_set():
            raise Stopped()
        try:
            _fetch_range(reg, repo, dg, st, size, what, progress, stop, url)
            return
        except httpc.TransportError as e:
            if e.tls or (e.refused and url is not None):
                raise
            failures += 1
            if failures > retries:
                raise httpc.TransportError(f"{what}: {e} (gave up after "
                                           f"{retries} retries)") from None
            reg.log(f"{what}: {e}: resuming at byte {st.offset}")
            time.sleep(_retry_after(None, failures - 1))


def _fetch_range(reg: Registry, repo: str, dg: str, st: "_Partial", size: int | None, what: str,
                 progress, stop, url: str | None) -> None:
    """One GET from st.offset to the end; st follows every byte written,
    so a failure midway leaves it where the next Range starts."""
    if size is not None and st.offset == size and st.offset:
        return  # a complete file left by an earlier pull: only verified
    headers = {"Range": f"bytes={st.offset}-"} if st.offset else {}
    if url is None:
        resp = reg.get(repo, f"blobs/{dg}", what, headers)
    else:
        resp = reg._foreign_client().request("GET", url, headers)
    try:
        if resp.status == 206 and st.offset:
            cr = resp.header("Content-Range") or ""
            if not cr.startswith(f"bytes {st.offset}-"):
                raise RegistryError(f"{what}: asked for bytes {st.offset}- and got "
                                    f"{cr or 'no Content-Range'}")
        elif resp.status == 200:
            if st.offset:
                reg.log(f"{what}: the registry ignored Range: starting again")
                st.restart()
        elif url is not None:
            resp.read_all(1 << 16, what)
            raise RegistryError(f"{what}: HTTP {resp.status}", status=resp.status)
        else:
            raise reg._refusal(resp, what)
        st.f.seek(st.offset)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = resp.readinto(view)
            if not n:
                break
            if stop is not None and stop.is_set():
                raise Stopped()
            st.add(view[:n])
            if size is not None and st.offset > size:
                raise D.DigestError(f"{what}: size mismatch: more than the {size} bytes "
                                    "the manifest gives")
            if progress is not None:
                progress(st.offset)
        left = resp.resp.length
        if (size is not None and st.offset < size) or left:
            raise httpc.TransportError(f"{url or reg.registry}: connection closed at byte "
                                       f"{st.offset} of {size if size is not None else '?'}")
    finally:
        resp.close()


class _Partial:
    """A blob file being written and the hash of what it holds."""

    def __init__(self, f, algo: str) -> None:
        self.f = f
        self.algo = algo
        self.offset = 0
        with httpc.GATE.shared():
            self.h = hashlib.new(algo)
            self.wb = Writeback(f.fileno())

    def rehash(self) -> None:
        """Hash what an earlier, interrupted pull left in the file."""
        self.f.seek(0)
        while True:
            b = self.f.read(CHUNK)
            if not b:
                return
            self.h.update(b)
            self.offset += len(b)

    def restart(self) -> None:
        self.f.seek(0)
        self.f.truncate(0)
        self.offset = self.wb.done = 0
        with httpc.GATE.shared():
            self.h = hashlib.new(self.algo)

    def add(self, data) -> None:
        self.f.write(data)
        self.h.update(data)
        self.offset += len(data)
        self.wb.wrote(self.offset)
