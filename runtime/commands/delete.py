"""hako delete: release everything a container holds."""

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import delete
    delete(g, one_id(args, "delete"), bool(opts.get("force")))
    return 0
