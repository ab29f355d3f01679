"""hako images [rm REF...]: the images the layer store knows."""

import json
import sys
import time

from runtime.errors import HakoError


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.image.store import Store, default_path
    from runtime.state import is_rootless
    rootless = is_rootless(g.get("rootless"))
    store = Store(opts.get("store") or default_path(rootless), rootless=rootless)
    if args and args[0] in ("rm", "remove"):
        if len(args) < 2:
            raise HakoError("images rm: expected an image name or id", 2)
        for ref in args[1:]:
            rec = store.find_image(ref)
            if rec is None:
                raise HakoError(f"no image {ref} in {store.path}")
            store.remove_image(rec)
            print(rec["id"])
        return 0
    if args and args[0] not in ("ls", "list"):
        raise HakoError(f"images: unknown subcommand {args[0]!r} (ls, rm)", 2)
    recs = store.images()
    rows = []
    for r in recs:
        layers = r.get("layers") or []
        present = [d for d in layers if store.is_complete(d)]
        size = sum(int((store.layer_meta(d) or {}).get("bytes") or 0) for d in present)
        rows.append({"id": r["id"], "names": r.get("names") or [], "platform": r.get("platform"),
                     "layers": len(layers), "layers_present": len(present), "bytes": size,
                     "source": (r.get("source") or {}).get("path"), "created": r.get("created")})
    fmt = opts.get("format") or "table"
    if opts.get("quiet"):
        for r in rows:
            print(r["id"])
    elif fmt == "json":
        json.dump(rows, sys.stdout, indent=1)
        print()
    elif fmt == "table":
        print(f"{'NAME':<32} {'ID':<19} {'PLATFORM':<12} {'LAYERS':<7} {'SIZE':>10}  CREATED")
        for r in rows:
            layers = f"{r['layers_present']}/{r['layers']}"
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"] or 0))
            print(f"{(r['names'] or ['<none>'])[0]:<32} {r['id'][7:19]:<19} "
                  f"{r['platform'] or '?':<12} {layers:<7} {_human(r['bytes']):>10}  {created}")
    else:
        raise HakoError(f"--format: {fmt!r} (table or json)", 2)
    return 0
