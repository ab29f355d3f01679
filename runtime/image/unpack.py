"""One layer (an uncompressed tar stream) into one directory, in overlay format.

The directory is one overlay "lower" layer: OCI whiteouts become overlay
whiteouts, so the kernel (or fuse-overlayfs) merges the layers itself, and
the vfs driver flattens them with the same rules (``flatten``):

- ``.wh.NAME`` (a deletion of NAME from the layers below) becomes a character
  device 0:0 named NAME, unless this layer itself has NAME: a directory NAME
  is then marked opaque, anything else already hides what is below;
- ``.wh..wh..opq`` marks its directory opaque: ``trusted.overlay.opaque=y``
  (root) and ``user.overlay.opaque=y`` (both as root: the same store serves
  mounts in the initial user namespace and, with ``userxattr``, in others).
  fuse-overlayfs reads either.

Safety: every entry is created with ``*at`` calls relative to its parent
directory, which is opened one component at a time with O_NOFOLLOW: an
entry whose path is absolute, has a ``..`` component or goes through a
symlink (of this layer) is refused, and so is a hard link to anything
outside the layer. Xattrs in the overlay namespaces (``*.overlay.*``,
``user.fuseoverlayfs.*``, ``user.containers.*``) are dropped: a layer cannot
forge whiteouts or redirects. A character device 0:0 in a tar (which would
act as a whiteout) is dropped. Rootless, device nodes cannot be made: they
are skipped, with a warning (the ``skipped`` list of the result).

Ownership: chown to the tar's numeric uid/gid. Rootless, this runs as root
of a user namespace with the user's subordinate ids (``idmap``), so the
files belong, on the host, to the ids the container will map them to;
without subordinate ids only the user's own id exists and other owners are
counted in ``unmapped`` (the files stay the user's).

Parents the tar does not list are made with the attributes the merged layers
below give them (``lowers``), so a layer that only adds /tmp/x does not turn
/tmp from 1777 into 0755; hard links to files of lower layers (the spec
allows extraction to fail on them) become copies.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile

from runtime.errors import HakoError

from runtime.image.overlayfmt import (  # noqa: F401  (names callers use here)
    OPAQUE_XATTRS_ROOT, OPAQUE_XATTRS_USER, WH_OPAQUE, WH_PREFIX, is_opaque, is_whiteout,
    UnpackError, merged_lookup, resolve_in_image, split_path,
)
_DROP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.",
                        "user.containers.")
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class Result:
    def __init__(self) -> None:
        self.entries = 0
        self.bytes = 0
        self.whiteouts = 0
        self.opaques = 0
        self.root_entry: dict | None = None     # attributes of "./" when the tar has it
        self.skipped: list[str] = []            # entries not created (devices rootless ...)
        self.unmapped = 0                       # chowns to ids outside the mapping
        self.copied_links = 0                   # hard links to lower layers' files, copied
        self.dropped_xattrs: list[str] = []

    def to_json(self) -> dict:
        return {"entries": self.entries, "bytes": self.bytes, "whiteouts": self.whiteouts,
                "opaques": self.opaques, "root": self.root_entry,
                "skipped": self.skipped[:100], "unmapped": self.unmapped,
                "copied_links": self.copied_links,
                "dropped_xattrs": sorted(set(self.dropped_xattrs))[:100]}


# -------------------------------------------------------------------------- unpack
class _Unpacker:
    def __init__(self, root: str, *, what: str, rootless: bool, lowers: list[str],
                 opaque_xattrs: tuple[str, ...], warn=None) -> None:
        self.root = root
        self.what = what
        self.rootless = rootless
        self.lowers = lowers
        self.opaque_xattrs = opaque_xattrs
        self.rootfd = os.open(root, _DIR)
        self.dirs: dict[str, int] = {"": self.rootfd}
        self.whited: set[str] = set()        # names this layer whited out (char 0:0 made)
        self.dir_times: list[tuple[list[str], float]] = []
        self.res = Result()
        self.warn = warn

    def close(self) -> None:
        for fd in self.dirs.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.dirs = {}

    # -- parents -------------------------------------------------------------
    def _forget(self, prefix: str) -> None:
        for k in [k for k in self.dirs if k and (k == prefix or k.startswith(prefix + "/"))]:
            os.close(self.dirs.pop(k))

    def parent(self, parts: list[str], entry: str, create: bool = True) -> int:
        """fd of the directory holding ``parts[-1]``, made (with the lower
        layers' attributes) when missing; refuses symlinks on the way.
        Without *create*, a missing directory raises FileNotFoundError."""
        key = "/".join(parts[:-1])
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        if len(self.dirs) > 512:
            for k in [k for k in self.dirs if k]:
                os.close(self.dirs.pop(k))
        cur = self.rootfd
        for i in range(len(parts) - 1):
            sub = "/".join(parts[:i + 1])
            nfd = self.dirs.get(sub)
            if nfd is None:
                name = parts[i]
                try:
                    nfd = os.open(name, _DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._implicit_dir(cur, parts[:i + 1])
                    nfd = os.open(name, _DIR, dir_fd=cur)
                except (NotADirectoryError, OSError) as e:
                    try:
                        st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                    except OSError:
                        raise UnpackError(f"{self.what}: entry {entry!r}: {sub}: "
                                          f"{os.strerror(e.errno or 0)}") from None
                    if stat.S_ISLNK(st.st_mode):
                        raise UnpackError(f"{self.what}: entry {entry!r} goes through the "
                                          f"symlink {sub} -> {os.readlink(name, dir_fd=cur)}: "
                                          "refused") from None
                    if is_whiteout(st) and "/".join(parts[:i + 1]) in self.whited:
                        # .wh.dir then dir/x in one layer: a new, opaque directory
                        os.unlink(name, dir_fd=cur)
                        self._implicit_dir(cur, parts[:i + 1], opaque=True)
                        nfd = os.open(name, _DIR, dir_fd=cur)
                    else:
                        raise UnpackError(f"{self.what}: entry {entry!r}: {sub} is not a "
                                          "directory") from None
                self.dirs[sub] = nfd
            cur = nfd
        return cur

    def _implicit_dir(self, pfd: int, parts: list[str], opaque: bool = False) -> None:
        lower = None if opaque else merged_lookup(self.lowers, parts)
        mode, uid, gid = 0o755, 0, 0
        if lower is not None:
            st = os.lstat(lower)
            if stat.S_ISDIR(st.st_mode):
                mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        name = parts[-1]
        os.mkdir(name, 0o700, dir_fd=pfd)
        self._chown(pfd, name, uid, gid)
        os.chmod(name, mode, dir_fd=pfd)
        if opaque:
            self._set_opaque(pfd, name)

    # -- attributes ------------------------------------------------------------
    def _chown(self, pfd: int | None, name: str | None, uid: int, gid: int,
               fd: int | None = None) -> None:
        try:
            if fd is not None:
                os.fchown(fd, uid, gid)
            else:
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            self.res.unmapped += 1

    def _xattrs(self, m: tarfile.TarInfo, pfd: int, name: str, fd: int | None = None) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            xname = key[len("SCHILY.xattr."):]
            if xname.startswith(_DROP_XATTR_PREFIXES):
                self.res.dropped_xattrs.append(xname)
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                if fd is not None:
                    os.setxattr(fd, xname, raw)
                else:
                    os.setxattr(f"/proc/self/fd/{pfd}/{name}", xname, raw,
                                follow_symlinks=False)
            except OSError as e:
                self.res.dropped_xattrs.append(xname)
                if self.warn is not None and not xname.startswith("trusted."):
                    self.warn(f"{self.what}: {m.name}: xattr {xname} not kept: "
                              f"{os.strerror(e.errno or 0)}")

    def _set_opaque(self, pfd: int, name: str) -> None:
        path = f"/proc/self/fd/{pfd}/{name}" if name else f"/proc/self/fd/{pfd}"
        for x in self.opaque_xattrs:
            # the magic link itself when no name: follow it to the directory
            os.setxattr(path, x, b"y", follow_symlinks=not name)
        self.res.opaques += 1

    # -- removal ---------------------------------------------------------------
    def _remove(self, pfd: int, name: str, key: str) -> None:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget(key)
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)

    # -- one entry -------------------------------------------------------------
    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = split_path(m.name, self.what)
        self.res.entries += 1
        if not parts:
            if not m.isdir():
                raise UnpackError(f"{self.what}: the layer's root entry is not a directory")
            self.res.root_entry = {"mode": stat.S_IMODE(m.mode), "uid": m.uid, "gid": m.gid}
            return
        base = parts[-1]
        key = "/".join(parts)
        if base.startswith(WH_PREFIX) and not m.isdir():
            self._whiteout(parts, base, m)
            return
        if base.startswith(WH_PREFIX):
            raise UnpackError(f"{self.what}: entry {m.name!r}: a directory named like a "
                              "whiteout")
        pfd = self.parent(parts, m.name)
        mode = stat.S_IMODE(m.mode)
        if m.isdir():
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            opaque = False
            if st is not None and not stat.S_ISDIR(st.st_mode):
                opaque = is_whiteout(st) and key in self.whited
                self._remove(pfd, base, key)
                st = None
            if st is None:
                os.mkdir(base, 0o700, dir_fd=pfd)
            self._chown(pfd, base, m.uid, m.gid)
            os.chmod(base, mode, dir_fd=pfd, follow_symlinks=True)
            self._xattrs(m, pfd, base)
            if opaque:
                self._set_opaque(pfd, base)
            self.dir_times.append((parts, m.mtime))
            return
        # every other type replaces what is there
        if m.islnk():
            self._hardlink(tf, m, parts, pfd, base, key)
            return
        self._remove(pfd, base, key)
        if m.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                src = tf.extractfile(m)
                left = m.size
                while left > 0:
                    chunk = src.read(min(_CHUNK, left))
                    if not chunk:
                        raise UnpackError(f"{self.what}: {m.name}: truncated")
                    _write_all(fd, chunk)
                    left -= len(chunk)
                self.res.bytes += m.size
                self._chown(None, None, m.uid, m.gid, fd=fd)
                os.fchmod(fd, mode)
                self._xattrs(m, pfd, base, fd=fd)
                os.utime(fd, ns=(_ns(m.mtime), _ns(m.mtime)))
            finally:
                os.close(fd)
            return
        if m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._chown(pfd, base, m.uid, m.gid)
            self._xattrs(m, pfd, base)
        elif m.ischr() or m.isblk():
            if m.ischr() and m.devmajor == 0 and m.devminor == 0:
                self.res.skipped.append(f"{m.name} (character device 0:0: an overlay whiteout)")
                return
            if self.rootless:
                self.res.skipped.append(f"{m.name} (device {m.devmajor}:{m.devminor})")
                return
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
            self._chown(pfd, base, m.uid, m.gid)
            os.chmod(base, mode, dir_fd=pfd)
            self._xattrs(m, pfd, base)
        elif m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
            self._chown(pfd, base, m.uid, m.gid)
            os.chmod(base, mode, dir_fd=pfd)
            self._xattrs(m, pfd, base)
        else:
            self.res.skipped.append(f"{m.name} (tar type {m.type!r})")
            return
        os.utime(base, ns=(_ns(m.mtime), _ns(m.mtime)), dir_fd=pfd, follow_symlinks=False)

    def _whiteout(self, parts: list[str], base: str, m: tarfile.TarInfo) -> None:
        pfd = self.parent(parts, m.name)
        if base == WH_OPAQUE:
            self._set_opaque(pfd, "")
            return
        victim = base[len(WH_PREFIX):]
        if victim in ("", ".", "..") or victim.startswith(WH_PREFIX):
            raise UnpackError(f"{self.what}: entry {m.name!r}: whiteout of {victim!r} refused")
        key = "/".join(parts[:-1] + [victim])
        try:
            st = os.stat(victim, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            # this layer has it: a directory of its own is new (opaque), anything
            # else already hides the layers below
            if stat.S_ISDIR(st.st_mode):
                self._set_opaque(pfd, victim)
            return
        os.mknod(victim, stat.S_IFCHR | 0o600, 0, dir_fd=pfd)
        self.whited.add(key)
        self.res.whiteouts += 1

    def _hardlink(self, tf: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str], pfd: int,
                  base: str, key: str) -> None:
        tparts = split_path(m.linkname, self.what)
        if not tparts:
            raise UnpackError(f"{self.what}: entry {m.name!r}: hard link to the layer root")
        tkey = "/".join(tparts)
        if tkey == key:
            return
        try:
            tpfd = self.parent(tparts, m.linkname, create=False)
            st = os.stat(tparts[-1], dir_fd=tpfd, follow_symlinks=False)
        except (FileNotFoundError, UnpackError):
            st = None
        if st is not None and not (is_whiteout(st) and tkey in self.whited):
            if stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"{self.what}: entry {m.name!r}: hard link to a directory")
            self._remove(pfd, base, key)
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
            return
        # a link to a file of a lower layer: a copy of it
        lower = merged_lookup(self.lowers, tparts)
        if lower is None:
            raise UnpackError(f"{self.what}: entry {m.name!r}: hard link to {m.linkname!r}, "
                              "which neither this layer nor the layers below have")
        lst = os.lstat(lower)
        if stat.S_ISDIR(lst.st_mode):
            raise UnpackError(f"{self.what}: entry {m.name!r}: hard link to a directory")
        self._remove(pfd, base, key)
        _copy_entry(lower, lst, pfd, base, rootless=self.rootless)
        self.res.copied_links += 1

    def finish(self) -> None:
        # directory mtimes last (creating children changed them), deepest first
        for parts, mtime in sorted(self.dir_times, key=lambda t: -len(t[0])):
            try:
                pfd = self.parent(parts, "/".join(parts))
                os.utime(parts[-1], ns=(_ns(mtime), _ns(mtime)), dir_fd=pfd,
                         follow_symlinks=False)
            except (OSError, UnpackError):
                pass
        if self.res.root_entry is not None:
            r = self.res.root_entry
            try:
                os.chown(self.root, r["uid"], r["gid"])
            except OSError:
                self.res.unmapped += 1
            os.chmod(self.root, r["mode"])


def _ns(t: float) -> int:
    return int(t * 1_000_000_000) if t > 0 else 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_entry(src: str, st: os.stat_result, pfd: int, name: str, *, rootless: bool) -> None:
    """Copy one non-directory (content, owner, mode, xattrs, mtime)."""
    if stat.S_ISREG(st.st_mode):
        sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                copy_data(sfd, dfd, st.st_size)
                try:
                    os.fchown(dfd, st.st_uid, st.st_gid)
                except OSError:
                    pass
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                for x in _listxattr(sfd):
                    try:
                        os.setxattr(dfd, x, os.getxattr(sfd, x))
                    except OSError:
                        pass
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), name, dir_fd=pfd)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(name, 0o600, dir_fd=pfd)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        if rootless:
            return
        os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=pfd)
    else:
        return
    try:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
    except OSError:
        pass
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=pfd)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)


def _listxattr(fd: int) -> list[str]:
    try:
        return [x for x in os.listxattr(fd) if not x.startswith(_DROP_XATTR_PREFIXES)]
    except OSError:
        return []


_FICLONE = 0x40049409


def copy_data(sfd: int, dfd: int, size: int) -> None:
    """Reflink when the filesystem can, else copy_file_range, else read/write."""
    if size == 0:
        return
    import fcntl
    try:
        fcntl.ioctl(dfd, _FICLONE, sfd)
        return
    except OSError:
        pass
    left = size
    off = 0
    try:
        while left > 0:
            n = os.copy_file_range(sfd, dfd, min(left, 1 << 30), off, off)
            if n == 0:
                break
            left -= n
            off += n
        if left == 0:
            return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(sfd, off, os.SEEK_SET)
    os.lseek(dfd, off, os.SEEK_SET)
    while True:
        chunk = os.read(sfd, _CHUNK)
        if not chunk:
            break
        _write_all(dfd, chunk)


def unpack_tar(stream, dest: str, *, what: str, rootless: bool, lowers: list[str],
               warn=None) -> Result:
    """Unpack the tar read from *stream* (uncompressed, read sequentially)
    into the existing, empty directory *dest*."""
    opaque = OPAQUE_XATTRS_USER if rootless else OPAQUE_XATTRS_ROOT
    u = _Unpacker(dest, what=what, rootless=rootless, lowers=lowers, opaque_xattrs=opaque,
                  warn=warn)
    try:
        try:
            tf = tarfile.open(fileobj=stream, mode="r|", errorlevel=2)
        except tarfile.ReadError as e:
            raise UnpackError(f"{what}: not a tar archive: {e}") from None
        try:
            for m in tf:
                u.entry(tf, m)
        except tarfile.TarError as e:
            raise UnpackError(f"{what}: corrupt tar: {e}") from None
        except OSError as e:
            if isinstance(e, HakoError):
                raise
            raise UnpackError(f"{what}: {os.strerror(e.errno or 0) if e.errno else e}"
                              + (f": {e.filename}" if e.filename else "")) from None
        u.finish()
        return u.res
    finally:
        u.close()
