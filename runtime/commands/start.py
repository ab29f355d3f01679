"""hako start: let a created container's init exec the user process."""

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import start
    start(g, one_id(args, "start"))
    return 0
