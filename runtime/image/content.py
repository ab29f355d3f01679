"""The store's content area: layer blobs as a registry serves them, kept
until their layer is unpacked (containerd's split of content and snapshots).

    downloads/<hex>          a blob being downloaded (flock on <hex>.lock;
                             a killed pull's file is re-hashed and continued)
    blobs/sha256/<hex>       a complete, verified blob

``hako images pull`` only fills this area (and records the image); ``hako
bundle`` unpacks a layer from its blob the first time a bundle needs it, then
drops the blob (the unpacked layer replaces it: hako never pushes). A blob is
renamed in only after it was verified against its digest and size while
streamed and fsync'ed, so a crash never leaves a partial file under
``blobs/``; a file there of the wrong size does not count as present, and the
unpack verifies the digest again (a blob that fails is removed).
"""

from __future__ import annotations

import fcntl
import os

from runtime.image import digest as D


class Content:
    def __init__(self, store_path: str) -> None:
        self.dir = os.path.join(store_path, "blobs", "sha256")
        self.downloads = os.path.join(store_path, "downloads")

    def init(self) -> None:
        for d in (self.dir, self.downloads):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.dir, D.hex_of(digest, "blob"))

    def has(self, digest: str | None, size: int | None = None) -> bool:
        """A complete blob (of *size* bytes when the manifest gives it)."""
        if not digest or not digest.startswith("sha256:"):
            return False
        try:
            st = os.lstat(self.path(digest))
        except (OSError, ValueError):
            return False
        return (st.st_mode & 0o170000) == 0o100000 and (size is None or st.st_size == size)

    def commit(self, tmp: str, digest: str) -> None:
        """A verified download into place: its data on disk before its name."""
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path(digest))

    def remove(self, digest: str) -> bool:
        try:
            os.unlink(self.path(digest))
            return True
        except (OSError, ValueError):
            return False

    def digests(self) -> list[str]:
        try:
            return [f"sha256:{n}" for n in sorted(os.listdir(self.dir)) if len(n) == 64]
        except FileNotFoundError:
            return []


_SFR = []


class Writeback:
    """Has the kernel write a download back while it is still streaming in
    (sync_file_range, SYNC_FILE_RANGE_WRITE: it does not wait), so that the
    fsync before the blob is renamed in waits for the tail only, not for the
    whole blob (~55 ms for 32 MiB here)."""

    STEP = 4 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = 0
        if not _SFR:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            fn = getattr(libc, "sync_file_range", None)
            if fn is not None:
                fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            _SFR.append(fn)

    def wrote(self, end: int) -> None:
        if end - self.done >= self.STEP and _SFR[0] is not None:
            _SFR[0](self.fd, self.done, end - self.done, 2)  # errors: fsync reports them
            self.done = end


def _records_layers(store) -> list[tuple[str, str, int | None]]:
    """(diff_id, blob digest, size) of every layer of every image record."""
    out = []
    for rec in store.images():
        sizes = rec.get("sizes") or []
        for i, (d, b) in enumerate(zip(rec.get("layers") or [], rec.get("blobs") or [])):
            out.append((d, b, sizes[i] if i < len(sizes) else None))
    return out


def source_for(store, layer, records=None):
    """*layer* (a LayerRef) as it can be unpacked from a blob the store
    holds: its own, else another image's blob of the same diff_id (the same
    layer compressed otherwise). None when there is none."""
    from runtime.image.source import LayerRef
    if store.content.has(layer.digest, layer.size):
        return layer
    for d, b, size in records if records is not None else _records_layers(store):
        if d == layer.diff_id and b != layer.digest and store.content.has(b, size):
            return LayerRef(b, d, "", size, "")
    return None


def available(store, layer, records=None) -> bool:
    """The layer is unpacked, or can be without the network."""
    return store.is_complete(layer.diff_id) or source_for(store, layer, records) is not None


def image_available(store, rec: dict) -> bool:
    from runtime.image.source import LayerRef
    records = _records_layers(store)
    sizes = rec.get("sizes") or []
    return all(available(store, LayerRef(b, d, "", sizes[i] if i < len(sizes) else None, ""),
                         records)
               for i, (d, b) in enumerate(zip(rec.get("layers") or [], rec.get("blobs") or [])))


def drop_unpacked(store, digests_and_diff_ids) -> None:
    """Blobs whose layer is now unpacked are no longer needed."""
    for dg, diff_id in digests_and_diff_ids:
        if dg and store.is_complete(diff_id):
            store.content.remove(dg)


def gc(store, *, downloads: bool = False) -> list[str]:
    """Remove the blobs no image needs (unreferenced, or their layer is
    unpacked) and, with *downloads*, the partial downloads nobody is
    continuing. Under the store's exclusive lock (pulls and bundles hold it
    shared). Returns the removed digests."""
    if not os.path.isdir(store.path):
        return []
    with store.lock_store(exclusive=True):
        need = {b for d, b, _ in _records_layers(store) if not store.is_complete(d)}
        gone = [dg for dg in store.content.digests() if dg not in need
                and store.content.remove(dg)]
        if downloads:
            _clean_downloads(store.content.downloads)
    return gone


def _clean_downloads(path: str) -> None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for n in names:
        if n.endswith(".lock"):
            continue
        lockp = os.path.join(path, n + ".lock")
        fd = os.open(lockp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a pull is downloading it
            for p in (os.path.join(path, n), lockp):
                try:
                    os.unlink(p)
                except OSError:
                    pass
        finally:
            os.close(fd)
