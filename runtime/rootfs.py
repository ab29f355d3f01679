"""The container's filesystem: mounts, devices, pivot_root, masked/read-only paths.

Runs in the container's init, already inside its new mount namespace (and user
namespace when configured), before the user process is exec'd. The order is
runc's (libcontainer/rootfs_linux.go):

setup_rootfs
  1. "/" made rslave (or per linux.rootfsPropagation, unless [r]unbindable),
     the rootfs' parent mount made private, the rootfs bind-mounted onto itself;
  2. every ``mounts[]`` entry, in order, each target resolved *inside* the rootfs
     (runtime.inroot) and mounted onto ``/proc/self/fd/N``; before them, the
     mount points of hako's own entries that the rootfs cannot take
     (runtime.mountpoints);
  3. devices, /dev/ptmx and /dev symlinks (unless /dev is a bind mount);
  4. ``before_pivot()`` (the init's hook point), pivot_root (or MS_MOVE + chroot
     with --no-pivot), stdio on /dev/null re-opened.
finalize_rootfs (after hostname and sysctl)
  readonlyPaths, maskedPaths, tmpfs and /dev mounts asked ``ro`` remounted
  read-only, root.readonly, then linux.rootfsPropagation on the new "/"
  (mountopts.final_propagation says what and why).

Every failure is a :class:`RootfsError` whose str() is one line naming the
container path and the errno text.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from runtime.mountinfo import unescape
from runtime import devices, mountpoints
from runtime.inroot import (
    RootfsError, contains, ensure_file, fd_path, mkdir_all, open_in_root, real_path,
)
from runtime.mountopts import (
    ATIME_FLAGS, LOCKED_FLAGS, PROPAGATION_MASK, MountOptions, final_propagation,
    parse_options, rootfs_propagation, setup_propagation, statvfs_to_flags,
)
from runtime.syscalls import (
    MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
    MS_REC, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_UNBINDABLE, SYS, Syscalls,
)

TYPE_CHECKING = False  # no `typing` import at run time (create's hot path)
if TYPE_CHECKING:
    from typing import Callable

__all__ = ["RootfsError", "finalize_rootfs", "setup_rootfs", "parse_mountinfo", "MountInfo"]

DEFAULT_MOUNT_FLAGS = MS_NOEXEC | MS_NOSUID | MS_NODEV

#: mounts allowed below /proc (files lxcfs emulates), as runc allows
VALID_PROC_MOUNTS = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
})

CGROUP_ROOT = "/sys/fs/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
PROC_CGROUP = "/proc/self/cgroup"

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


# --------------------------------------------------------------------------
# /proc/self/mountinfo


class MountInfo:
    __slots__ = ("root", "mountpoint", "optional", "fstype", "source", "superopts")

    def __init__(self, root: str, mountpoint: str, optional: list[str], fstype: str,
                 source: str, superopts: list[str]) -> None:
        self.root = root
        self.mountpoint = mountpoint
        self.optional = optional
        self.fstype = fstype
        self.source = source
        self.superopts = superopts

    def __repr__(self) -> str:
        return f"MountInfo({self.mountpoint!r}, {self.fstype!r}, root={self.root!r})"




def parse_mountinfo(text: str) -> list[MountInfo]:
    out = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        out.append(MountInfo(unescape(fields[3]), unescape(fields[4]), fields[6:sep],
                             fields[sep + 1], unescape(fields[sep + 2]),
                             fields[sep + 3].split(",")))
    return out


def read_mountinfo() -> list[MountInfo]:
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def _mount_of(infos: list[MountInfo], path: str) -> MountInfo | None:
    """The mount *path* lives on: the longest mountpoint containing it (last wins)."""
    best = None
    for mi in infos:
        if contains(mi.mountpoint, path) and (best is None
                                              or len(mi.mountpoint) >= len(best.mountpoint)):
            best = mi
    return best


# --------------------------------------------------------------------------
# errors and mount helpers


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else (e.strerror or str(e))


def _mount_error(e: OSError, source: str, label: str, data: str | None = None,
                 prefix: str = "") -> RootfsError:
    why = _why(e)
    pre = f"{prefix}: " if prefix else ""
    if e.errno == errno.EINVAL and data:
        kind = "options" if "," in data else "option"
        return RootfsError(f'{pre}mount "{source}" on {label}: invalid {kind} "{data}": {why}',
                           e.errno)
    return RootfsError(f'{pre}mount "{source}" on {label}: {why}', e.errno)


def _clean(path: str) -> str:
    """Lexical clean for labels and comparisons (resolution is done by inroot)."""
    out: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if out:
                out.pop()
            continue
        out.append(c)
    return "/" + "/".join(out)


def _remount(sc: Syscalls, target: str, label: str, flags: int, cleared: int = 0,
             prefix: str = "") -> None:
    """MS_REMOUNT (|MS_BIND) *target* with *flags*; when that fails (a mount
    inherited from a more privileged user namespace has locked flags), retry
    keeping the mount's current lockable flags, as runc does. Fails instead when
    the user explicitly asked to clear a locked flag or for another atime mode."""
    try:
        sc.mount(None, target, None, flags, None, label=label)
        return
    except OSError as e:
        first = e
    try:
        current = statvfs_to_flags(os.statvfs(target).f_flag)
    except OSError:
        raise _mount_error(first, "remount", label, prefix=prefix) from None
    if current & cleared & LOCKED_FLAGS or (
            flags & ATIME_FLAGS and flags & ATIME_FLAGS != current & ATIME_FLAGS):
        raise _mount_error(first, "remount", label, prefix=prefix) from None
    retry = flags | (current & LOCKED_FLAGS)
    if retry == flags:
        raise _mount_error(first, "remount", label, prefix=prefix) from None
    try:
        sc.mount(None, target, None, retry, None, label=label)
    except OSError as e:
        raise _mount_error(e, "remount", label, prefix=prefix) from None


def _remount_readonly(sc: Syscalls, target: str, label: str, flags: int, prefix: str) -> None:
    """runc's remountReadonly: MS_REMOUNT|MS_BIND|MS_RDONLY, retried while EBUSY."""
    flags = (flags & ~(PROPAGATION_MASK | MS_REC)) | MS_REMOUNT | MS_BIND | MS_RDONLY
    for attempt in range(5):
        try:
            _remount(sc, target, label, flags, prefix=prefix)
            return
        except RootfsError as e:
            if e.errno != errno.EBUSY or attempt == 4:
                raise
            time.sleep(0.1)


# --------------------------------------------------------------------------
# the context of one setup


class _Ctx:
    def __init__(self, spec: dict, bundle: str, rootfs: str, rootfd: int, *, rootless: bool,
                 new_userns: bool, new_netns: bool, new_cgroupns: bool, sc: Syscalls) -> None:
        self.spec = spec
        self.bundle = bundle
        self.rootfs = rootfs
        self.rootfd = rootfd
        self.rootless = rootless
        self.new_userns = new_userns
        self.new_netns = new_netns
        self.new_cgroupns = new_cgroupns
        self.sc = sc
        self.cgroup_dirs: dict[str, str] | None = None
        self.userns = rootless or new_userns  # mknod / sysfs / cgroup limits apply
        label = (spec.get("linux") or {}).get("mountLabel") or ""
        self.mount_label = label if label and os.path.exists("/sys/fs/selinux/enforce") else ""
        self._mountinfo: list[MountInfo] | None = None

    def mountinfo(self) -> list[MountInfo]:
        if self._mountinfo is None:
            self._mountinfo = read_mountinfo()
        return self._mountinfo

    def labeled(self, data: str) -> str:
        if not self.mount_label:
            return data
        ctx = f'context="{self.mount_label}"'
        return f"{data},{ctx}" if data else ctx

    # -- targets -----------------------------------------------------------
    def target_dir(self, i: int, dest: str, *, no_symlinks: bool = False) -> int:
        try:
            return mkdir_all(self.rootfd, dest, no_symlinks=no_symlinks, sc=self.sc)
        except OSError as e:
            raise _target_error(i, dest, e) from None

    def target_file(self, i: int, dest: str) -> int:
        try:
            return ensure_file(self.rootfd, dest, sc=self.sc)
        except OSError as e:
            raise _target_error(i, dest, e) from None

    def reopen(self, i: int, dest: str) -> int:
        """The destination again, now that something is mounted on it."""
        try:
            return open_in_root(self.rootfd, dest, os.O_PATH, sc=self.sc)
        except OSError as e:
            raise _target_error(i, dest, e) from None

    def container_path(self, fd: int, i: int, dest: str) -> str:
        """Where *fd* is, as the container will see it; refuses anything outside."""
        real = real_path(fd)
        if not contains(self.rootfs, real):
            raise RootfsError(f"mounts[{i}]: mount target {dest} resolves outside the rootfs "
                              f"({real})", errno.EXDEV)
        return "/" + real[len(self.rootfs):].lstrip("/")

    def follow_root(self) -> None:
        """A mount landed on the rootfs' root itself (destination "/", or a symlink
        to it): lookups from now on start on top of it, as a path would."""
        top = os.stat(self.rootfs)
        cur = os.fstat(self.rootfd)
        if (top.st_dev, top.st_ino) != (cur.st_dev, cur.st_ino):
            fd = os.open(self.rootfs, _DIR)
            os.close(self.rootfd)
            self.rootfd = fd

    # -- mount calls -------------------------------------------------------
    def mount(self, i: int, source: str | None, fd: int, fstype: str | None, flags: int,
              data: str, dest: str) -> None:
        try:
            self.sc.mount(source, fd_path(fd), fstype, flags, data or None, label=dest)
        except OSError as e:
            raise _mount_error(e, source or fstype or "none", dest, data,
                               prefix=f"mounts[{i}]" if i >= 0 else "") from None

    def propagate(self, i: int, dest: str, propagation: list[int]) -> None:
        if not propagation:
            return
        fd = self.reopen(i, dest)
        try:
            for flags in propagation:
                try:
                    self.sc.mount(None, fd_path(fd), None, flags, None, label=dest)
                except OSError as e:
                    raise RootfsError(f"mounts[{i}]: set propagation {_prop_name(flags)} on "
                                      f"{dest}: {_why(e)}", e.errno) from None
        finally:
            os.close(fd)

    def bind(self, i: int, source: str, fd: int, dest: str, flags: int, cleared: int,
             propagation: list[int]) -> None:
        """Bind *source* on the target fd, then remount to apply the other flags."""
        self.mount(i, source, fd, None, flags & (MS_BIND | MS_REC), "", dest)
        want = flags & ~(MS_BIND | MS_REC | MS_REMOUNT | PROPAGATION_MASK)
        if want or cleared:
            nfd = self.reopen(i, dest)
            try:
                _remount(self.sc, fd_path(nfd), dest, want | MS_BIND | MS_REMOUNT, cleared,
                         prefix=f"mounts[{i}]")
            finally:
                os.close(nfd)
        self.propagate(i, dest, propagation)


def _target_error(i: int, dest: str, e: OSError) -> RootfsError:
    why = _why(e)
    if e.errno == errno.ELOOP:
        why += " (a symlink loop, or a symlink where none is allowed)"
    elif e.errno == errno.ENOTDIR:
        why += " (a component of the path in the rootfs is not a directory)"
    pre = f"mounts[{i}]: " if i >= 0 else ""
    return RootfsError(f"{pre}mount target {dest} in the rootfs: {why}", e.errno)


def _prop_name(flags: int) -> str:
    names = {MS_SHARED: "shared", MS_SLAVE: "slave", MS_PRIVATE: "private",
             MS_UNBINDABLE: "unbindable"}
    base = names.get(flags & PROPAGATION_MASK, hex(flags))
    return ("r" + base) if flags & MS_REC else base


# --------------------------------------------------------------------------
# setup_rootfs


def rootfs_path(spec: dict, bundle: str) -> str:
    path = (spec.get("root") or {}).get("path") or "rootfs"
    if not os.path.isabs(path):
        path = os.path.join(bundle, path)
    return os.path.realpath(path)


def setup_rootfs(spec: dict, bundle: str, *, rootless: bool, new_userns: bool, new_netns: bool,
                 new_cgroupns: bool, no_pivot: bool, sc: Syscalls = SYS,
                 before_pivot: Callable[[], None] | None = None,
                 cgroup_dirs: dict[str, str] | None = None) -> None:
    """Everything from mount propagation to pivot_root. On return, cwd and root
    are the container's '/'.

    ``cgroup_dirs`` (controller -> host directory) names the container's v1
    cgroups when this process has not been moved into them yet (the parent
    does that in parallel); without it the cgroups this process is in are used.

    ``before_pivot`` (optional) runs after mounts and devices, with cwd in the
    rootfs, right before pivot_root: where runc runs createContainer hooks.
    """
    linux = spec.get("linux") or {}
    bundle = os.path.abspath(bundle)
    rootfs = rootfs_path(spec, bundle)
    if not os.path.isdir(rootfs):
        raise RootfsError(f"root.path: {rootfs} is not a directory", errno.ENOTDIR)
    try:
        prop = rootfs_propagation(linux.get("rootfsPropagation"))
    except ValueError as e:
        raise RootfsError(str(e), errno.EINVAL) from None
    if no_pivot and prop & MS_PRIVATE:
        raise RootfsError("linux.rootfsPropagation: [r]private is not safe without pivot_root "
                          "(--no-pivot)", errno.EINVAL)

    # 1. propagation of "/" (never unbindable yet), a private parent for the
    # rootfs, the rootfs bind
    first = setup_propagation(prop)
    try:
        sc.mount(None, "/", None, first, None, label="/")
    except OSError as e:
        raise RootfsError(f"make / {_prop_name(first)}: {_why(e)}", e.errno) from None
    parent = _mount_of(read_mountinfo(), rootfs)
    if parent is not None and any(o.startswith("shared:") for o in parent.optional):
        # pivot_root refuses a shared parent, and our bind must not propagate out
        try:
            sc.mount(None, parent.mountpoint, None, MS_PRIVATE, None, label=parent.mountpoint)
        except OSError as e:
            raise RootfsError(f"make {parent.mountpoint} (parent mount of the rootfs) private: "
                              f"{_why(e)}", e.errno) from None
    try:
        sc.mount(rootfs, rootfs, None, MS_BIND | MS_REC, None, label=rootfs)
    except OSError as e:
        raise RootfsError(f"bind-mount rootfs {rootfs} onto itself: {_why(e)}", e.errno) from None

    # after the bind: the fd is on the new mount
    ctx = _Ctx(spec, bundle, rootfs, os.open(rootfs, _DIR), rootless=rootless,
               new_userns=new_userns, new_netns=new_netns, new_cgroupns=new_cgroupns, sc=sc)
    ctx.cgroup_dirs = cgroup_dirs
    try:
        # 2. mounts; first the mount points of hako's own entries that the
        # rootfs cannot take (runtime.mountpoints)
        mounts = spec.get("mounts") or []
        skip = mountpoints.prepare(ctx.rootfd, rootfs, mounts, bundle=bundle,
                                   data_label=ctx.labeled, sc=sc)
        ctx.follow_root()
        setup_dev = True
        for i, m in enumerate(mounts):
            if i in skip:
                continue
            _mount_entry(ctx, i, m)
            ctx.follow_root()
            if _clean(m.get("destination") or "") == "/dev" and _is_bind(m):
                setup_dev = False
        # 3. devices
        if setup_dev:
            devices.create_devices(ctx.rootfd, spec, bind=ctx.userns, sc=sc)
            devices.setup_ptmx(ctx.rootfd, sc=sc)
            devices.setup_dev_symlinks(ctx.rootfd, sc=sc)
        # 4. into the rootfs
        os.fchdir(ctx.rootfd)
        if before_pivot is not None:
            before_pivot()
            os.fchdir(ctx.rootfd)
        if no_pivot:
            _ms_move_root(ctx)
        else:
            _pivot_root(sc, rootfs)
    finally:
        os.close(ctx.rootfd)
    if setup_dev:
        devices.reopen_dev_null()


def _is_bind(m: dict) -> bool:
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or ())


def _pivot_root(sc: Syscalls, rootfs: str) -> None:
    """pivot_root(".", ".") with cwd in the new root (LXC's trick, as runc): the old
    root lands on top of the new one and is unmounted lazily."""
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.pivot_root(".", ".")
        except OSError as e:
            raise RootfsError(f"pivot_root into {rootfs}: {_why(e)}", e.errno) from None
        os.fchdir(oldroot)
        try:
            # rslave first so that the unmount cannot propagate to the host
            sc.mount(None, ".", None, MS_SLAVE | MS_REC, None, label="old root")
            sc.umount2(".", MNT_DETACH)
        except OSError as e:
            raise RootfsError(f"detach the old root after pivot_root: {_why(e)}",
                              e.errno) from None
    finally:
        os.close(oldroot)
    os.chdir("/")


def _ms_move_root(ctx: _Ctx) -> None:
    """--no-pivot: move the rootfs onto "/" and chroot. Full procfs/sysfs mounts of
    the host stay reachable in the namespace, so unmount (or cover) them first,
    as runc does, or the container could mount a fresh procfs."""
    sc = ctx.sc
    for mi in read_mountinfo():
        if mi.root != "/" or mi.fstype not in ("proc", "sysfs") or contains(ctx.rootfs,
                                                                            mi.mountpoint):
            continue
        p = mi.mountpoint
        try:
            sc.mount(None, p, None, MS_SLAVE | MS_REC, None, label=p)
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue  # a parent of it is already gone
            raise RootfsError(f"make {p} rslave: {_why(e)}", e.errno) from None
        try:
            sc.umount2(p, MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise RootfsError(f"unmount host {mi.fstype} at {p}: {_why(e)}",
                                  e.errno) from None
            try:
                sc.mount("tmpfs", p, "tmpfs", 0, None, label=p)
            except OSError as e2:
                raise RootfsError(f"cover host {mi.fstype} at {p}: {_why(e2)}",
                                  e2.errno) from None
    try:
        sc.mount(ctx.rootfs, "/", None, MS_MOVE, None, label="/")
        sc.chroot(".")
    except OSError as e:
        raise RootfsError(f"move rootfs {ctx.rootfs} onto / (--no-pivot): {_why(e)}",
                          e.errno) from None
    os.chdir("/")


# --------------------------------------------------------------------------
# one mounts[] entry


def _mount_entry(ctx: _Ctx, i: int, m: dict) -> None:
    raw = m.get("destination") or ""
    if not raw:
        raise RootfsError(f"mounts[{i}]: no destination", errno.EINVAL)
    dest = _clean(raw)
    typ = m.get("type") or ""
    opts = parse_options(m.get("options"))
    if m.get("uidMappings") or m.get("gidMappings") or any(
            o in ("idmap", "ridmap") for o in opts.unsupported):
        raise RootfsError(f"mounts[{i}]: {dest}: idmapped mounts (uidMappings/gidMappings, "
                          "idmap) are not supported yet", errno.EOPNOTSUPP)
    if opts.unsupported:
        raise RootfsError(f"mounts[{i}]: {dest}: recursive mount attribute options "
                          f"({','.join(opts.unsupported)}) are not supported yet",
                          errno.EOPNOTSUPP)
    if typ == "bind":
        opts.flags |= MS_BIND
    if opts.flags & MS_REMOUNT:
        _remount_entry(ctx, i, dest, opts)
    elif opts.is_bind:
        _bind_entry(ctx, i, m, dest, opts)
    elif not typ:
        raise RootfsError(f"mounts[{i}]: {dest}: no type, and not a bind mount", errno.EINVAL)
    elif typ in ("proc", "sysfs"):
        _proc_sys_entry(ctx, i, m, dest, typ, opts)
    elif typ == "mqueue":
        _mqueue_entry(ctx, i, m, dest, opts)
    elif typ == "tmpfs":
        _tmpfs_entry(ctx, i, m, dest, opts)
    elif typ in ("cgroup", "cgroup2"):
        _cgroup_entry(ctx, i, m, dest, typ, opts)
    else:
        _other_entry(ctx, i, m, dest, typ, opts)


def _remount_entry(ctx: _Ctx, i: int, dest: str, opts: MountOptions) -> None:
    """``remount``: change the flags of what is already mounted at the destination."""
    fd = ctx.reopen(i, dest)
    try:
        flags = opts.flags & ~(PROPAGATION_MASK | MS_REC)
        try:
            ctx.sc.mount(None, fd_path(fd), None, flags, opts.data or None, label=dest)
        except OSError as e:
            raise _mount_error(e, "remount", dest, opts.data, prefix=f"mounts[{i}]") from None
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _bind_entry(ctx: _Ctx, i: int, m: dict, dest: str, opts: MountOptions) -> None:
    src = m.get("source") or ""
    if not src:
        raise RootfsError(f"mounts[{i}]: bind mount on {dest} has no source", errno.EINVAL)
    if not os.path.isabs(src):
        src = os.path.join(ctx.bundle, src)
    try:
        st = os.stat(src)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise RootfsError(f"mounts[{i}]: bind source {src} does not exist",
                              e.errno) from None
        raise RootfsError(f"mounts[{i}]: bind source {src}: {_why(e)}", e.errno) from None
    _check_proc_dest(i, dest, dest)
    fd = ctx.target_dir(i, dest) if stat.S_ISDIR(st.st_mode) else ctx.target_file(i, dest)
    try:
        _check_proc_mount(ctx, i, fd, dest, src)
        ctx.bind(i, src, fd, dest, opts.flags, opts.cleared, opts.propagation)
    finally:
        os.close(fd)


def _proc_sys_entry(ctx: _Ctx, i: int, m: dict, dest: str, typ: str,
                    opts: MountOptions) -> None:
    # no symlink anywhere on the way: procfs/sysfs land exactly where asked
    try:
        fd = mkdir_all(ctx.rootfd, dest, no_symlinks=True, sc=ctx.sc)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RootfsError(f'mounts[{i}]: filesystem "{typ}" must be mounted on an ordinary '
                              f"directory: {dest} has a symlink in its path", e.errno) from None
        raise _target_error(i, dest, e) from None
    try:
        flags = opts.flags & ~PROPAGATION_MASK
        try:
            ctx.sc.mount(m.get("source") or typ, fd_path(fd), typ, flags, opts.data or None,
                         label=dest)
        except OSError as e:
            if not (typ == "sysfs" and e.errno == errno.EPERM and ctx.userns
                    and not ctx.new_netns):
                raise _mount_error(e, m.get("source") or typ, dest, opts.data,
                                   prefix=f"mounts[{i}]") from None
            # a user namespace without its own network namespace cannot mount
            # sysfs: show the host's, read-only (runc spec --rootless does this)
            ctx.bind(i, "/sys", fd, dest, flags | MS_BIND | MS_REC | MS_RDONLY, opts.cleared,
                     [])
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _mqueue_entry(ctx: _Ctx, i: int, m: dict, dest: str, opts: MountOptions) -> None:
    fd = ctx.target_dir(i, dest)
    try:
        flags = opts.flags & ~PROPAGATION_MASK
        source = m.get("source") or "mqueue"
        try:
            ctx.sc.mount(source, fd_path(fd), "mqueue", flags, opts.data or None, label=dest)
        except OSError as e:
            if not (e.errno == errno.EPERM and ctx.userns):
                raise _mount_error(e, source, dest, opts.data, prefix=f"mounts[{i}]") from None
            if not os.path.isdir("/dev/mqueue"):
                err = _mount_error(e, source, dest, opts.data, prefix=f"mounts[{i}]")
                raise RootfsError(f"{err} (not the owner of the IPC namespace, and the host "
                                  "has no /dev/mqueue to bind instead)", e.errno) from None
            # the ipc namespace is not ours: bind the host's mqueue instead
            ctx.bind(i, "/dev/mqueue", fd, dest, flags | MS_BIND | MS_REC, opts.cleared, [])
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _has_mode(data: str) -> bool:
    return any(o.startswith("mode=") for o in data.split(","))


def _tmpfs_entry(ctx: _Ctx, i: int, m: dict, dest: str, opts: MountOptions) -> None:
    data = opts.data
    _check_proc_dest(i, dest, dest)
    try:
        fd = open_in_root(ctx.rootfd, dest, os.O_PATH | os.O_DIRECTORY, sc=ctx.sc)
        if not _has_mode(data):
            # keep the mode of the directory it hides (runc does the same)
            mode = f"mode={stat.S_IMODE(os.fstat(fd).st_mode):04o}"
            data = f"{mode},{data}" if data else mode
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise _target_error(i, dest, e) from None
        fd = ctx.target_dir(i, dest)
    src_dir = -1
    try:
        _check_proc_mount(ctx, i, fd, dest, "")
        # read-only tmpfs are remounted so in finalize_rootfs: files may be created first
        flags = opts.flags & ~(PROPAGATION_MASK | MS_RDONLY)
        if opts.tmpcopyup:
            # the fd keeps the hidden directory reachable once the tmpfs covers it
            src_dir = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        ctx.mount(i, m.get("source") or "tmpfs", fd, "tmpfs", flags, ctx.labeled(data), dest)
        if opts.tmpcopyup:
            nfd = ctx.reopen(i, dest)
            try:
                dst_dir = os.open(fd_path(nfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            finally:
                os.close(nfd)
            try:
                _copy_tree(src_dir, dst_dir)
            except OSError as e:
                raise RootfsError(f"mounts[{i}]: tmpcopyup into {dest}: {_why(e)}",
                                  e.errno) from None
            finally:
                os.close(dst_dir)
    finally:
        os.close(fd)
        if src_dir >= 0:
            os.close(src_dir)
    ctx.propagate(i, dest, opts.propagation)


def _copy_tree(src: int, dst: int) -> None:
    """Copy a directory's content (fd to fd), never following symlinks."""
    for name in os.listdir(src):
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        mode = st.st_mode
        perm = stat.S_IMODE(mode)
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=src)
            try:
                d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=dst)
                try:
                    _copy_tree(s, d)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISREG(mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                            | os.O_CLOEXEC, 0o600, dir_fd=dst)
                try:
                    while os.sendfile(d, s, None, 1 << 20) > 0:
                        pass
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(name, 0o600, dir_fd=dst)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            try:
                os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst)
            except PermissionError:
                continue  # not allowed in a user namespace: skip the node
        else:
            continue  # sockets
        try:
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EINVAL):
                raise
        if not stat.S_ISLNK(mode):
            os.chmod(name, perm, dir_fd=dst)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst)


def _other_entry(ctx: _Ctx, i: int, m: dict, dest: str, typ: str, opts: MountOptions) -> None:
    _check_proc_dest(i, dest, dest)
    fd = ctx.target_dir(i, dest)
    try:
        _check_proc_mount(ctx, i, fd, dest, m.get("source") or "")
        flags = opts.flags & ~PROPAGATION_MASK
        if dest == "/dev":
            flags &= ~MS_RDONLY  # devices go in first; finalize_rootfs makes it ro
        ctx.mount(i, m.get("source") or typ, fd, typ, flags, ctx.labeled(opts.data), dest)
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _check_proc_dest(i: int, where: str, dest: str) -> None:
    if where.startswith("/proc/") and where not in VALID_PROC_MOUNTS:
        raise RootfsError(f"mounts[{i}]: {dest} cannot be mounted because it is inside /proc",
                          errno.EPERM)


def _check_proc_mount(ctx: _Ctx, i: int, fd: int, dest: str, source: str) -> None:
    """Nothing may be mounted over or inside the container's /proc, except a
    procfs on /proc itself and a few files lxcfs emulates (runc's rule). Checked
    on the path as written (before anything is created) and where it resolved."""
    where = ctx.container_path(fd, i, dest)
    if where == "/proc":
        if source and _is_procfs(ctx, source):
            return
        raise RootfsError(f"mounts[{i}]: {dest} cannot be mounted because it is not of type "
                          "proc", errno.EPERM)
    _check_proc_dest(i, where, dest)


def _is_procfs(ctx: _Ctx, source: str) -> bool:
    if not os.path.isabs(source):
        return False
    mi = _mount_of(ctx.mountinfo(), os.path.realpath(source))
    return mi is not None and mi.fstype == "proc"


# --------------------------------------------------------------------------
# cgroup mounts


class _Hierarchy:
    __slots__ = ("name", "mountpoint", "root", "fstype", "controllers")

    def __init__(self, name: str, mountpoint: str, root: str, fstype: str,
                 controllers: list[str]) -> None:
        self.name = name
        self.mountpoint = mountpoint
        self.root = root
        self.fstype = fstype
        self.controllers = controllers

    def __repr__(self) -> str:
        return f"_Hierarchy({self.name!r}, {self.fstype!r}, {self.controllers})"


_NOT_CONTROLLERS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                    "favordynmods", "nsdelegate", "memory_recursiveprot",
                    "memory_localevents", "memory_hugetlb_accounting", "none"}


def cgroup_layout(infos: list[MountInfo]) -> tuple[bool, list[_Hierarchy]]:
    """(pure v2?, the hierarchies under /sys/fs/cgroup) from the host's mountinfo."""
    unified = False
    hier: dict[str, _Hierarchy] = {}
    for mi in infos:
        if mi.mountpoint == CGROUP_ROOT and mi.fstype == "cgroup2":
            unified = True
        if os.path.dirname(mi.mountpoint) != CGROUP_ROOT or mi.fstype not in ("cgroup",
                                                                              "cgroup2"):
            continue
        ctrls = [o for o in mi.superopts
                 if o not in _NOT_CONTROLLERS and not o.startswith("release_agent=")]
        name = os.path.basename(mi.mountpoint)
        hier[name] = _Hierarchy(name, mi.mountpoint, mi.root, mi.fstype, ctrls)
    return unified, list(hier.values())


def _own_cgroups() -> dict[str, str]:
    """/proc/self/cgroup as {controllers-field: path} ("" for the v2 line)."""
    out = {}
    with open(PROC_CGROUP, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                out[parts[1]] = parts[2]
    return out


def _cgroup_entry(ctx: _Ctx, i: int, m: dict, dest: str, typ: str, opts: MountOptions) -> None:
    unified, hierarchies = cgroup_layout(ctx.mountinfo())
    flags = opts.flags & ~PROPAGATION_MASK
    if typ == "cgroup2" or unified:
        _cgroup2(ctx, i, m, dest, flags, opts)
        return
    try:
        _cgroup_v1(ctx, i, dest, flags, opts, hierarchies)
    except RootfsError as e:
        if not (ctx.userns and e.errno in (errno.EPERM, errno.EBUSY, errno.EACCES,
                                           errno.ENOENT)):
            raise
        # this user namespace may not mount (or bind) the hierarchies: show the
        # host's whole /sys/fs/cgroup read-only instead
        fd = ctx.reopen(i, dest)
        try:
            ctx.sc.umount2(fd_path(fd), MNT_DETACH)
        except OSError as e2:
            if e2.errno != errno.EINVAL:  # EINVAL: the tmpfs never got mounted
                raise RootfsError(f"mounts[{i}]: undo the cgroup tmpfs on {dest}: {_why(e2)}",
                                  e2.errno) from None
        finally:
            os.close(fd)
        _cgroup_host_bind(ctx, i, dest, flags, opts)


def _cgroup_host_bind(ctx: _Ctx, i: int, dest: str, flags: int, opts: MountOptions) -> None:
    """Read-only recursive bind of the host's /sys/fs/cgroup."""
    fd = ctx.target_dir(i, dest)
    try:
        ctx.bind(i, CGROUP_ROOT, fd, dest, flags | MS_BIND | MS_REC | MS_RDONLY, opts.cleared,
                 opts.propagation)
    finally:
        os.close(fd)


def _cgroup2(ctx: _Ctx, i: int, m: dict, dest: str, flags: int, opts: MountOptions) -> None:
    fd = ctx.target_dir(i, dest)
    try:
        source = m.get("source") or "cgroup2"
        try:
            ctx.sc.mount(source, fd_path(fd), "cgroup2", flags, opts.data or None, label=dest)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EBUSY):
                raise _mount_error(e, source, dest, opts.data, prefix=f"mounts[{i}]") from None
            # a user namespace without a cgroup namespace cannot mount cgroup2
            ctx.bind(i, CGROUP_ROOT, fd, dest, flags | MS_BIND | MS_REC, opts.cleared, [])
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)


def _cgroup_v1(ctx: _Ctx, i: int, dest: str, flags: int, opts: MountOptions,
               hierarchies: list[_Hierarchy]) -> None:
    """tmpfs at the destination, then one directory per host hierarchy: with a
    cgroup namespace a fresh mount of it (and of the hybrid ``unified`` cgroup2),
    without one a read-only bind of this process' own cgroup in it (runc)."""
    ro = flags & MS_RDONLY
    fd = ctx.target_dir(i, dest)
    try:
        ctx.mount(i, "tmpfs", fd, "tmpfs", DEFAULT_MOUNT_FLAGS, ctx.labeled("mode=755"), dest)
    finally:
        os.close(fd)
    ctx.propagate(i, dest, opts.propagation)
    own = None if ctx.new_cgroupns else _own_cgroups()
    dirs = ctx.cgroup_dirs or {}
    for h in hierarchies:
        if own is not None and h.fstype == "cgroup2":
            continue  # runc binds the v1 hierarchies only
        sub = f"{dest.rstrip('/')}/{h.name}"
        sfd = ctx.target_dir(i, sub)
        try:
            if own is None:
                if h.fstype == "cgroup2":
                    ctx.mount(i, "cgroup2", sfd, "cgroup2", DEFAULT_MOUNT_FLAGS | ro, "", sub)
                else:
                    ctx.mount(i, "cgroup", sfd, "cgroup", DEFAULT_MOUNT_FLAGS | ro,
                              ",".join(h.controllers), sub)
                continue
            source = next((dirs[c] for c in h.controllers if c in dirs), None)
            if source is None:
                key = _own_key(own, h.controllers)
                path = own.get(key) if key is not None else None
                if path is None:
                    raise RootfsError(f"mounts[{i}]: cgroup hierarchy {h.name}: this process "
                                      f"is not in it ({PROC_CGROUP})", errno.ENOENT)
                rel = os.path.relpath(path, h.root) if h.root != "/" else path.lstrip("/")
                source = h.mountpoint if rel in ("", ".") else f"{h.mountpoint}/{rel}"
            ctx.bind(i, source, sfd, sub, flags | MS_BIND | MS_REC, opts.cleared,
                     opts.propagation)
        finally:
            os.close(sfd)
    # cpu -> cpu,cpuacct and the like
    dfd = ctx.reopen(i, dest)
    try:
        for h in hierarchies:
            if "," not in h.name:
                continue
            for part in h.name.split(","):
                try:
                    os.symlink(h.name, part, dir_fd=dfd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise RootfsError(f"mounts[{i}]: symlink {dest}/{part} -> {h.name}: "
                                      f"{_why(e)}", e.errno) from None
    finally:
        os.close(dfd)


def _own_key(own: dict[str, str], controllers: list[str]) -> str | None:
    want = set(controllers)
    for key in own:
        if key and set(key.split(",")) == want:
            return key
    return None


# --------------------------------------------------------------------------
# finalize_rootfs


def finalize_rootfs(spec: dict, *, sc: Syscalls = SYS, _root: str = "/") -> None:
    """After hostname/sysctl were applied: linux.readonlyPaths, linux.maskedPaths,
    read-only tmpfs and /dev, root.readonly, and rootfsPropagation on "/"
    (shared and unbindable had to wait until after pivot_root).

    ``_root`` is for tests: the directory standing for the container's '/'.
    """
    linux = spec.get("linux") or {}
    rootfd = os.open(_root, _DIR)
    try:
        for p in linux.get("readonlyPaths") or []:
            _readonly_path(sc, rootfd, p)
        for p in linux.get("maskedPaths") or []:
            _mask_path(sc, rootfd, p)
        for i, m in enumerate(spec.get("mounts") or []):
            opts = parse_options(m.get("options"))
            dest = _clean(m.get("destination") or "")
            if (not opts.flags & MS_RDONLY or _is_bind(m) or opts.flags & MS_REMOUNT
                    or not (m.get("type") == "tmpfs" or dest == "/dev")):
                continue
            try:
                fd = open_in_root(rootfd, dest, os.O_PATH, sc=sc)
            except OSError as e:
                raise _target_error(i, dest, e) from None
            try:
                _remount_readonly(sc, fd_path(fd), dest, opts.flags, f"mounts[{i}]")
            finally:
                os.close(fd)
        if (spec.get("root") or {}).get("readonly"):
            try:
                _remount(sc, fd_path(rootfd), "/", MS_BIND | MS_REMOUNT | MS_RDONLY,
                         prefix="root.readonly")
            except RootfsError as e:
                raise RootfsError(f"{e} (making the rootfs read-only)", e.errno) from None
        try:
            prop = rootfs_propagation(linux.get("rootfsPropagation"))
        except ValueError as e:
            raise RootfsError(str(e), errno.EINVAL) from None
        last = final_propagation(prop)
        if last:
            try:
                sc.mount(None, fd_path(rootfd), None, last, None, label="/")
            except OSError as e:
                raise RootfsError(f"linux.rootfsPropagation: make / {_prop_name(last)}: "
                                  f"{_why(e)}", e.errno) from None
    finally:
        os.close(rootfd)


def _readonly_path(sc: Syscalls, rootfd: int, path: str) -> None:
    """Bind the path onto itself, then remount that read-only."""
    try:
        fd = open_in_root(rootfd, path, os.O_PATH, sc=sc)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        raise RootfsError(f"linux.readonlyPaths: {path}: {_why(e)}", e.errno) from None
    try:
        sc.mount(fd_path(fd), fd_path(fd), None, MS_BIND | MS_REC, None, label=path)
    except OSError as e:
        raise _mount_error(e, path, path, prefix="linux.readonlyPaths") from None
    finally:
        os.close(fd)
    try:
        fd = open_in_root(rootfd, path, os.O_PATH, sc=sc)
    except OSError as e:
        raise RootfsError(f"linux.readonlyPaths: {path}: {_why(e)}", e.errno) from None
    try:
        keep = statvfs_to_flags(os.statvfs(fd_path(fd)).f_flag) & (MS_NOSUID | MS_NODEV
                                                                   | MS_NOEXEC)
        _remount(sc, fd_path(fd), path, keep | MS_BIND | MS_REMOUNT | MS_RDONLY,
                 prefix="linux.readonlyPaths")
    finally:
        os.close(fd)


def _mask_path(sc: Syscalls, rootfd: int, path: str) -> None:
    """/dev/null over a file, an empty read-only tmpfs over a directory."""
    try:
        fd = open_in_root(rootfd, path, os.O_PATH, sc=sc)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        raise RootfsError(f"linux.maskedPaths: {path}: {_why(e)}", e.errno) from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            sc.mount("tmpfs", fd_path(fd), "tmpfs", MS_RDONLY, None, label=path)
        else:
            sc.mount("/dev/null", fd_path(fd), None, MS_BIND, None, label=path)
    except OSError as e:
        raise _mount_error(e, "tmpfs" if stat.S_ISDIR(os.fstat(fd).st_mode) else "/dev/null",
                           path, prefix="linux.maskedPaths") from None
    finally:
        os.close(fd)
