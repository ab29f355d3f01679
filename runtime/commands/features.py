"""hako features: the runtime-spec features document, as JSON."""

import sys

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime import fastjson
    from runtime.features import features
    if args:
        raise HakoError("features: takes no arguments", 2)
    sys.stdout.write(fastjson.dumps(features(), indent=4) + "\n")
    return 0
