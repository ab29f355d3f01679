"""hako state: the OCI state of one container as JSON."""

from runtime import fastjson
import sys

from runtime.commands import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import state
    sys.stdout.write(fastjson.dumps(state(g, one_id(args, "state")), indent=2) + "\n")
    return 0
