"""hako ps: the processes of a container (host pids), as runc prints them."""

from runtime import fastjson
import sys

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import container_pids
    from runtime.state import Container, state_root
    if not args:
        raise HakoError("ps: expected <container-id> [-- ps options]", 2)
    fmt = opts.get("format", "table")
    if fmt not in ("table", "json"):
        raise HakoError(f"ps: invalid format {fmt!r} (table or json)", 2)
    with Container.open(state_root(g), args[0], shared=True) as c:
        if c.status() == "stopped":
            pids: list[int] = []
        else:
            pids = sorted(container_pids(c))
    if fmt == "json":
        sys.stdout.write(fastjson.dumps(pids) + "\n")
        return 0
    import subprocess
    ps_args = args[1:] or ["-ef"]
    try:
        r = subprocess.run(["ps", *ps_args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise HakoError("ps: the ps program is not installed (package procps)") from None
    if r.returncode != 0:
        raise HakoError(f"ps {' '.join(ps_args)}: {r.stderr.strip() or 'failed'}")
    lines = r.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise HakoError("ps: the output has no PID column (add -o pid)")
    col = header.index("PID")
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            out.append(line)
    sys.stdout.write("\n".join(out) + "\n")
    return 0
