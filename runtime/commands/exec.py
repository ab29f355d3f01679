"""hako exec: run a new process inside a running container."""

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.commands import preserve_fds
    from runtime.execute import exec_in, load_process_file
    if not args:
        raise HakoError("exec: expected <container-id> [command...]", 2)
    preserve_fds(opts)  # validates the number
    proc = load_process_file(opts["process"]) if opts.get("process") else None
    if proc is not None and len(args) > 1:
        raise HakoError("exec: give either --process or a command, not both", 2)
    return exec_in(g, args[0], proc, opts, args[1:])
