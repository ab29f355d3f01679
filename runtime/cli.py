"""Command-line entry point with runc's syntax.

argparse costs ~10 ms of import on these machines, more than runc spends on a
whole ``state``; this small table-driven parser accepts what runc's
urfave/cli accepts (``--flag v``, ``--flag=v``, ``-flag``, short aliases,
bool flags with ``=true|false``) and imports only the module of the verb run.
"""

import sys

from runtime.version import SPEC_VERSION, VERSION  # noqa: F401  (hako --version)

# flag spec: "name|alias" for bools, trailing "=" for flags that take a value,
# trailing "*" for repeatable value flags (collected in a list).
GLOBAL_FLAGS = ["root=", "log=", "log-format=", "debug", "systemd-cgroup", "rootless=",
                "criu=", "help|h", "version|v"]

COMMANDS: dict[str, tuple[list[str], str, str]] = {
    # verb: (flags, positional usage, one-line help)
    "create": (["bundle|b=", "pid-file=", "console-socket=", "pidfd-socket=", "no-pivot",
                "no-new-keyring", "preserve-fds=", "help|h"],
               "<container-id>", "create a container"),
    "start": (["help|h"], "<container-id>", "executes the user defined process in a created container"),
    "run": (["bundle|b=", "pid-file=", "console-socket=", "pidfd-socket=", "detach|d",
             "keep", "no-pivot", "no-new-keyring", "no-subreaper", "preserve-fds=", "help|h"],
            "<container-id>", "create and run a container"),
    "state": (["help|h"], "<container-id>", "output the state of a container"),
    "kill": (["all|a", "help|h"], "<container-id> [signal]",
             "send a signal (default SIGTERM) to the container's init process"),
    "delete": (["force|f", "help|h"], "<container-id>",
               "delete any resources held by the container"),
    "exec": (["process|p=", "console-socket=", "pidfd-socket=", "cwd=", "env|e*", "tty|t",
              "user|u=", "additional-gids|g*", "cap|c*", "no-new-privs", "detach|d",
              "pid-file=", "preserve-fds=", "apparmor=", "process-label=", "ignore-paused",
              "cgroup*", "help|h"],
             "<container-id> <command> [command options]",
             "execute new process inside the container"),
    "ps": (["format|f=", "help|h"], "<container-id> [-- ps options]",
           "display the processes running inside a container"),
    "list": (["format|f=", "quiet|q", "help|h"], "", "list containers started by hako with the given root"),
    "spec": (["bundle|b=", "rootless", "network=", "publish|p*", "allow-host-loopback",
              "help|h"], "", "create a new specification file"),
    "features": (["help|h"], "", "show the enabled features"),
    "pause": (["help|h"], "<container-id>", "pause suspends all processes inside the container"),
    "resume": (["help|h"], "<container-id>",
               "resumes all processes that have been previously paused"),
    "update": (["resources|r=", "blkio-weight=", "cpu-period=", "cpu-quota=", "cpu-burst=",
                "cpu-share|cpu-shares=", "cpu-rt-period=", "cpu-rt-runtime=", "cpuset-cpus=",
                "cpuset-mems=", "kernel-memory=", "kernel-memory-tcp=", "memory=", "cpu-idle=",
                "memory-reservation=", "memory-swap=", "pids-limit=", "l3-cache-schema=",
                "mem-bw-schema=", "help|h"],
               "<container-id>", "update container resource constraints"),
    "events": (["interval=", "stats", "help|h"], "<container-id>",
               "display container events such as OOM notifications, cpu, memory, and IO "
               "usage statistics"),
    # images (runtime/image/): bundles from OCI/docker archives, the layer store
    "bundle": (["image|i=", "name|n=", "platform=", "driver=", "store=", "tty|t", "keep-rw",
                "force", "pull=", "tls-verify", "creds=", "authfile=", "cert-dir=", "help|h"],
               "--image REF <bundle-dir> [-- command...]",
               "write a bundle from an image: OCI layout/archive, docker archive or registry"),
    "images": (["store=", "format|f=", "quiet|q", "platform=", "tls-verify", "creds=",
                "authfile=", "cert-dir=", "username|u=", "password|p=", "password-stdin",
                "all|a", "help|h"],
               "[ls | rm <name|id>... | pull <ref> | login <registry> | logout <registry>]",
               "list, pull or forget images; log in to registries"),
    "layers": (["store=", "format|f=", "quiet|q", "force", "all", "help|h"],
               "ls | rm <digest>... | prune", "list, remove or prune the layer store"),
}
ALIASES = {"ls": "list"}
#: verbs whose arguments after the container id belong to another program
STOP_AT_POSITIONAL = {"exec", "ps", "bundle"}


class UsageError(Exception):
    pass


def _index(flags: list[str]) -> dict[str, tuple[str, str]]:
    """Map every spelling to (canonical name, kind) with kind in '', '=', '*'."""
    table: dict[str, tuple[str, str]] = {}
    for spec in flags:
        kind = spec[-1] if spec[-1] in "=*" else ""
        names = (spec[:-1] if kind else spec).split("|")
        for n in names:
            table[n] = (names[0], kind)
    return table


def parse_flags(argv: list[str], flags: list[str], *, stop_at_positional: bool) -> tuple[dict, list[str]]:
    table = _index(flags)
    opts: dict = {}
    pos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            pos.extend(argv[i:])
            break
        if a.startswith("-") and len(a) > 1 and not (pos and stop_at_positional):
            name, eq, val = a.lstrip("-").partition("=")
            if name not in table:
                raise UsageError(f"flag provided but not defined: -{name}")
            canon, kind = table[name]
            if kind == "":
                if eq:
                    if val not in ("true", "false", "1", "0"):
                        raise UsageError(f"invalid boolean value {val!r} for -{name}")
                    opts[canon] = val in ("true", "1")
                else:
                    opts[canon] = True
                continue
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                val = argv[i]
                i += 1
            if kind == "*":
                opts.setdefault(canon, []).append(val)
            else:
                opts[canon] = val
        else:
            pos.append(a)
    return opts, pos


def _usage() -> str:
    lines = ["usage: hako [global options] command [command options] [arguments...]", "",
             "commands:"]
    for verb, (_, args, text) in COMMANDS.items():
        lines.append(f"   {verb:<9} {text}")
    lines += ["", "global options:",
              "   --root DIR          state directory (default /run/hako as root, "
              "$XDG_RUNTIME_DIR/hako otherwise)",
              "   --log FILE          log file (default stderr)",
              "   --log-format text|json",
              "   --debug             debug logging",
              "   --rootless auto|true|false",
              "   --systemd-cgroup    use the systemd cgroup manager",
              "   --version, -v       print the version"]
    return "\n".join(lines) + "\n"


def _command_usage(verb: str) -> str:
    flags, args, text = COMMANDS[verb]
    out = [f"usage: hako {verb} [command options] {args}".rstrip(), "", text, "", "options:"]
    for spec in flags:
        kind = spec[-1] if spec[-1] in "=*" else ""
        names = (spec[:-1] if kind else spec).split("|")
        shown = ", ".join(("--" if len(n) > 1 else "-") + n for n in names)
        out.append(f"   {shown}{' value' if kind else ''}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(sys, "_MEIPASS"):
        # PyInstaller's bootloader (packaging/measure.py's variants; dist/hako
        # execs its interpreter directly and sets nothing) points LD_LIBRARY_PATH
        # into its bundle; the host programs hako runs (newuidmap, ps,
        # fuse-overlayfs, slirp4netns) must load the host's libraries
        import os
        orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
        if orig is not None:
            os.environ["LD_LIBRARY_PATH"] = orig
        else:
            os.environ.pop("LD_LIBRARY_PATH", None)
    from runtime import log
    from runtime.errors import HakoError

    # global flags stop at the first positional (the verb)
    try:
        g, rest = parse_flags(argv, GLOBAL_FLAGS, stop_at_positional=True)
    except UsageError as e:
        log.error(str(e))
        return 2
    log.configure(g.get("log"), g.get("log-format", "text"), bool(g.get("debug")))
    if g.get("log-format", "text") not in ("text", "json"):
        log.error(f"--log-format: unknown format {g['log-format']!r} (text or json)")
        return 2
    if g.get("version"):
        sys.stdout.write(f"hako version {VERSION}\nspec: {SPEC_VERSION}\n")
        return 0
    if not rest or g.get("help"):
        sys.stdout.write(_usage())
        return 0 if g.get("help") else 2
    verb = ALIASES.get(rest[0], rest[0])
    if verb == "network-hook":
        # hidden: the built-in networking OCI hook, for a frozen hako that has no
        # python3 + hooks/network/__main__.py on disk to name in config.json
        from hooks.network import main as network_hook
        return network_hook(rest[1:])
    if verb == "help":
        sys.stdout.write(_usage() if len(rest) < 2 or rest[1] not in COMMANDS
                         else _command_usage(rest[1]))
        return 0
    if verb not in COMMANDS:
        log.error(f"unknown command {rest[0]!r} (see hako --help)")
        return 2
    try:
        opts, args = parse_flags(rest[1:], COMMANDS[verb][0],
                                 stop_at_positional=verb in STOP_AT_POSITIONAL)
    except UsageError as e:
        log.error(f"{verb}: {e}")
        return 2
    if opts.get("help"):
        sys.stdout.write(_command_usage(verb))
        return 0
    # __import__ rather than importlib: importlib pulls in warnings (~1 ms)
    __import__(f"runtime.commands.{verb}")
    mod = sys.modules[f"runtime.commands.{verb}"]
    try:
        return int(mod.run(g, opts, args) or 0)
    except HakoError as e:
        log.error(str(e))
        return e.code
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # every failure should have been turned into a HakoError with context;
        # still print one line rather than a traceback
        from runtime.errors import error_text
        log.error(f"{verb}: {error_text(e)}")
        return 1
    except Exception as e:  # noqa: BLE001
        if log.is_debug():
            import traceback
            traceback.print_exc()
        log.error(f"{verb}: internal error: {type(e).__name__}: {e}")
        return 1


def _teardown_needed() -> bool:
    """Would skipping the interpreter's finalisation lose anything?"""
    atexit = sys.modules.get("atexit")  # callbacks need it imported (logging does)
    if atexit is not None and atexit._ncallbacks():
        return True
    threading = sys.modules.get("threading")
    if threading is None:
        return False
    main_thread = threading.main_thread()
    return bool(getattr(threading, "_threading_atexits", None)) or any(
        not t.daemon for t in threading.enumerate() if t is not main_thread)


def run(argv: list[str] | None = None) -> None:
    """The launchers' entry: main(), then exit without tearing the interpreter down.

    Finalisation (clearing every module, a last GC) costs 1.5-2 ms per call
    once a verb has imported its modules: a fifth of a hot verb here. hako
    keeps no buffered file open across a verb (state files are written with
    ``with``), so after flushing stdout/stderr there is nothing left to do:
    ``os._exit``. With atexit callbacks or non-daemon threads pending, or when
    stdout cannot be flushed (a closed pipe), the ordinary ``sys.exit`` path
    runs instead, so those behave as before."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    if code is None:
        code = 0
    if not isinstance(code, int) or _teardown_needed():
        sys.exit(code)
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        if sys.stderr is not None:
            sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - reported by the interpreter, as before
        sys.exit(code)
    import posix  # not os: its import is a tenth of a hot verb (runtime/state.py)
    posix._exit(code & 0xFF)


if __name__ == "__main__":
    run()
