"""OCI mount options -> mount(2) flags, propagation calls and a data string.

The table follows mount(8) and what runc and crun accept: an option either
sets or clears an MS_* flag, is a propagation change (applied by a separate
mount call after the mount itself), is an extension hako handles itself
(``tmpcopyup``), or is passed to the filesystem in the data string
(``mode=755``, ``size=65536k``, ``newinstance`` ...). Options apply in order, so
``ro,rw`` is read-write, like mount(8). The ``r``-prefixed attributes (``rro``,
``rnosuid`` ...) apply to the mount and every mount below it, through
mount_setattr(2) with AT_RECURSIVE, as runc (>= 1.1) does.

Standard library only; no imports beyond the syscall constants.
"""

from __future__ import annotations

from runtime.syscalls import (
    MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME, MS_BIND, MS_DIRSYNC, MS_LAZYTIME,
    MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_NOSYMFOLLOW,
    MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE,
    MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE,
)

#: option -> (clears?, flag)
FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "nosuid": (False, MS_NOSUID),
    "suid": (True, MS_NOSUID),
    "nodev": (False, MS_NODEV),
    "dev": (True, MS_NODEV),
    "noexec": (False, MS_NOEXEC),
    "exec": (True, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME),
    "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, MS_LAZYTIME),
    "nolazytime": (True, MS_LAZYTIME),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "symfollow": (True, MS_NOSYMFOLLOW),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
}

#: propagation option -> flags of the separate mount(NULL, target, NULL, flags) call
PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

#: options hako understands but does not pass to mount(2)
EXTENSIONS = frozenset({"tmpcopyup", "notmpcopyup"})

#: recursive attribute option -> (clears?, MOUNT_ATTR_* flag), runc's table
RECURSIVE: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME),
    "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}

#: idmapped mounts (runtime/idmapped.py): recursively or not
IDMAP = frozenset({"idmap", "ridmap"})

PROPAGATION_MASK = MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE

# atime "enum" flags are mutually exclusive; all of these can be locked on a
# mount inherited from a more privileged user namespace (MNT_LOCK_*)
ATIME_ENUM = MS_NOATIME | MS_RELATIME | MS_STRICTATIME
ATIME_FLAGS = ATIME_ENUM | MS_NODIRATIME
LOCKED_FLAGS = MS_RDONLY | MS_NODEV | MS_NOEXEC | MS_NOSUID | ATIME_FLAGS

# statvfs f_flag bits (<sys/statvfs.h>, <linux/statfs.h>) -> MS_* flags
_ST_TO_MS = (
    (0x0001, MS_RDONLY),        # ST_RDONLY
    (0x0002, MS_NOSUID),        # ST_NOSUID
    (0x0004, MS_NODEV),         # ST_NODEV
    (0x0008, MS_NOEXEC),        # ST_NOEXEC
    (0x0010, MS_SYNCHRONOUS),   # ST_SYNCHRONOUS
    (0x0040, MS_MANDLOCK),      # ST_MANDLOCK
    (0x0400, MS_NOATIME),       # ST_NOATIME
    (0x0800, MS_NODIRATIME),    # ST_NODIRATIME
    (0x1000, MS_RELATIME),      # ST_RELATIME
    (0x2000, MS_NOSYMFOLLOW),   # ST_NOSYMFOLLOW
)


class MountOptions:
    """The parsed ``options`` of one mount.

    ``flags``: MS_* flags for mount(2) (no propagation flags);
    ``cleared``: flags the user explicitly asked to be off (``rw``, ``suid`` ...);
    ``propagation``: flags for the follow-up propagation calls, in order;
    ``data``: the comma-joined filesystem options; ``extensions``: hako-only
    options present; ``idmap``: "idmap", "ridmap" or ""; ``rec_set`` /
    ``rec_clr``: MOUNT_ATTR_* flags for mount_setattr(AT_RECURSIVE), and
    ``recursive`` the options they came from (for messages).
    """

    __slots__ = ("flags", "cleared", "propagation", "data", "extensions", "idmap",
                 "rec_set", "rec_clr", "recursive")

    def __init__(self) -> None:
        self.flags = 0
        self.cleared = 0
        self.propagation: list[int] = []
        self.data = ""
        self.extensions: set[str] = set()
        self.idmap = ""
        self.rec_set = 0
        self.rec_clr = 0
        self.recursive: list[str] = []

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def recursive_bind(self) -> bool:
        return self.flags & (MS_BIND | MS_REC) == MS_BIND | MS_REC

    @property
    def tmpcopyup(self) -> bool:
        return "tmpcopyup" in self.extensions

    def __repr__(self) -> str:
        return (f"MountOptions(flags={self.flags:#x}, cleared={self.cleared:#x}, "
                f"propagation={[hex(p) for p in self.propagation]}, data={self.data!r}, "
                f"extensions={sorted(self.extensions)}, idmap={self.idmap!r}, "
                f"rec_set={self.rec_set:#x}, rec_clr={self.rec_clr:#x})")


def is_bind_entry(m: dict) -> bool:
    """A mounts[] entry that binds: type "bind", or a bind/rbind option."""
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or ())


def parse_options(options: list[str] | tuple[str, ...] | None) -> MountOptions:
    """Turn an OCI ``mounts[].options`` list into a :class:`MountOptions`."""
    out = MountOptions()
    data: list[str] = []
    for opt in options or ():
        if opt in FLAGS:
            clear, flag = FLAGS[opt]
            if clear:
                out.flags &= ~flag
                out.cleared |= flag
            else:
                out.flags |= flag
                out.cleared &= ~flag
        elif opt in PROPAGATION:
            out.propagation.append(PROPAGATION[opt])
        elif opt in EXTENSIONS:
            if opt == "notmpcopyup":
                out.extensions.discard("tmpcopyup")
            else:
                out.extensions.add(opt)
        elif opt in RECURSIVE:
            clear, attr = RECURSIVE[opt]
            out.recursive.append(opt)
            if clear:
                out.rec_clr |= attr
                out.rec_set &= ~attr
            else:
                out.rec_set |= attr
                out.rec_clr &= ~attr
                if attr & MOUNT_ATTR__ATIME == attr:
                    # mount_setattr(2): an access-time mode in attr_set needs the
                    # whole MOUNT_ATTR__ATIME field in attr_clr
                    out.rec_set &= ~MOUNT_ATTR__ATIME | attr
                    out.rec_clr |= MOUNT_ATTR__ATIME
        elif opt in IDMAP:
            out.idmap = opt
        elif opt:
            data.append(opt)
    out.data = ",".join(data)
    return out


#: linux.rootfsPropagation -> flags for mount(NULL, "/", NULL, flags)
ROOTFS_PROPAGATION: dict[str, int] = {
    "": 0,
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


def rootfs_propagation(value: str | None) -> int:
    """Flags for ``linux.rootfsPropagation``; 0 when unset. ValueError if unknown."""
    try:
        return ROOTFS_PROPAGATION[value or ""]
    except KeyError:
        raise ValueError(f"linux.rootfsPropagation: unknown value {value!r}") from None


def setup_propagation(prop: int) -> int:
    """What the namespace's "/" gets before the rootfs is bind-mounted onto itself.

    The requested propagation when it is a shared, slave or private one, so that
    bind mounts of host paths join, follow or leave the host's peer groups as
    asked (runc does the same); rslave when unset, and for [r]unbindable, which
    would make the rootfs itself unbindable, and an unbindable mount cannot be
    bind-mounted (EINVAL): that one waits until after pivot_root.
    """
    if not prop or prop & MS_UNBINDABLE:
        return MS_SLAVE | MS_REC
    return prop


def final_propagation(prop: int) -> int:
    """What the container's "/" gets after pivot_root (0: nothing to do).

    [r]shared and [r]unbindable in full: neither could be set before (pivot_root
    refuses a shared new root, and an unbindable rootfs cannot be bound).
    [r]slave and [r]private on "/" alone: the rootfs bind may have inherited a
    master from the mount it lives on, while their recursive part was set before
    any of the container's mounts existed, so that the mounts' own propagation
    options stay as they were applied.
    """
    if prop & (MS_SHARED | MS_UNBINDABLE):
        return prop
    return prop & ~MS_REC


def statvfs_to_flags(f_flag: int) -> int:
    """MS_* flags of a mount from statvfs' f_flag (what can be locked and more).

    MS_STRICTATIME is not stored by the kernel: a mount with none of the other
    atime enum flags is a strictatime mount.
    """
    flags = 0
    for st, ms in _ST_TO_MS:
        if f_flag & st:
            flags |= ms
    if not flags & ATIME_ENUM:
        flags |= MS_STRICTATIME
    return flags
