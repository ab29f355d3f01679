"""hako spec: write a starting config.json, as runc spec does."""

import json
import os

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.default_spec import default_spec
    if args:
        raise HakoError("spec: takes no arguments", 2)
    bundle = opts.get("bundle") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise HakoError("File config.json exists. Remove it first")
    spec = default_spec(rootless=bool(opts.get("rootless")))
    if opts.get("network") or opts.get("publish") or opts.get("allow-host-loopback"):
        from hooks.network import configure_spec  # annotations for hako's networking
        configure_spec(spec, opts.get("network"), opts.get("publish"),
                       bool(opts.get("allow-host-loopback")))
    try:
        with open(path, "x") as f:
            json.dump(spec, f, indent="\t")
            f.write("\n")
    except OSError as e:
        raise HakoError(f"spec: cannot write {path}: {e.strerror}") from None
    return 0
