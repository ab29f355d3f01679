"""The hook's command line: ``--phase runtime|container|cleanup --state-dir DIR``,
the OCI state on stdin (``hako network-hook`` in the frozen hako).
"""

from __future__ import annotations

import json
import os
import sys

from hooks.network.common import OWNED_MARK, NetworkError
from hooks.network.options import Options, parse_annotations
from hooks.network.state import cleanup
from hooks.network.supervisor import join, start


def default_state_dir(cid: str) -> str:
    """Where a plain hook keeps its files when not given --state-dir."""
    try:
        with open("/proc/self/uid_map") as f:
            initial = f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        initial = True
    if not initial:  # e.g. the createContainer hook, inside the container's user namespace
        raise NetworkError("inside a user namespace: give the same --state-dir to every "
                           "phase of this hook")
    if os.geteuid() == 0:
        base = "/run/hako-network"
    else:
        base = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/hako-{os.getuid()}",
                            "hako-network")
    return os.path.join(base, cid)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    state_dir = None
    phase = None
    while args:
        a = args.pop(0)
        if a == "--state-dir" and args:
            state_dir = args.pop(0)
        elif a.startswith("--state-dir="):
            state_dir = a.split("=", 1)[1]
        elif a == "--phase" and args:
            phase = args.pop(0)
        elif a.startswith("--phase="):
            phase = a.split("=", 1)[1]
        elif a == "--cleanup":
            phase = "cleanup"
        elif a in ("-h", "--help"):
            print(sys.modules[__package__].__doc__)
            return 0
        else:
            print(f"hako-network: unknown argument {a!r}", file=sys.stderr)
            return 2
    if phase not in (None, "runtime", "container", "cleanup"):
        print(f"hako-network: --phase: {phase!r}: runtime, container or cleanup",
              file=sys.stderr)
        return 2
    try:
        try:
            state = json.load(sys.stdin)
        except ValueError as e:
            raise NetworkError(f"the OCI state on stdin is not JSON: {e}") from None
        if phase is None:
            phase = "cleanup" if state.get("status") == "stopped" else "runtime"
        owned = state_dir is None
        if state_dir is None:
            cid = state.get("id") or ""
            if not cid or "/" in cid or cid in (".", ".."):
                raise NetworkError(f"bad container id {cid!r} in the state on stdin")
            state_dir = default_state_dir(cid)
        if phase == "cleanup":
            cleanup(state_dir)
            return 0
        annotations = state.get("annotations")
        if annotations is None and state.get("bundle"):
            try:
                with open(os.path.join(state["bundle"], "config.json")) as f:
                    annotations = json.load(f).get("annotations")
            except (OSError, ValueError):
                annotations = None
        opts = parse_annotations(annotations or {}) or Options()
        if opts.driver == "none":
            return 0
        if phase == "container":
            join(state_dir, opts)
            return 0
        if owned:
            os.makedirs(state_dir, mode=0o711, exist_ok=True)
            with open(os.path.join(state_dir, OWNED_MARK), "w"):
                pass
        try:
            start(state, state_dir, opts)
        except BaseException:
            if owned:
                cleanup(state_dir)
            raise
    except NetworkError as e:
        print(f"hako-network: {e}", file=sys.stderr)
        return 1
    return 0
