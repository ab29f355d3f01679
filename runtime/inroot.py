"""Resolve and create paths *inside* a root directory, never outside it.

A container's rootfs is untrusted: any component of a mount destination may be
a symlink (``/tmp -> /etc``, ``/dev -> ../../../..``). Every lookup here is
made relative to an ``O_PATH`` fd of the rootfs with ``openat2(2)`` and
``RESOLVE_IN_ROOT``, so symlinks resolve as if the rootfs were ``/``. When the
kernel lacks openat2 (ENOSYS), a component-by-component walk with ``O_NOFOLLOW``
does the same (symlinks are read and re-resolved from the root, ``..`` stops at
the root). Creation (mkdir, empty files) is done with ``*at`` calls relative to
fds obtained that way, so nothing is ever created through a symlink that points
out.

Callers mount onto ``/proc/self/fd/N`` of the returned fds and close them.
Errors are ``OSError`` with an errno; callers name the container path.
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.syscalls import (
    RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, SYS, Syscalls,
)

class RootfsError(Exception):
    """A rootfs, mount or device step failed; str() is one line "what: why"."""

    def __init__(self, msg: str, err: int | None = None) -> None:
        super().__init__(msg)
        self.errno = err


MAXSYMLINKS = 40  # the kernel's limit; beyond it: ELOOP
_PATH = os.O_PATH | os.O_CLOEXEC

#: set to False once openat2 returned ENOSYS (tests flip it to force the walk)
HAVE_OPENAT2 = True


def fd_path(fd: int) -> str:
    """The magic-link path of an fd, what mount(2) and friends are given."""
    return f"/proc/self/fd/{fd}"


def real_path(fd: int) -> str:
    """Where an fd points in the current root (for checks and messages)."""
    return os.readlink(fd_path(fd))


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what or None)


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH, *, no_symlinks: bool = False,
                 sc: Syscalls = SYS) -> int:
    """Open *path* (absolute or not, always taken relative to the root) in *rootfd*.

    Symlinks, including the last component unless ``O_NOFOLLOW`` is in
    *flags*, resolve inside the root. ``no_symlinks`` refuses any symlink (ELOOP).
    """
    global HAVE_OPENAT2
    resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
    if no_symlinks:
        resolve |= RESOLVE_NO_SYMLINKS
    rel = path.lstrip("/") or "."
    if HAVE_OPENAT2:
        for _ in range(16):
            try:
                return sc.openat2(rootfd, rel, flags | os.O_CLOEXEC, 0, resolve)
            except OSError as e:
                if e.errno == errno.EAGAIN:  # a concurrent rename: the kernel asks to retry
                    continue
                if e.errno != errno.ENOSYS:
                    raise OSError(e.errno, os.strerror(e.errno)) from None
                HAVE_OPENAT2 = False
                break
        else:
            raise _err(errno.EAGAIN)
    return _walk(rootfd, rel, flags, no_symlinks)


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def _walk(rootfd: int, path: str, flags: int, no_symlinks: bool) -> int:
    """RESOLVE_IN_ROOT by hand: one O_NOFOLLOW component at a time."""
    stack = [os.open(".", _PATH | os.O_DIRECTORY, dir_fd=rootfd)]  # stack[0] is the root
    todo = _split(path)
    links = 0
    try:
        while todo:
            comp = todo.pop(0)
            if comp == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            last = not todo
            fd = os.open(comp, _PATH | os.O_NOFOLLOW, dir_fd=stack[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                if no_symlinks:
                    os.close(fd)
                    raise _err(errno.ELOOP)
                if last and flags & os.O_NOFOLLOW:
                    stack.append(fd)
                    break
                links += 1
                try:
                    target = os.readlink(comp, dir_fd=stack[-1])
                finally:
                    os.close(fd)
                if links > MAXSYMLINKS:
                    raise _err(errno.ELOOP)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo[:0] = _split(target)
                continue
            if not last and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise _err(errno.ENOTDIR)
            stack.append(fd)
        fd = stack.pop()
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(os.fstat(fd).st_mode):
            stack.append(fd)
            raise _err(errno.ENOTDIR)
        extra = flags & ~(os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not flags & os.O_PATH or extra:
            try:
                return os.open(fd_path(fd), (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
            finally:
                os.close(fd)
        return fd
    finally:
        for fd in stack:
            _close(fd)


def _parent_and_name(path: str) -> tuple[str, str]:
    comps = _split(path)
    if not comps or comps[-1] == "..":
        raise _err(errno.EISDIR)
    return "/" + "/".join(comps[:-1]), comps[-1]


def _deepest_dir(rootfd: int, comps: list[str], no_symlinks: bool,
                 sc: Syscalls) -> tuple[int, int]:
    """(k, O_PATH fd of comps[:k]) for the deepest prefix of *comps* that exists
    (the root itself always does); (-1, -1) only if the tree changes under us."""
    k = len(comps) - 1
    while k >= 0:
        try:
            return k, open_in_root(rootfd, "/" + "/".join(comps[:k]), os.O_PATH | os.O_DIRECTORY,
                                   no_symlinks=no_symlinks, sc=sc)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            k -= 1
    return k, -1


def mkdir_all(rootfd: int, path: str, mode: int = 0o755, *, no_symlinks: bool = False,
              sc: Syscalls = SYS) -> int:
    """``mkdir -p`` inside the root; returns an O_PATH fd of the directory.

    A dangling symlink on the way is followed (inside the root) and the
    directory is created where it points, like ``mkdir -p`` would in a chroot.
    """
    links = 0
    for _ in range(4 * MAXSYMLINKS):
        try:
            return open_in_root(rootfd, path, os.O_PATH | os.O_DIRECTORY,
                                no_symlinks=no_symlinks, sc=sc)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        comps = _split(path)
        k, pfd = _deepest_dir(rootfd, comps, no_symlinks, sc)
        if pfd < 0 or comps[k] == "..":  # cannot happen unless the tree changes under us
            _close(pfd)
            raise _err(errno.ENOENT)
        try:
            try:
                os.mkdir(comps[k], mode, dir_fd=pfd)
            except FileExistsError:
                # exists but did not resolve: a dangling symlink; follow it in the root
                try:
                    target = os.readlink(comps[k], dir_fd=pfd)
                except OSError:
                    continue  # it changed under us: look again
                if no_symlinks:
                    raise _err(errno.ELOOP) from None
                links += 1
                if links > MAXSYMLINKS:
                    raise _err(errno.ELOOP) from None
                base = target if target.startswith("/") else "/".join(comps[:k] + [target])
                path = "/".join([base] + comps[k + 1:])
                continue
            # the rest cannot exist yet: create it below the new directory
            cur = os.open(comps[k], _PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            rest = comps[k + 1:]
            while rest and rest[0] != "..":
                try:
                    os.mkdir(rest[0], mode, dir_fd=cur)
                    nxt = os.open(rest[0], _PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=cur)
                except OSError:
                    break
                os.close(cur)
                cur = nxt
                rest.pop(0)
            if not rest:
                return cur
            os.close(cur)  # ".." or a race: resolve again from the root
        finally:
            _close(pfd)
    raise _err(errno.ELOOP)


def ensure_file(rootfd: int, path: str, mode: int = 0o644, *, sc: Syscalls = SYS) -> int:
    """O_PATH fd of *path* inside the root, creating an empty file if it is missing
    (and its parent directories). An existing object is returned as it is."""
    links = 0
    for _ in range(4 * MAXSYMLINKS):
        try:
            return open_in_root(rootfd, path, os.O_PATH, sc=sc)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        parent, name = _parent_and_name(path)
        pfd = mkdir_all(rootfd, parent, sc=sc)
        try:
            try:
                fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=pfd)
                os.close(fd)
                return os.open(name, _PATH | os.O_NOFOLLOW, dir_fd=pfd)
            except FileExistsError:
                try:
                    target = os.readlink(name, dir_fd=pfd)
                except OSError:
                    continue
                links += 1
                if links > MAXSYMLINKS:
                    raise _err(errno.ELOOP) from None
                path = target if target.startswith("/") else parent + "/" + target
        finally:
            os.close(pfd)
    raise _err(errno.ELOOP)


def missing_tail(rootfd: int, path: str, *, sc: Syscalls = SYS) -> tuple[int, list[str]] | None:
    """Where ``mkdir -p`` / :func:`ensure_file` would create *path*: an O_PATH fd of
    the deepest directory that exists and the components missing below it, or
    None when *path* exists. Symlinks on the way resolve inside the root, a
    dangling one to where it points, as the creating functions do. OSError when
    the path cannot be resolved at all (ENOTDIR, ELOOP, EACCES ...) or would
    climb with ".." below a directory that does not exist."""
    links = 0
    for _ in range(4 * MAXSYMLINKS):
        try:
            os.close(open_in_root(rootfd, path, os.O_PATH, sc=sc))
            return None
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        comps = _split(path)
        k, pfd = _deepest_dir(rootfd, comps, False, sc)
        if pfd < 0 or ".." in comps[k:]:
            _close(pfd)
            raise _err(errno.ENOENT)
        try:
            target = os.readlink(comps[k], dir_fd=pfd)
        except FileNotFoundError:
            return pfd, comps[k:]
        except OSError:
            _close(pfd)
            raise
        os.close(pfd)
        links += 1
        if links > MAXSYMLINKS:
            raise _err(errno.ELOOP)
        base = target if target.startswith("/") else "/".join(comps[:k] + [target])
        path = "/".join([base] + comps[k + 1:])
    raise _err(errno.ELOOP)


def contains(root_real: str, path_real: str) -> bool:
    """Whether *path_real* is *root_real* or below it (both canonical)."""
    return path_real == root_real or path_real.startswith(root_real.rstrip("/") + "/")
