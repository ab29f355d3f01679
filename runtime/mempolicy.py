"""``linux.memoryPolicy`` (runtime-spec 1.3): the container's NUMA memory policy.

The policy is per task and inherited across fork and execve, so the init sets
it for itself just before it becomes the container's process, and ``exec``
does the same for its process (neither inherits it from the other). The
config is checked in the parent first, so that a mode/nodes/flags mistake is
one line naming the field before anything is forked; what only the kernel
knows (a node this machine does not have) is its set_mempolicy(2) error,
naming the field too.
"""

from __future__ import annotations

from runtime import syscalls as S
from runtime.errors import HakoError
from runtime.validators import number_list

# linux/mempolicy.h
MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
         "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
FLAGS = {"MPOL_F_STATIC_NODES": 1 << 15, "MPOL_F_RELATIVE_NODES": 1 << 14,
         "MPOL_F_NUMA_BALANCING": 1 << 13}
MAX_NODES = 1024  # MAX_NUMNODES of the distributions' kernels (NODES_SHIFT 10)

WHERE = "linux.memoryPolicy"
_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
_NEED_NODES = ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE")


def of(linux: dict) -> tuple[int, list[int]] | None:
    """(mode | flags, sorted nodes) for set_mempolicy, or None when the config
    has no policy. Mistakes the kernel would answer with a bare EINVAL are
    refused here, with the reason."""
    pol = (linux or {}).get("memoryPolicy")
    if pol is None:
        return None
    if not isinstance(pol, dict):
        raise HakoError(f"{WHERE}: expected an object")
    mode = pol.get("mode")
    if mode not in MODES:
        raise HakoError(f"{WHERE}.mode: {mode!r} is not one of {', '.join(MODES)}")
    nodes = number_list(pol.get("nodes", ""), f"{WHERE}.nodes", "node", MAX_NODES)
    flags = pol.get("flags") or []
    if not isinstance(flags, list):
        raise HakoError(f"{WHERE}.flags: expected an array")
    value = MODES[mode]
    for i, f in enumerate(flags):
        if f not in FLAGS:
            raise HakoError(f"{WHERE}.flags[{i}]: {f!r} is not one of {', '.join(FLAGS)}")
        value |= FLAGS[f]
    if mode in _NO_NODES and nodes:
        raise HakoError(f"{WHERE}.nodes: {mode} takes no nodes")
    if mode in _NEED_NODES and not nodes:
        raise HakoError(f"{WHERE}.nodes: {mode} needs at least one node")
    if "MPOL_F_STATIC_NODES" in flags and "MPOL_F_RELATIVE_NODES" in flags:
        raise HakoError(f"{WHERE}.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES "
                        "exclude each other")
    if "MPOL_F_NUMA_BALANCING" in flags and mode != "MPOL_BIND":
        raise HakoError(f"{WHERE}.flags: MPOL_F_NUMA_BALANCING is for MPOL_BIND only")
    if mode in _NO_NODES and set(flags) & {"MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"}:
        raise HakoError(f"{WHERE}.flags: {mode} takes no node flags")
    return value, sorted(nodes)


def apply(linux: dict, sc: S.Syscalls = S.SYS) -> None:
    """In the process about to become the container's (init or exec)."""
    policy = of(linux)
    if policy is None:
        return
    value, nodes = policy
    try:
        sc.set_mempolicy(value, nodes)
    except OSError as e:
        why = e.strerror
        if e.errno == 22:
            why += " (a node this machine does not have, or not allowed by its cpuset)"
        shown = ",".join(map(str, nodes)) or "none"
        raise HakoError(f"{WHERE}: {linux['memoryPolicy'].get('mode')} on nodes {shown}: "
                        f"{why}") from None
