"""Layer blobs as uncompressed tar streams: gzip (zlib), bzip2 and xz through the
standard library (imported when a layer needs them), zstd through Debian's
zstd tool in a pipe (Python 3.11 has no zstd module), recognised by their
magic bytes rather than trusted media types."""

from __future__ import annotations

import os
import shutil

from runtime.errors import HakoError


class DecompressError(HakoError):
    """A layer that cannot be read; one line."""


class _Prefixed:
    def __init__(self, head: bytes, raw) -> None:
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.raw.read(n - len(data))
            return data
        return self.raw.read(n)

    def readable(self) -> bool:
        return True


def _decompressor(blob, what: str):
    head = blob.read(6)
    src = _Prefixed(head, blob)
    if head[:2] == b"\x1f\x8b":
        g = _Gunzip(src, what)
        return g, g.close
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return _zstd(src, what)
    try:
        if head[:3] == b"BZh":
            import bz2
            b = bz2.BZ2File(src, "rb")
            return b, b.close
        if head[:6] == b"\xfd7zXZ\x00":
            import lzma
            x = lzma.LZMAFile(src, "rb")
            return x, x.close
    except ImportError as e:  # a lean frozen build may lack them (packaging/hako.spec)
        raise DecompressError(f"{what}: this hako cannot decompress it ({e.name} is missing)") \
            from None
    return src, (lambda: None)


class _Gunzip:
    """gzip through zlib directly, in large steps: zlib's C code checks each
    member's CRC and length; GzipFile would cost a Python call per 8 KiB
    (~0.2 s for 90 MiB). Members follow each other (zero padding between
    them skipped, as gzip does); output is bounded per step (1 MiB)."""

    def __init__(self, src, what: str) -> None:
        import zlib
        self.zlib = zlib
        self.src = src
        self.what = what
        self.d = zlib.decompressobj(31)
        self.tail = b""        # input zlib has not consumed yet
        self.buf = b""
        self.pos = 0
        self.eof = False

    def _more(self) -> bytes:
        zlib = self.zlib
        while True:
            if self.d.eof:
                rest = (self.d.unused_data or self.src.read(1 << 18)).lstrip(b"\x00")
                while not rest:
                    more = self.src.read(1 << 18)
                    if not more:
                        self.eof = True
                        return b""
                    rest = more.lstrip(b"\x00")
                self.d, self.tail = zlib.decompressobj(31), rest
            data = self.tail or self.src.read(1 << 18)
            if not data:
                raise DecompressError(f"{self.what}: gzip data cut short")
            try:
                out = self.d.decompress(data, 1 << 20)
            except zlib.error as e:
                raise DecompressError(f"{self.what}: corrupt gzip data: {e}") from None
            self.tail = self.d.unconsumed_tail
            if out:
                return out

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self.buf[self.pos:]]
            self.buf, self.pos = b"", 0
            while not self.eof:
                parts.append(self._more())
            return b"".join(parts)
        if self.pos >= len(self.buf):
            if self.eof:
                return b""
            self.buf, self.pos = self._more(), 0
        data = self.buf[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.buf = b""


def _zstd(src, what: str):
    """zstd has no stdlib module here: the zstd tool as a filter, fed and
    drained from this process with select (the blob is hashed here; no
    threads, which a later unshare(CLONE_NEWUSER) would refuse)."""
    exe = shutil.which("zstd")
    if exe is None:
        raise DecompressError(f"{what}: a zstd-compressed layer needs the zstd tool (apt-get "
                         "install zstd)")
    f = _PipeFilter(src, [exe, "-dcq"], what)
    return f, f.close


class _PipeFilter:
    def __init__(self, src, argv: list[str], what: str) -> None:
        import subprocess
        self.src = src
        self.what = what
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.inp = self.p.stdin.fileno()
        self.out = self.p.stdout.fileno()
        os.set_blocking(self.inp, False)
        self.pending = b""
        self.in_done = False

    def _close_in(self) -> None:
        if not self.in_done:
            self.in_done = True
            self.p.stdin.close()

    def read(self, n: int = -1) -> bytes:
        import select
        n = n if n and n > 0 else 1 << 20
        while True:
            if not self.in_done and not self.pending:
                self.pending = self.src.read(1 << 16)
                if not self.pending:
                    self._close_in()
            wl = [self.inp] if not self.in_done else []
            r, w, _ = select.select([self.out], wl, [], 60)
            if not r and not w:
                raise DecompressError(f"{self.what}: zstd stalled")
            if w:
                try:
                    k = os.write(self.inp, self.pending)
                    self.pending = self.pending[k:]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    raise DecompressError(f"{self.what}: zstd failed (corrupt layer?)") from None
            if r:
                data = os.read(self.out, n)
                if not data and self.p.wait(timeout=60) != 0:
                    raise DecompressError(f"{self.what}: zstd failed (corrupt layer?)")
                return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._close_in()
        self.p.stdout.close()
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=60)
