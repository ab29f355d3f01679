"""hako run: create + start, then wait and delete (unless --detach)."""

from runtime.commands import one_id, preserve_fds


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.container import run as run_container
    return run_container(g, one_id(args, "run"), opts.get("bundle", "."),
                         pid_file=opts.get("pid-file"), console_socket=opts.get("console-socket"),
                         detach=bool(opts.get("detach")), no_pivot=bool(opts.get("no-pivot")),
                         preserve_fds=preserve_fds(opts),
                         subreaper=not opts.get("no-subreaper"), keep=bool(opts.get("keep")),
                         no_new_keyring=bool(opts.get("no-new-keyring")),
                         pidfd_socket=opts.get("pidfd-socket"))
