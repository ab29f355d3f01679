"""Mount calls and their one-line errors, shared by every stage: remounts that
keep locked flags, propagation names, lexical path cleaning.
"""

from __future__ import annotations

import errno
import os
import time

from runtime.inroot import RootfsError
from runtime.mountopts import ATIME_FLAGS, LOCKED_FLAGS, PROPAGATION_MASK, statvfs_to_flags
from runtime.syscalls import (
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SHARED,
    MS_SLAVE, MS_UNBINDABLE, Syscalls,
)


DEFAULT_MOUNT_FLAGS = MS_NOEXEC | MS_NOSUID | MS_NODEV

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


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


def _is_bind(m: dict) -> bool:
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or ())
