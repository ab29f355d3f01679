"""User namespace id mappings.

Three ways to write them, cheapest first: a single mapping of the caller's
own uid/gid is written by the child itself (no round trip, and no privilege
is needed for it); root writes any mapping directly from the parent; an
unprivileged caller with several ranges goes through the setuid helpers
newuidmap/newgidmap, which check /etc/subuid and /etc/subgid.
"""

from __future__ import annotations

import os

from runtime.errors import HakoError

Mapping = list[tuple[int, int, int]]  # (containerID, hostID, size)


def mappings(spec: dict, key: str) -> Mapping:
    return parse(spec.get("linux", {}).get(key))


def parse(entries: list | None) -> Mapping:
    """OCI LinuxIDMapping objects (linux.uidMappings, mounts[].uidMappings ...)."""
    return [(m["containerID"], m["hostID"], m["size"]) for m in entries or ()]


def default_mappings() -> tuple[Mapping, Mapping]:
    return [(0, os.geteuid(), 1)], [(0, os.getegid(), 1)]


def is_self_mapping(uids: Mapping, gids: Mapping) -> bool:
    return (len(uids) == 1 and len(gids) == 1 and uids[0][1:] == (os.geteuid(), 1)
            and gids[0][1:] == (os.getegid(), 1))


def format_map(m: Mapping) -> str:
    """As /proc/PID/uid_map and gid_map take it."""
    return "".join(f"{c} {h} {s}\n" for c, h, s in m)


def write_self(uids: Mapping, gids: Mapping) -> None:
    """In the child, right after unshare(CLONE_NEWUSER)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/gid_map", "w") as f:
        f.write(format_map(gids))
    with open("/proc/self/uid_map", "w") as f:
        f.write(format_map(uids))


def write_for(pid: int, uids: Mapping, gids: Mapping, privileged: bool) -> None:
    """From the parent, for a child that has unshared its user namespace."""
    if privileged:
        try:
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write(format_map(gids))
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write(format_map(uids))
        except OSError as e:
            raise HakoError(f"writing user namespace mappings: {e.strerror} "
                            f"(linux.uidMappings/gidMappings)") from None
        return
    for tool, m, key in (("newgidmap", gids, "gidMappings"), ("newuidmap", uids, "uidMappings")):
        import shutil
        import subprocess
        exe = shutil.which(tool) or (f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else None)
        if exe is None:
            raise HakoError(f"linux.{key}: several ranges need {tool} (package uidmap), "
                            f"which is not installed")
        args = [exe, str(pid)] + [str(v) for t in m for v in t]
        r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=10)
        if r.returncode != 0:
            why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
            raise HakoError(f"linux.{key}: {tool} refused the mapping ({why}); "
                            f"check /etc/sub{'uid' if tool == 'newuidmap' else 'gid'}")
