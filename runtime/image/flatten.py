"""The vfs driver: the store's layers applied, bottom first, into one private tree.

The layers are in overlay format (``unpack``), so flattening follows the
overlay rules: a character device 0:0 deletes the path below it, an opaque
directory (``*.overlay.opaque=y``) drops what the layers below put in it, a
non-directory replaces whatever was there, and a directory merges into a
directory (its attributes win). Hard links within a layer stay hard links.
File data is reflinked where the filesystem can (FICLONE), else copied with
copy_file_range. Overlay xattrs are not copied.

Runs in the container's init (root of its user namespace when rootless), so
every owner the layers have can be given.
"""

from __future__ import annotations

import os
import shutil
import stat

from runtime.image.unpack import _DROP_XATTR_PREFIXES, _copy_entry, is_opaque, is_whiteout


def flatten(layers: list[str], dest: str, root_attr: dict | None = None) -> None:
    os.mkdir(dest, 0o700)
    for layer in layers:
        _apply_dir(layer, dest, {})
    attr = root_attr or {}
    try:
        os.chown(dest, int(attr.get("uid", 0)), int(attr.get("gid", 0)))
    except OSError:
        pass
    os.chmod(dest, int(attr.get("mode", 0o755)))


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for x in names:
        if x.startswith(_DROP_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(dst, x, os.getxattr(src, x, follow_symlinks=False),
                        follow_symlinks=False)
        except OSError:
            pass


def _apply_dir(src: str, dst: str, links: dict) -> None:
    with os.scandir(src) as it:
        entries = list(it)
    for e in entries:
        s = e.path
        d = os.path.join(dst, e.name)
        st = os.lstat(s)
        if is_whiteout(st):
            _remove(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                dst_st = os.lstat(d)
            except FileNotFoundError:
                dst_st = None
            if dst_st is not None and not stat.S_ISDIR(dst_st.st_mode):
                os.unlink(d)
                dst_st = None
            elif dst_st is not None and is_opaque(s):
                shutil.rmtree(d)
                dst_st = None
            if dst_st is None:
                os.mkdir(d, 0o700)
            _apply_dir(s, d, links)
            try:
                os.chown(d, st.st_uid, st.st_gid)
            except OSError:
                pass
            os.chmod(d, stat.S_IMODE(st.st_mode))
            _copy_xattrs(s, d)
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
            continue
        _remove(d)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], d, follow_symlinks=False)
            continue
        pfd = os.open(dst, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _copy_entry(s, st, pfd, e.name, rootless=False)
        finally:
            os.close(pfd)
        if st.st_nlink > 1:
            links[key] = d
