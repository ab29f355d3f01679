"""hako pause: freeze every process of the container (freezer / cgroup.freeze)."""

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.cgroups.ops import pause
    pause(g, one_id(args, "pause"))
    return 0
