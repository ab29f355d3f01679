"""hako events: the container's stats and OOM events as JSON lines (runc's format)."""

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.cgroups.ops import events, parse_duration
    cid = one_id(args, "events")
    interval = parse_duration(opts["interval"]) if opts.get("interval") else 5.0
    events(g, cid, interval=interval, stats_only=bool(opts.get("stats")))
    return 0
