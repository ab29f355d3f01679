"""``exec --cgroup``: run the process in an existing sub-cgroup of the
container's cgroup, as runc does.

The argument is runc's ``[<controller>[,<controller>...]:]<path>``: a bare path
(given once) puts the process in that sub-cgroup of every hierarchy; with
controllers, only theirs move and the rest stay at the container's cgroup (so
on cgroup v2, with a single hierarchy, only a bare path means anything). The
path is the user's: it may not leave the container's cgroup (runc compares
string prefixes, so ``../ctr2`` beside a ``ctr`` passes there; here the
cleaned path must be the cgroup itself or below it), and the sub-cgroup must
already exist (runc's "(existing)"; hako does not create cgroups on exec).
"""

from __future__ import annotations

import os

from runtime.cgroups.quick import Joiner, hierarchy_dirs
from runtime.errors import HakoError


def parse(args: list[str]) -> dict[str, str]:
    """controller -> sub-path; "" for a bare path (every hierarchy)."""
    subs: dict[str, str] = {}
    for arg in args:
        ctrls, sep, path = arg.partition(":")
        if not sep:
            if len(args) != 1:
                raise HakoError(f"--cgroup {arg}: a path without <controller>: must be the "
                                "only --cgroup", 2)
            subs[""] = arg
            continue
        for c in ctrls.split(","):
            if not c:
                raise HakoError(f"--cgroup {arg}: empty controller name before ':'", 2)
            if c in subs:
                raise HakoError(f"--cgroup {arg}: controller {c} given more than once", 2)
            subs[c] = path
    return subs


def _below(base: str, sub: str, arg: str) -> str:
    path = os.path.normpath(os.path.join(base, sub.lstrip("/")))
    if path != base and not path.startswith(base.rstrip("/") + "/"):
        raise HakoError(f"--cgroup {arg}: {sub!r} leads out of the container's cgroup")
    return path


def joiner_for(record: dict | None, subs: dict[str, str]) -> Joiner:
    """The Joiner exec's process is born into, from the container's state
    record (any driver: the systemd one's record carries its cgroupfs paths)."""
    shown = ",".join(f"{c}:{p}" if c else p for c, p in subs.items())
    if not record:
        raise HakoError(f"--cgroup {shown}: the container has no cgroup (rootless on a "
                        "cgroup v1 host, or no delegation)")
    driver = record.get("inner") if record.get("driver") == "systemd" else record.get("driver")
    if driver == "v2":
        named = sorted(c for c in subs if c)
        if named:
            raise HakoError(f"--cgroup {shown}: cgroup v2 has a single hierarchy: give the "
                            f"sub-cgroup without a controller ({', '.join(named)}:)")
        joiner = Joiner([], _below(record["path"], subs[""], shown))
    elif driver in ("v1", "hybrid"):
        joiner = _v1(record, subs, shown)
    else:
        raise HakoError(f"--cgroup {shown}: unknown cgroup driver {driver!r} in the state")
    for d in joiner.dirs:
        if not os.path.isdir(d):
            raise HakoError(f"--cgroup {shown}: no such sub-cgroup: {d}")
    return joiner


def _v1(record: dict, subs: dict[str, str], shown: str) -> Joiner:
    paths: dict[str, str] = record.get("paths") or {}
    unified = (record.get("unified") or [None, None])[1]
    unknown = sorted(c for c in subs if c and c not in paths)
    if unknown:
        raise HakoError(f"--cgroup {shown}: the container has no {', '.join(unknown)} "
                        f"hierarchy (it has: {', '.join(sorted(paths))})")
    if "" in subs:
        v1 = [_below(d, subs[""], shown) for d in hierarchy_dirs(paths, None)]
        return Joiner(v1, _below(unified, subs[""], shown) if unified else None)
    # co-mounted controllers share a directory: one sub-path for it, or an error
    by_dir: dict[str, set[str]] = {}
    for c, d in paths.items():
        if c in subs:
            by_dir.setdefault(d, set()).add(subs[c])
    v1 = []
    for d in hierarchy_dirs(paths, None):
        wanted = by_dir.get(d, set())
        if len(wanted) > 1:
            same = sorted(c for c, p in paths.items() if p == d)
            raise HakoError(f"--cgroup {shown}: {', '.join(same)} share one hierarchy: "
                            "give them the same sub-cgroup")
        v1.append(_below(d, wanted.pop(), shown) if wanted else d)
    return Joiner(v1, unified)
