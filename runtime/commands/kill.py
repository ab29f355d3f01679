"""hako kill: signal the container's init (or, with --all, every process)."""

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import kill
    from runtime.signals import parse
    if not 1 <= len(args) <= 2:
        raise HakoError("kill: expected <container-id> [signal]", 2)
    sig = parse(args[1]) if len(args) == 2 else 15
    kill(g, args[0], sig, bool(opts.get("all")))
    return 0
