"""hako resume: thaw a paused container."""

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.cgroups.ops import resume
    resume(g, one_id(args, "resume"))
    return 0
