"""One module per CLI verb; each parses nothing itself and calls one function.

The helpers here are shared by the verbs and cost nothing to import (the
package is loaded anyway)."""

from runtime.errors import HakoError


def one_id(args: list, verb: str, usage: str = "<container-id>") -> str:
    if len(args) != 1:
        raise HakoError(f"{verb}: expected exactly 1 argument ({usage}), got {len(args)}", 2)
    return args[0]


def preserve_fds(opts: dict) -> int:
    raw = str(opts.get("preserve-fds", "0"))
    if not (raw.isascii() and raw.isdigit()):
        raise HakoError(f"--preserve-fds: {raw!r} is not a number")
    return int(raw)
