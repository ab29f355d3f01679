"""The overlay format of a layer directory, shared by the unpacker, the vfs
flattener and the bundle maker: OCI whiteouts are character devices 0:0,
opaque directories carry the overlay xattr (trusted. as root, user. for
userxattr mounts), and a path is looked up through the layers top down."""

from __future__ import annotations

import os
import stat

from runtime.errors import HakoError

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTRS_ROOT = ("trusted.overlay.opaque", "user.overlay.opaque")
OPAQUE_XATTRS_USER = ("user.overlay.opaque",)


class UnpackError(HakoError):
    """A layer that cannot be unpacked; one line."""


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | int, name: str | None = None) -> bool:
    """Is the directory opaque (either xattr namespace)?"""
    target = path if name is None else f"/proc/self/fd/{path}/{name}"
    for x in OPAQUE_XATTRS_ROOT:
        try:
            if os.getxattr(target, x, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def split_path(name: str, what: str) -> list[str]:
    """Components of a tar entry name; refuses absolute names and '..'."""
    if name.startswith("/"):
        raise UnpackError(f"{what}: entry {name!r}: absolute path in a layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"{what}: entry {name!r}: '..' in a layer path")
    return parts


def merged_lookup(lowers: list[str], parts: list[str]) -> str | None:
    """The path, in the topmost of *lowers* (top first) that provides it, of
    the merged view's ``/parts``; None when absent or whited out. No symlink
    is followed: every component above the last is checked to be a real
    directory in the layers that are searched further."""
    cands = list(lowers)
    for i, part in enumerate(parts):
        nxt = []
        for layer in cands:
            p = os.path.join(layer, *parts[:i + 1])
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st):
                break
            if i == len(parts) - 1:
                return p
            if not stat.S_ISDIR(st.st_mode):
                break
            nxt.append(layer)
            if is_opaque(p):
                break
        cands = nxt
        if not cands:
            return None
    return None


def resolve_in_image(lowers: list[str], path: str) -> str | None:
    """Like merged_lookup, following symlinks of the merged view inside the
    image (absolute targets are relative to the image root), as the
    container would see ``path``."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        found = merged_lookup(lowers, done + [part])
        if found is None:
            return None
        st = os.lstat(found)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(found)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return merged_lookup(lowers, done) if done else None
