"""hako update: change a running container's cgroup limits (runc's flags,
or a LinuxResources JSON with --resources FILE|-)."""

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.cgroups.ops import update
    update(g, one_id(args, "update"), opts)
    return 0
