"""hako bundle --image REF [--name N] [--platform P] [--driver D] [--pull always|missing|never]
DIR [-- CMD...]: an OCI bundle from an image, its layers unpacked once into the
layer store. REF is an archive or layout (``source``), an image the store
holds, or a registry reference (pulled when the store lacks it: ``pull``).
A pulled image's layers are unpacked here from the store's blobs, the first
time a bundle needs them; each blob is dropped once its layer is unpacked."""

import os

from runtime.errors import HakoError


def run(g: dict, opts: dict, args: list[str]) -> int:
    from runtime import log
    from runtime.image import bundle as B
    from runtime.image import drivers, source
    from runtime.image.store import Store, default_path
    from runtime.state import is_rootless
    ref = opts.get("image")
    if not ref:
        raise HakoError("bundle: --image REF is required", 2)
    if not args:
        raise HakoError("bundle: expected the bundle directory", 2)
    dest, cmd = os.path.abspath(args[0]), args[1:]
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    rootless = is_rootless(g.get("rootless"))
    store = Store(opts.get("store") or default_path(rootless), rootless=rootless)
    store.init()
    with store.lock_store(exclusive=False):
        img = _open(store, ref, opts, source)
        try:
            dirs, unpacked = store.ensure_layers(img, log.warn, _bad_blob(store, img))
            # a layer listed twice: its topmost place alone gives the same tree
            # (overlayfs refuses a lower directory twice: ELOOP)
            dirs = [d for i, d in enumerate(dirs) if d not in dirs[i + 1:]]
            if img.kind == "store":
                from runtime.image import content
                content.drop_unpacked(store, img.blobs + [(x.digest, x.diff_id)
                                                          for x in img.layers])
            driver, notes = drivers.choose(opts.get("driver"), rootless, store.path)
            for n in notes:
                log.debug(f"bundle: driver {n}")
            metas = [store.layer_meta(x.diff_id) for x in img.layers]
            spec = B.make_config(img.config, rootless=rootless, mapping=store.mapping,
                                 args=cmd, tty=bool(opts.get("tty")),
                                 lowers_top_first=list(reversed(dirs)))
            names = img.names or ([img.name] if img.name else [])
            B.annotate(spec, driver=driver, layer_dirs=dirs, root=B.root_attr(metas),
                       image_id=img.id, names=names, manifest=img.manifest_digest,
                       keep=bool(opts.get("keep-rw")))
            B.write_bundle(dest, spec, force=bool(opts.get("force")))
            if img.kind != "store":
                store.record_image(img, dirs)
            store.record_bundle(dest, img.id, [x.diff_id for x in img.layers])
        finally:
            img.close()
    print(f"{dest}: {names[0] if names else img.id[:19]} ({len(img.layers)} layers, "
          f"{unpacked} unpacked), driver {driver}")
    return 0


def _bad_blob(store, img):
    """For Store.ensure_layers: a stored blob that fails its digests is
    removed (the next pull fetches it again)."""
    def on_error(layer, e: BaseException) -> None:
        from runtime.image import digest as D
        if img.kind == "store" and layer.digest and isinstance(e, D.DigestError):
            store.content.remove(layer.digest)
            raise HakoError(f"{e}: the stored blob was removed: pull the image again") \
                from None
    return on_error


class _StoredImage:
    """An image the store already holds (by name or id), without its source:
    each layer unpacked, or unpackable from a blob of the store."""

    kind = "store"

    def __init__(self, store, rec: dict) -> None:
        from runtime.image import content
        from runtime.image.source import LayerRef
        self.store = store
        self.id = rec["id"]
        self.names = rec.get("names") or []
        self.name = self.names[0] if self.names else None
        self.manifest_digest = rec.get("manifest") or rec["id"]
        self.config = rec.get("config") or {}
        self.path = (rec.get("source") or {}).get("path", "")
        sizes = rec.get("sizes") or []
        mts = rec.get("media_types") or []
        self.blobs = list(zip(rec.get("blobs") or [], rec.get("layers") or []))
        self.layers, missing = [], []
        records = None
        for i, (b, d) in enumerate(self.blobs):
            ref = LayerRef(b, d, mts[i] if i < len(mts) else "",
                           sizes[i] if i < len(sizes) else None, "")
            if not store.is_complete(d):
                records = records if records is not None else content._records_layers(store)
                src = content.source_for(store, ref, records)
                if src is None:
                    missing.append(d)
                ref = src or ref
            self.layers.append(ref)
        if missing:
            src = rec.get("source") or {}
            how = f"pull it again (hako images pull {self.name or self.id})" \
                if src.get("kind") == "docker" else f"bundle it from its archive ({self.path})"
            raise HakoError(f"image {self.name or self.id}: {len(missing)} of its layers are no "
                            f"longer in the store: {how}")

    def open_layer(self, layer):
        f = open(self.store.content.path(layer.digest), "rb", buffering=1 << 20)
        return f, os.fstat(f.fileno()).st_size

    def close(self) -> None:
        pass


_FILE_TRANSPORTS = ("oci:", "oci-archive:", "docker-archive:")


def _stored(store, ref: str):
    """The store's record for *ref*: by name or id, or a short name by the
    qualified names registries.conf gives it (a complete one first)."""
    from runtime.image import reference as R
    from runtime.image import content, regconf
    names = [ref[len("docker://"):] if ref.startswith("docker://") else ref]
    try:
        parsed = R.parse(ref)
        conf = regconf.RegistriesConf.load()
        names += [str(c.tagged()) for c in conf.candidates(parsed)]
    except HakoError:
        pass
    found = None
    for n in names:
        rec = store.find_image(n)
        if rec is not None:
            if content.image_available(store, rec):
                return rec
            found = found or rec
    return found


def _open(store, ref: str, opts: dict, source):
    from runtime.image import reference as R
    policy = opts.get("pull") or "missing"
    if policy not in ("always", "missing", "never"):
        raise HakoError(f"--pull: {policy!r} (always, missing or never)", 2)
    file_error = None
    if not ref.startswith("docker://"):
        try:
            source.parse_ref(ref)
        except source.ImageError as e:
            file_error = e
        if file_error is None:
            return source.open_image(ref, opts.get("name"), opts.get("platform"))
    if policy != "always":
        rec = _stored(store, ref)
        from runtime.image import content
        incomplete = rec is not None and not content.image_available(store, rec)
        if rec is not None and not (incomplete and policy == "missing"
                                    and (rec.get("source") or {}).get("kind") == "docker"):
            return _StoredImage(store, rec)  # (which says what to do when incomplete)
    registry_ref = not ref.startswith(_FILE_TRANSPORTS) and R.is_registry_ref(ref) and \
        not ref.endswith((".tar", ".tar.gz", ".tgz"))
    if not registry_ref:
        raise HakoError(f"{file_error} (and no image {ref!r} in the store {store.path})")
    if policy == "never":
        raise HakoError(f"no image {ref!r} in the store {store.path} (--pull never)")
    from runtime.commands.images import pull_options
    from runtime.image import pull
    rec = pull.pull(ref, store, pull_options(opts, quiet=False))
    return _StoredImage(store, rec)
