"""The rootless id mapping, and running work as root of a user namespace with it.

Choice (rootless ownership): layers are unpacked **inside a user namespace**
that maps 0 to the user and 1..N to the user's subordinate ids
(/etc/subuid, /etc/subgid, through the setuid newuidmap/newgidmap), as podman
does. Files keep their real owners on the host (image uid 33 is host uid
subuid_start+32), so kernel overlay, fuse-overlayfs and the vfs copy all show
the right owners to a container that uses the same mapping, with no
per-file xattr and no id shifting at mount time. Bundles written from the
store get that mapping as linux.uidMappings/gidMappings. The price: the
user cannot delete those files directly; ``hako layers rm/prune`` and
``delete`` (the read-write layer) do it through the same helper.

Without subordinate ids the mapping is the user alone; chowns to other ids
are counted and skipped (every file belongs to the user, i.e. to root in the
container) and a warning says so.
"""

from __future__ import annotations

import json
import os
import pwd

from runtime.errors import HakoError

Mapping = list[tuple[int, int, int]]


def _ranges(path: str, name: str, uid: int) -> list[tuple[int, int]]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) != 3 or fields[0] not in (name, str(uid)):
                    continue
                try:
                    start, count = int(fields[1]), int(fields[2])
                except ValueError:
                    continue
                if count > 0:
                    out.append((start, count))
    except OSError:
        pass
    return out


def rootless_mapping() -> tuple[Mapping, Mapping]:
    """(uid map, gid map): 0 -> the user, then every subordinate range."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    maps = []
    for path, own in (("/etc/subuid", uid), ("/etc/subgid", gid)):
        m: Mapping = [(0, own, 1)]
        nxt = 1
        for start, count in _ranges(path, name, uid)[:4]:
            m.append((nxt, start, count))
            nxt += count
        maps.append(m)
    if len(maps[0]) == 1 or len(maps[1]) == 1:
        # both or neither: a partial mapping would make chown fail half the time
        return [(0, uid, 1)], [(0, gid, 1)]
    return maps[0], maps[1]


def current_mapping(rootless: bool) -> tuple[Mapping, Mapping] | None:
    """None for root (no user namespace: the store holds real ids)."""
    return rootless_mapping() if rootless else None


def key(m: tuple[Mapping, Mapping] | None) -> str:
    if m is None:
        return "host"
    return "u" + ",".join(f"{c}:{h}:{s}" for c, h, s in m[0]) + \
        ";g" + ",".join(f"{c}:{h}:{s}" for c, h, s in m[1])


def to_spec(m: tuple[Mapping, Mapping]) -> tuple[list[dict], list[dict]]:
    return ([{"containerID": c, "hostID": h, "size": s} for c, h, s in m[0]],
            [{"containerID": c, "hostID": h, "size": s} for c, h, s in m[1]])


def from_spec(spec: dict) -> tuple[Mapping, Mapping] | None:
    linux = spec.get("linux") or {}
    u, g = linux.get("uidMappings"), linux.get("gidMappings")
    if not u or not g:
        return None
    return ([(x["containerID"], x["hostID"], x["size"]) for x in u],
            [(x["containerID"], x["hostID"], x["size"]) for x in g])


def has_subids(m: tuple[Mapping, Mapping] | None) -> bool:
    return m is not None and len(m[0]) > 1


def run_in_userns(m: tuple[Mapping, Mapping], fn, *args):
    """Run ``fn(*args)`` in a forked child that is root of a new user
    namespace with mapping *m*; returns its (JSON-able) result. The child dies
    with us (PR_SET_PDEATHSIG), so an interrupted caller leaves no worker."""
    import sys

    from runtime import userns
    from runtime.syscalls import CLONE_NEWUSER, PR_SET_PDEATHSIG, SYS
    uids, gids = m
    self_map = userns.is_self_mapping(uids, gids)
    res_r, res_w = os.pipe()
    go_r, go_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # ------------------------------------------------------ child
        code = 1
        try:
            os.close(res_r)
            os.close(go_w)
            SYS.prctl(PR_SET_PDEATHSIG, 9)
            if os.getppid() == 1:
                os._exit(1)
            SYS.unshare(CLONE_NEWUSER)
            if self_map:
                userns.write_self(uids, gids)
            else:
                os.write(res_w, b"M")
                if os.read(go_r, 1) != b"G":
                    os._exit(1)
            os.close(go_r)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            if not self_map:
                os.setgroups([])
            out = fn(*args)
            os.write(res_w, b"R" + json.dumps(out).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - a child must never return
            try:
                from runtime.errors import error_text
                from runtime.image.digest import DigestError
                tag = b"D" if isinstance(e, DigestError) else b"E"  # kept: callers act on it
                os.write(res_w, tag + error_text(e).encode(errors="replace")[:60000])
            except BaseException:
                pass
        finally:
            os._exit(code)
    # ------------------------------------------------------------------ parent
    os.close(res_w)
    os.close(go_r)
    try:
        data = b""
        first = True
        while True:
            chunk = os.read(res_r, 65536)
            if not chunk:
                break
            if first and not self_map and chunk[:1] == b"M":
                first = False
                chunk = chunk[1:]
                try:
                    userns.write_for(pid, uids, gids, privileged=False)
                except BaseException:
                    os.kill(pid, 9)
                    raise
                os.write(go_w, b"G")
                if not chunk:
                    continue
            first = False
            data += chunk
    finally:
        os.close(res_r)
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    if data[:1] == b"R":
        return json.loads(data[1:])
    if data[:1] == b"D":
        from runtime.image.digest import DigestError
        raise DigestError(data[1:].decode(errors="replace"))
    if data[:1] == b"E":
        raise HakoError(data[1:].decode(errors="replace"))
    raise HakoError(f"user namespace helper failed (exit status "
                    f"{os.waitstatus_to_exitcode(status)})")
