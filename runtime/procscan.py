"""A container's processes found through /proc, for a container without a
cgroup (rootless on a cgroup v1 or hybrid host): what ``kill --all`` and
``ps`` act on there.

Without a cgroup nothing the kernel keeps names "the container". What is used
instead, and why it is safe against pid and id reuse:

- the container's root mount: the stable fields (mount id, parent id,
  device, root) of the line for "/" in ``/proc/PID/mountinfo``, recorded at
  create. Every process of the container (the init, what it left behind, what
  ``exec`` started, daemons that called setsid) shows that line while its
  mount namespace lives. mountinfo is readable without ptrace rights, so the
  waiting (non-dumpable) init can be read rootless, unlike /proc/PID/ns/*.
  A reused mount id alone would not match: the root path and parent id must
  match as well.
- else (state written before this existed) the init's session: the init calls
  setsid, so its pid is the session id of everything that stayed in it; a pid
  used as a session id is not given to a new process while any member lives.
- both only for processes started no earlier than the init.
"""

import os


def _root_lines(pid: int) -> list[str]:
    """"MOUNTID PARENTID MAJ:MIN ROOT" of each mount at "/" of *pid*, bottom first."""
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            data = f.read()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n"):
        fields = line.split(b" ", 5)
        if len(fields) > 5 and fields[4] == b"/":
            out.append(b" ".join(fields[:4]).decode(errors="replace"))
    return out


def root_mount(pid: int) -> str | None:
    """What identifies *pid*'s root mount (the top one at "/"), or None."""
    lines = _root_lines(pid)
    return lines[-1] if lines else None


def _stat(pid: str) -> tuple[str, int, int, int] | None:
    """(state, ppid, session, start time) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2:].split()
        return rest[0].decode(), int(rest[1]), int(rest[3]), int(rest[19])
    except (OSError, ValueError, IndexError):
        return None


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def members(init: int, init_start: int, *, alive: bool, own_pidns: bool,
            root: str | None) -> list[int]:
    """Host pids of the container's live processes (never the whole host).

    *init*/*init_start*: the init's pid and start time (state.json); *alive*:
    the init is still that process; *own_pidns*: the container made its pid
    namespace; *root*: the recorded root_mount() (None if unknown)."""
    table: dict[int, tuple[str, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st is not None and st[0] not in ("Z", "X") and st[3] >= init_start:
                table[int(name)] = st
    found: set[int] = set()
    if alive:
        found.add(init)
        if own_pidns:
            ns = _pidns(init)
            if ns is not None:
                found.update(p for p in table if _pidns(p) == ns)
        children: dict[int, list[int]] = {}
        for p, st in table.items():
            children.setdefault(st[1], []).append(p)
        todo = [init]
        while todo:
            p = todo.pop()
            found.add(p)
            todo.extend(children.get(p, ()))
    if root is not None:
        found.update(p for p in table if root in _root_lines(p))  # also under a later mount on /
    elif alive or init not in table:
        # session fallback; a live process with the init's pid that is not the
        # init means the pid (and so the session id) now belongs to someone else
        found.update(p for p, st in table.items() if st[2] == init)
    return sorted(found)
