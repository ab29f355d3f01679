"""hako layers ls | rm [--force] DIGEST... | prune [--all]: the layer store."""

import json
import sys

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.commands.images import _human
    from runtime.image.store import Store, default_path
    from runtime.state import is_rootless
    rootless = is_rootless(g.get("rootless"))
    store = Store(opts.get("store") or default_path(rootless), rootless=rootless)
    sub = args[0] if args else "ls"
    if sub in ("ls", "list"):
        users = store.users_of()
        rows = []
        for x in store.list_layers():
            meta = x.get("meta") or {}
            rows.append({"diff_id": x["diff_id"], "dir": x["dir"], "complete": x["complete"],
                         "entries": meta.get("entries"), "bytes": meta.get("bytes") or 0,
                         "unpacked": meta.get("unpacked"), "used_by": users.get(x["diff_id"], [])})
        if (opts.get("format") or "table") == "json":
            json.dump(rows, sys.stdout, indent=1)
            print()
            return 0
        if opts.get("quiet"):
            for r in rows:
                if r["diff_id"]:
                    print(r["diff_id"])
            return 0
        print(f"{'LAYER':<19} {'ENTRIES':>8} {'SIZE':>10}  {'STATE':<10} USED BY")
        for r in rows:
            name = r["diff_id"][7:19] if r["diff_id"] else "(partial)"
            state = "complete" if r["complete"] else "partial"
            print(f"{name:<19} {r['entries'] or 0:>8} {_human(r['bytes']):>10}  {state:<10} "
                  f"{', '.join(r['used_by']) or '-'}")
        return 0
    if sub == "rm":
        if len(args) < 2:
            raise HakoError("layers rm: expected layer digests", 2)
        users = store.users_of()
        with store.lock_store(exclusive=True):
            for text in args[1:]:
                d = store.resolve_layer(text)
                bundles = [u for u in users.get(d, []) if u.startswith("bundle ")]
                if users.get(d) and not opts.get("force"):
                    raise HakoError(f"layer {d[:19]} is used by {', '.join(users[d])} "
                                    "(--force removes it anyway)")
                if bundles and opts.get("force"):
                    from runtime import log
                    log.warn(f"layer {d[:19]}: {', '.join(bundles)} can no longer start")
                store.remove_layer(d)
                print(d)
        return 0
    if sub == "prune":
        from runtime.image import content
        removed, freed = store.prune(all_layers=bool(opts.get("all")))
        blobs = content.gc(store, downloads=True)  # those no remaining image needs
        for d in removed:
            print(d)
        if not opts.get("quiet"):
            print(f"removed {len(removed)} layers, {len(blobs)} blobs"
                  + (f", {_human(freed)}" if freed else ""), file=sys.stderr)
        return 0
    raise HakoError(f"layers: unknown subcommand {sub!r} (ls, rm, prune)", 2)
