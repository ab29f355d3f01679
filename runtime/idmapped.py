"""Idmapped bind mounts: ``mounts[].uidMappings``/``gidMappings`` and the
``idmap``/``ridmap`` options (runtime-spec 1.2), as runc 1.2 does them.

A mapping reads like a user namespace's: ``containerID hostID size`` turns an
owner ``containerID`` on the source filesystem into ``hostID`` as the host
sees it (and so into whatever the container's user namespace makes of
``hostID``). ``idmap`` without mappings takes the container's user namespace
mappings (a config without either is refused by spec/config.py).

The mount is made in the parent, where the mapping's host IDs mean what they
say: the source is cloned into a detached tree (open_tree(OPEN_TREE_CLONE),
with its submounts for ``rbind``), and the tree is idmapped there
(mount_setattr(MOUNT_ATTR_IDMAP), recursively for ``ridmap``) with a user
namespace that holds the mapping, made by a short-lived child. The init
inherits the tree's fd and moves it onto its target inside the rootfs
(move_mount), then applies the mount's flags and propagation like any bind.

Only root can: the source's filesystem belongs to the initial user
namespace, whose CAP_SYS_ADMIN idmapping it takes.
"""

from __future__ import annotations

import errno
import os

from runtime.errors import HakoError
from runtime import userns
from runtime.mountopts import is_bind_entry, parse_options
from runtime.syscalls import (AT_EMPTY_PATH, AT_FDCWD, AT_RECURSIVE, CLONE_NEWUSER,
                              MOUNT_ATTR_IDMAP, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE, Syscalls)
from runtime.userns import Mapping

_HINTS = {
    errno.EINVAL: "the kernel or the source's filesystem cannot idmap mounts",
    errno.EOPNOTSUPP: "the source's filesystem cannot idmap mounts",
    errno.ENOSYS: "open_tree and mount_setattr need Linux 5.12 or later",
}


def _why(e: OSError) -> str:
    hint = _HINTS.get(e.errno)
    return os.strerror(e.errno) + (f" ({hint})" if hint else "")


def check(spec: dict, launch, *, rootless: bool) -> None:
    """Refuse, before anything exists, what cannot be idmapped."""
    mounts = spec.get("mounts") or []
    for i in launch.idmap_wanted:
        m = mounts[i]
        if not is_bind_entry(m):
            raise HakoError(f"mounts[{i}]: idmapped mounts must be bind mounts "
                            f"(type {m.get('type')!r} without bind/rbind)")
        if rootless or os.geteuid() != 0:
            raise HakoError(f"mounts[{i}]: idmapped mounts need root (the source's "
                            "filesystem belongs to the host's user namespace)")
        if not m.get("uidMappings") and not launch.uids:
            raise HakoError(f"mounts[{i}]: idmap without uidMappings/gidMappings needs a "
                            "user namespace whose mappings it takes")


def prepare(spec: dict, launch, sc: Syscalls) -> dict[int, int]:
    """mounts[] index -> fd of its idmapped detached tree (O_CLOEXEC: the init
    holds it until it execs). On failure nothing stays open."""
    trees: dict[int, int] = {}
    namespaces: dict[tuple, int] = {}  # one user namespace per distinct mapping
    mounts = spec.get("mounts") or []
    try:
        for i in launch.idmap_wanted:
            m = mounts[i]
            opts = parse_options(m.get("options"))
            uids = userns.parse(m.get("uidMappings")) or launch.uids
            gids = userns.parse(m.get("gidMappings")) or launch.gids
            key = (tuple(uids), tuple(gids))
            if key not in namespaces:
                namespaces[key] = mapping_userns(uids, gids, sc, what=f"mounts[{i}]")
            trees[i] = _tree(i, m, launch.bundle, opts, namespaces[key], sc)
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)
    return trees


def _tree(i: int, m: dict, bundle: str, opts, userns_fd: int, sc: Syscalls) -> int:
    src = m.get("source") or ""
    if not src:
        raise HakoError(f"mounts[{i}]: bind mount on {m.get('destination')} has no source")
    if not os.path.isabs(src):
        src = os.path.join(bundle, src)
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
    if opts.recursive_bind:
        flags |= AT_RECURSIVE
    try:
        fd = sc.open_tree(AT_FDCWD, src, flags)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise HakoError(f"mounts[{i}]: bind source {src} does not exist") from None
        raise HakoError(f"mounts[{i}]: bind source {src}: {_why(e)}") from None
    try:
        sc.mount_setattr(fd, "", AT_EMPTY_PATH | (AT_RECURSIVE if opts.idmap == "ridmap" else 0),
                         MOUNT_ATTR_IDMAP, 0, 0, userns_fd, label=src)
    except OSError as e:
        os.close(fd)
        raise HakoError(f"mounts[{i}]: idmapping {src}: {_why(e)}") from None
    return fd


def mapping_userns(uids: Mapping, gids: Mapping, sc: Syscalls, *, what: str) -> int:
    """An fd of a new user namespace holding *uids*/*gids*: a child unshares
    it and waits while the parent writes the maps and opens it."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(ready_r)
            os.close(hold_w)
            sc.unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(hold_r, 1)  # until the parent is done with us
        except BaseException:  # noqa: BLE001 - reported by the parent's read
            code = 1
        os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise HakoError(f"{what}: could not make a user namespace for the mapping")
        for name, key, m in (("gid_map", "gidMappings", gids), ("uid_map", "uidMappings", uids)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(userns.format_map(m))
            except OSError as e:
                raise HakoError(f"{what}.{key}: the kernel refused the mapping "
                                f"({os.strerror(e.errno)})") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)  # the child reads EOF and exits
        os.waitpid(pid, 0)
