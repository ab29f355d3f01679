"""hako images [ls | rm REF... | pull REF | login REGISTRY | logout [REGISTRY]]:
the images of the layer store, and getting them from registries."""

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


def _store(g: dict, opts: dict):
    from runtime.image.store import Store, default_path
    from runtime.state import is_rootless
    rootless = is_rootless(g.get("rootless"))
    return Store(opts.get("store") or default_path(rootless), rootless=rootless)


def pull_options(opts: dict, quiet: bool):
    """pull.Options from the flags `images pull` and `bundle` share."""
    from runtime import log
    from runtime.image import pull, regauth
    creds = regauth.parse_creds(opts["creds"]) if opts.get("creds") else None
    return pull.Options(platform=opts.get("platform"),
                        tls_verify=opts.get("tls-verify") is not False, creds=creds,
                        authfile=opts.get("authfile"), cert_dir=opts.get("cert-dir"),
                        quiet=quiet, log=log.debug)


def _pull(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.image import pull
    if len(args) != 2:
        raise HakoError("images pull: expected one image reference (e.g. busybox, "
                        "quay.io/org/app:1, localhost:5000/x@sha256:...)", 2)
    store = _store(g, opts)
    store.init()
    with store.lock_store(exclusive=False):
        rec = pull.pull(args[1], store, pull_options(opts, bool(opts.get("quiet"))))
    print(rec["id"])
    return 0


def _registry_arg(text: str) -> str:
    """REGISTRY as given to login/logout: host[:port], maybe as a URL."""
    from runtime.image import reference as R
    t = text
    for p in ("https://", "http://", "docker://"):
        if t.startswith(p):
            t = t[len(p):]
    t = t.split("/", 1)[0]
    if not t or not R._HOST.match(t):
        raise HakoError(f"{text!r} is not a registry (host[:port])", 2)
    return R.DOCKER_HUB if t in ("index.docker.io", "registry-1.docker.io") else t


def _login(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.image import regauth, regconf
    from runtime.image.registry import Registry
    if len(args) != 2:
        raise HakoError("images login: expected one registry (host[:port])", 2)
    registry = _registry_arg(args[1])
    user = opts.get("username")
    password = opts.get("password")
    if opts.get("password-stdin"):
        if password is not None:
            raise HakoError("images login: --password and --password-stdin exclude each other",
                            2)
        password = sys.stdin.readline().rstrip("\r\n")
    if not user or password is None:
        if not sys.stdin.isatty():
            raise HakoError("images login: --username and a password (--password-stdin) are "
                            "needed without a terminal", 2)
        import getpass
        if not user:
            user = input("Username: ").strip()
        if password is None:
            password = getpass.getpass("Password: ")
    if not user:
        raise HakoError("images login: empty user name", 2)
    creds = regauth.Credentials(user, password, "login")
    conf = regconf.RegistriesConf.load()
    from runtime import log
    reg = Registry(registry, insecure=conf.insecure(registry),
                   tls_verify=opts.get("tls-verify") is not False, creds=creds,
                   cert_dir=opts.get("cert-dir"), log=log.debug)
    try:
        reg.check_login()
    finally:
        reg.close()
    path = regauth.store_login(registry, creds, opts.get("authfile"))
    log.debug(f"login: credentials for {registry} written to {path}")
    print("Login Succeeded!")
    return 0


def _logout(g: dict, opts: dict, args: list[str]) -> int:
    from runtime.image import regauth
    if opts.get("all"):
        if len(args) != 1:
            raise HakoError("images logout: --all takes no registry", 2)
        path, gone = regauth.remove_login(None, opts.get("authfile"))
        print(f"Removed login credentials for all registries ({len(gone)}) from {path}")
        return 0
    if len(args) != 2:
        raise HakoError("images logout: expected one registry (or --all)", 2)
    registry = _registry_arg(args[1])
    path, gone = regauth.remove_login(registry, opts.get("authfile"))
    if not gone:
        raise HakoError(f"not logged in to {registry} (no entry in {path})")
    print(f"Removed login credentials for {registry}")
    return 0


def run(g: dict, opts: dict, args: list[str]) -> int:
    sub = args[0] if args else "ls"
    if sub == "pull":
        return _pull(g, opts, args)
    if sub == "login":
        return _login(g, opts, args)
    if sub == "logout":
        return _logout(g, opts, args)
    store = _store(g, opts)
    if sub in ("rm", "remove"):
        if len(args) < 2:
            raise HakoError("images rm: expected an image name or id", 2)
        for ref in args[1:]:
            rec = store.find_image(ref)
            if rec is None:
                raise HakoError(f"no image {ref} in {store.path}")
            store.remove_image(rec)
            print(rec["id"])
        from runtime.image import content
        content.gc(store)  # the blobs only these images needed
        return 0
    if sub not in ("ls", "list"):
        raise HakoError(f"images: unknown subcommand {args[0]!r} (ls, rm, pull, login, "
                        "logout)", 2)
    from runtime.image import content
    from runtime.image.source import LayerRef
    recs = store.images()
    records = content._records_layers(store)
    rows = []
    for r in recs:
        layers = r.get("layers") or []
        sizes = (r.get("sizes") or []) + [None] * len(layers)
        unpacked = [d for d in layers if store.is_complete(d)]
        refs = [LayerRef(b, d, "", s, "") for d, b, s in zip(layers, r.get("blobs") or [],
                                                              sizes)]
        present = [x for x in refs if content.available(store, x, records)]
        size = sum(int((store.layer_meta(d) or {}).get("bytes") or 0) for d in unpacked) + \
            sum(int(x.size or 0) for x in present if not store.is_complete(x.diff_id))
        rows.append({"id": r["id"], "names": r.get("names") or [], "platform": r.get("platform"),
                     "layers": len(layers), "layers_present": len(present),
                     "layers_unpacked": len(unpacked), "bytes": size,
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
