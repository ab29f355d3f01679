"""hako state: the OCI state of one container as JSON."""

import json
import sys

from runtime.commands.create import one_id


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import state
    sys.stdout.write(json.dumps(state(g, one_id(args, "state")), indent=2) + "\n")
    return 0
