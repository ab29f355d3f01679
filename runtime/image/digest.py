"""Content digests (``sha256:<64 hex>``), checked while the bytes go by.

Every blob hako reads from an image (index, manifest, config, layer) is hashed
as it is consumed and compared with the digest that named it; a layer is also
checked against its ``diff_id`` (the digest of the uncompressed tar). Nothing
read from a blob whose digest did not match is kept.
"""

from __future__ import annotations

import hashlib

from runtime.errors import HakoError

ALGORITHMS = ("sha256", "sha512")


class DigestError(HakoError):
    pass


def parse(digest: str, what: str = "digest") -> tuple[str, str]:
    """("sha256", hex) of a well-formed digest; refuses anything that could
    be used as a path component other than lowercase hex."""
    if not isinstance(digest, str) or ":" not in digest:
        raise DigestError(f"{what}: {digest!r} is not a digest (algorithm:hex)")
    algo, _, hexpart = digest.partition(":")
    if algo not in ALGORITHMS:
        raise DigestError(f"{what}: unsupported digest algorithm {algo!r} in {digest}")
    size = 64 if algo == "sha256" else 128
    if len(hexpart) != size or any(c not in "0123456789abcdef" for c in hexpart):
        raise DigestError(f"{what}: malformed {algo} digest {digest!r}")
    return algo, hexpart


def hex_of(digest: str, what: str = "digest") -> str:
    return parse(digest, what)[1]


def of_bytes(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    algo, _ = parse(digest, what)
    got = of_bytes(data, algo)
    if got != digest:
        raise DigestError(f"{what}: digest mismatch: expected {digest}, content is {got}")
    return data


class HashingReader:
    """A read-only file wrapper that hashes what passes through it and counts
    bytes; ``check()`` compares with the expected digest (and size)."""

    def __init__(self, raw, digest: str | None, what: str, *, size: int | None = None,
                 algo: str = "sha256", on_read=None) -> None:
        if digest is not None:
            algo, _ = parse(digest, what)
        self.raw = raw
        self.digest = digest
        self.what = what
        self.size = size
        self.h = hashlib.new(algo)
        self.algo = algo
        self.count = 0
        self.on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.h.update(data)
            self.count += len(data)
            if self.on_read is not None:
                self.on_read(self.count)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return f"{self.algo}:{self.h.hexdigest()}"

    def check(self) -> str:
        got = self.hexdigest()
        if self.size is not None and self.count != self.size:
            raise DigestError(f"{self.what}: size mismatch: expected {self.size} bytes, "
                              f"read {self.count}")
        if self.digest is not None and got != self.digest:
            raise DigestError(f"{self.what}: digest mismatch: expected {self.digest}, "
                              f"content is {got}")
        return got
