"""hako list: the containers under the state root, as runc prints them."""

from runtime import fastjson
import sys

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import list_states
    fmt = opts.get("format", "table")
    if fmt not in ("table", "json"):
        raise HakoError(f"list: invalid format {fmt!r} (table or json)", 2)
    states = list_states(g)
    if opts.get("quiet"):
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif fmt == "json":
        sys.stdout.write(fastjson.dumps(states) + "\n")
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]]
                 for s in states]
        # runc: tabwriter with minwidth 12, padding 3
        widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(len(rows[0]) - 1)]
        for r in rows:
            sys.stdout.write("".join(v.ljust(w) for v, w in zip(r, widths)) + r[-1] + "\n")
    return 0
