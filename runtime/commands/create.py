"""hako create: set up the container and leave its init waiting for start."""

from runtime.commands import one_id, preserve_fds


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.create import create
    cid = one_id(args, "create")
    c, _, _ = create(g, cid, opts.get("bundle", "."), pid_file=opts.get("pid-file"),
                  console_socket=opts.get("console-socket"), no_pivot=bool(opts.get("no-pivot")),
                  preserve_fds=preserve_fds(opts),
                  no_new_keyring=bool(opts.get("no-new-keyring")),
                  pidfd_socket=opts.get("pidfd-socket"))
    c.close()
    return 0
