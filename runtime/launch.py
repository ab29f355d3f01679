"""What the children of ``create`` need, decided in the parent before fork.

A plain record: the parent fills it (runtime/create.py), stage-1 and the init
read it (runtime/process.py, runtime/init.py) from their copy of memory.
"""

from __future__ import annotations

from runtime import userns
from runtime.capabilities import CapPlan
from runtime.namespaces import NamespacePlan


class Launch:
    """Everything the children need, decided in the parent before fork."""

    def __init__(self, spec: dict, bundle: str, state_dir: str, *, rootless: bool,
                 no_pivot: bool = False, preserve_fds: int = 0,
                 console_socket: str | None = None) -> None:
        self.spec = spec
        self.bundle = bundle
        self.state_dir = state_dir
        self.rootless = rootless
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.console_socket = console_socket
        self.cgroup = None  # runtime.cgroups Manager: stage-1 joins it first
        #: runtime.cgroups.quick.Joiner: the first child (stage-1, or the init
        #: forked directly) joins it as it is born (process.fork_child)
        self.cgroup_joiner = None
        #: v1 controller -> the container's cgroup dir, when the parent moves the
        #: init there in parallel (the init's cgroup mount binds these)
        self.cgroup_dirs: dict[str, str] | None = None
        #: run in the foreground: the socketpair end the init sends the pty on
        self.console_fd = -1
        #: O_PATH fd of the container's exec.fifo (the file, never its directory),
        #: opened by the parent: the init may run as a uid that cannot search the
        #: state root's ancestors, and reopens it through /proc/self/fd
        self.fifo_fd = -1
        #: O_PATH fd of the state directory, for a container whose /proc cannot
        #: show the init its fds (runtime/init.py _fifo_opener)
        self.state_fd = -1
        #: mounts[] entries to idmap, and index -> fd of each one's detached tree
        #: (runtime/idmapped.py), made by the parent, moved into place by the init
        self.idmap_wanted = idmapped_indices(spec)
        self.idmapped: dict[int, int] = {}
        self.plan = NamespacePlan(spec)
        self.uids = userns.mappings(spec, "uidMappings")
        self.gids = userns.mappings(spec, "gidMappings")
        if "user" in self.plan.new and not self.uids:
            self.uids, self.gids = userns.default_mappings()
        self.self_map = "user" in self.plan.new and userns.is_self_mapping(self.uids, self.gids)
        hooks = spec.get("hooks") or {}
        self.hooks = hooks
        #: the init stops before pivot_root so the parent can run runtime hooks
        self.hook_sync = any(hooks.get(k) for k in (
            "prestart", "createRuntime", "createContainer", "startContainer"))
        #: set by the parent before fork: what hooks get as state
        self.hook_state: dict = {}
        #: the compiled seccomp filter (runtime.seccomp.Prepared), loaded late by the init
        self.seccomp = None
        #: lifecycle extensions (runtime.extensions); the init runs their in_init
        self.extensions: list = []
        #: the init waits for a `start` of its own (create, not run): it lets go
        #: of its clean pages while it waits (runtime/residency.py)
        self.waits = False
        #: the session keyring the init joins (runc's "_ses.<id>"); None:
        #: --no-new-keyring, it keeps the caller's
        self.keyring: str | None = None
        caps = (spec.get("process") or {}).get("capabilities")
        self.caps = CapPlan(caps) if caps is not None else None  # validates names early


def idmapped_indices(spec: dict) -> list[int]:
    """The mounts[] entries that are idmapped mounts (mappings, idmap, ridmap)."""
    return [i for i, m in enumerate(spec.get("mounts") or ())
            if m.get("uidMappings") or m.get("gidMappings")
            or any(o in ("idmap", "ridmap") for o in m.get("options") or ())]
