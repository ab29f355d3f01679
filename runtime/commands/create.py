"""hako create: set up the container and leave its init waiting for start."""

from runtime.errors import HakoError


def preserve_fds(opts: dict) -> int:
    raw = opts.get("preserve-fds", "0")
    if not (str(raw).isascii() and str(raw).isdigit()):
        raise HakoError(f"--preserve-fds: {raw!r} is not a number")
    return int(raw)


def one_id(args: list[str], verb: str, usage: str = "<container-id>") -> str:
    if len(args) != 1:
        raise HakoError(f"{verb}: expected exactly 1 argument ({usage}), got {len(args)}", 2)
    return args[0]


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import create
    cid = one_id(args, "create")
    c, _, _ = create(g, cid, opts.get("bundle", "."), pid_file=opts.get("pid-file"),
                  console_socket=opts.get("console-socket"), no_pivot=bool(opts.get("no-pivot")),
                  preserve_fds=preserve_fds(opts))
    c.close()
    return 0
