"""Mount points a rootfs cannot take, for the mounts hako adds by itself.

hako adds mounts the user never wrote: networking binds a resolv.conf on
/etc/resolv.conf (hooks/network/plan.py). When the destination is missing and its
directory cannot be written -- a rootless container on a rootfs owned by
someone else, a rootfs on a read-only filesystem -- creating the mount point,
as runc does for every bind, fails with EACCES or EROFS, for a mount the user
never asked for. For such entries (marked ``MARK: "overlay"``), that directory
gets a read-only overlay instead: the directory itself as the upper layer, so
that its entries and attributes stay as they are, and below it a small tmpfs
holding only the missing path. The rootfs is never written.

It runs before any mounts[] entry, so that the overlay hides no mount (a
directory with mounts below it is left alone). When even the overlay cannot be
made (no overlayfs; a kernel older than 5.11 in a user namespace), the entry
is skipped with a warning and the container runs without it.
"""

from __future__ import annotations

import errno
import os
import stat

from runtime import log
from runtime.inroot import RootfsError, contains, fd_path, missing_tail, real_path
from runtime.mountinfo import unescape
from runtime.syscalls import (
    MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, SYS, Syscalls,
)

#: key of a mounts[] entry (added by hako, never by the user) asking for this
MARK = "x-hako-mountpoint"
MOUNTINFO = "/proc/self/mountinfo"

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Skip(Exception):
    """The overlay could not be made: the entry goes, with a warning."""


def prepare(rootfd: int, rootfs: str, mounts: list[dict], *, bundle: str, data_label=None,
            sc: Syscalls = SYS) -> set[int]:
    """Make the mount points of the marked entries the rootfs cannot take.

    Returns the indexes of the entries to skip. ``data_label`` adds the mount
    label to mount data, as for every other mount. RootfsError when something
    was mounted and cannot be undone.
    """
    skip: set[int] = set()
    for i, m in enumerate(mounts):
        if m.get(MARK) != "overlay":
            continue
        dest = "/" + "/".join(c for c in (m.get("destination") or "").split("/")
                              if c not in ("", "."))
        try:
            _prepare_one(rootfd, rootfs, dest, _source_is_dir(m, bundle), data_label, sc)
        except _Skip as e:
            log.warn(f"mounts[{i}]: {dest}: {e}; the container runs without this mount")
            skip.add(i)
    return skip


def _source_is_dir(m: dict, bundle: str) -> bool:
    src = m.get("source") or ""
    if not os.path.isabs(src):
        src = os.path.join(bundle, src)
    try:
        return stat.S_ISDIR(os.stat(src).st_mode)
    except OSError:
        return False  # the mount itself will say what is wrong with it


def _writable(fd: int) -> bool:
    """Whether this process may create entries in the directory (EROFS included)."""
    return os.access(fd_path(fd), os.W_OK)


def _prepare_one(rootfd: int, rootfs: str, dest: str, is_dir: bool, data_label,
                 sc: Syscalls) -> None:
    try:
        found = missing_tail(rootfd, dest, sc=sc)
    except OSError:
        return  # mounting it reports the reason, as for any other entry
    if found is None:
        return  # there already: a mount needs no write
    dirfd, tail = found
    try:
        if _writable(dirfd):
            return  # made where runc makes it, when the entry is mounted
        where = real_path(dirfd)
        below = _mounts_below(where)
        if below:
            raise _Skip(f"cannot create {'/'.join(tail)} in its directory (not writable), and "
                        f"an overlay there would hide the mount on {below}")
        _overlay(rootfd, rootfs, dirfd, tail, is_dir, data_label, sc)
    finally:
        os.close(dirfd)


def _mounts_below(where: str) -> str | None:
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                point = unescape(line.split(" ", 5)[4])
                if point != where and contains(where, point):
                    return point
    except (OSError, IndexError):
        return None
    return None


def _scratch(rootfd: int, dirfd: int, tail: list[str]) -> tuple[int, str]:
    """A directory to mount the tmpfs on for a moment, neither the overlay's
    directory nor above it: the root, or when the overlay goes on the root
    itself, a directory in it. (O_PATH fd, its name from the root)."""
    same = os.fstat(rootfd), os.fstat(dirfd)
    if (same[0].st_dev, same[0].st_ino) != (same[1].st_dev, same[1].st_ino):
        return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=rootfd), ""
    for name in sorted(os.listdir(fd_path(rootfd))):
        if name == tail[0]:
            continue
        try:
            return os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=rootfd), name
        except OSError:
            continue
    raise _Skip("the rootfs is not writable and has no directory to prepare an overlay in")


def _overlay(rootfd: int, rootfs: str, dirfd: int, tail: list[str], is_dir: bool,
             data_label, sc: Syscalls) -> None:
    """tmpfs on the scratch directory, the missing path in it, the read-only
    overlay (directory over tmpfs) on the directory, the tmpfs detached (the
    overlay keeps its own reference)."""
    label = "/" + "/".join(tail)
    scratch, name = _scratch(rootfd, dirfd, tail)
    try:
        sc.mount("tmpfs", fd_path(scratch), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 "mode=755,size=64k", label=f"{label} (overlay layer)")
    except OSError as e:
        raise _Skip(f"cannot create it in the rootfs (not writable), nor a tmpfs for an "
                    f"overlay: {os.strerror(e.errno)}") from None
    finally:
        os.close(scratch)
    # by name: a lookup lands on the tmpfs just mounted there (an fd opened
    # before would not), and so does the unmount of that path at the end
    path = os.path.join(rootfs, name) if name else rootfs
    try:
        try:
            layer = os.open(path, _DIR)
        except OSError as e:
            raise RootfsError(f"open the overlay layer for {label}: {os.strerror(e.errno)}",
                              e.errno) from None
        try:
            _make_tail(layer, tail, is_dir)
            lower = f"lowerdir={fd_path(dirfd)}:{fd_path(layer)}"
            data = data_label(lower) if data_label else lower
            try:
                sc.mount("overlay", fd_path(dirfd), "overlay", MS_RDONLY, data, label=label)
            except OSError as e:
                raise _Skip(f"cannot create it in the rootfs (not writable), nor an overlay of "
                            f"its directory: {os.strerror(e.errno)}") from None
        finally:
            os.close(layer)
    finally:
        _detach(sc, path, label)


def _make_tail(layer: int, tail: list[str], is_dir: bool) -> None:
    cur = os.dup(layer)
    try:
        for comp in tail[:-1]:
            os.mkdir(comp, 0o755, dir_fd=cur)
            nxt = os.open(comp, _DIR, dir_fd=cur)
            os.close(cur)
            cur = nxt
        if is_dir:
            os.mkdir(tail[-1], 0o755, dir_fd=cur)
        else:
            os.close(os.open(tail[-1], os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=cur))
    except OSError as e:
        raise _Skip(f"cannot make it in a tmpfs: {os.strerror(e.errno)}") from None
    finally:
        os.close(cur)


def _detach(sc: Syscalls, target: str, label: str) -> None:
    """The tmpfs must not stay over the rootfs: failing that is fatal."""
    try:
        sc.umount2(target, MNT_DETACH)
    except OSError as e:
        raise RootfsError(f"detach the overlay layer for {label}: {os.strerror(e.errno)}",
                          errno.EIO if e.errno is None else e.errno) from None
