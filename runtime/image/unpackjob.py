"""The unpack of one layer (run as root, or as root of the store's user
namespace): the blob streamed through both digests into the layer's
temporary directory. Kept apart from ``store`` so that the store's
bookkeeping and this forked job stay small."""

from __future__ import annotations

import errno
import os
import shutil

from runtime.image import digest as D
from runtime.image.decompress import _decompressor


def rmtrees(paths: list[str]) -> None:
    """rm -rf each path, making read-only directories writable on the way."""
    def onerror(func, p, exc_info):
        e = exc_info[1]
        if isinstance(e, FileNotFoundError):
            return
        if isinstance(e, PermissionError) or getattr(e, "errno", 0) in (errno.EACCES,
                                                                       errno.EPERM):
            parent = os.path.dirname(p)
            try:
                os.chmod(parent, 0o700)
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, 0o700)
                    shutil.rmtree(p, onerror=_ignore)
                else:
                    os.unlink(p)
                return
            except OSError:
                pass
        raise e

    for p in paths:
        if not os.path.lexists(p):
            continue
        if os.path.isdir(p) and not os.path.islink(p):
            try:
                os.chmod(p, 0o700)
            except OSError:
                pass
            shutil.rmtree(p, onerror=onerror)
        else:
            os.unlink(p)
    return None


def _ignore(*_a) -> None:
    pass



# --------------------------------------------------------------- the unpack job
def unpack_job(img, layer, diff: str, lowers: list[str], rootless: bool, stale: list[str],
                what: str, label: str) -> dict:
    """Runs as root (or root of the user namespace): clean the leftovers of
    earlier attempts, then stream the blob through both digests into *diff*.
    On any failure the partial tree is removed before the error goes up."""
    from runtime.image.progress import Progress
    from runtime.image.unpack import unpack_tar
    rmtrees(stale)
    warnings: list[str] = []
    try:
        f, size = img.open_layer(layer)
        prog = Progress(f"{label} {(layer.digest or layer.diff_id)[7:19]}", size)
        try:
            blob = D.HashingReader(f, layer.digest, what, size=size, on_read=prog.update)
            stream, closer = _decompressor(blob, what)
            tar = D.HashingReader(stream, layer.diff_id, f"{what} (uncompressed, diff_id)")
            try:
                res = unpack_tar(tar, diff, what=what, rootless=rootless, lowers=lowers,
                                 warn=warnings.append)
                tar.drain()
            finally:
                closer()
            blob.drain()
            blob.check()
            tar.check()
        finally:
            f.close()
        prog.done(f"{label} {(layer.digest or layer.diff_id)[7:19]}: unpacked "
                  f"{res.entries} entries")
    except BaseException:
        rmtrees([os.path.join(diff, n) for n in os.listdir(diff)])
        raise
    out = res.to_json()
    out["warnings"] = warnings[:50]
    return out
