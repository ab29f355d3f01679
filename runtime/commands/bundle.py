"""hako bundle --image REF [--name N] [--platform P] [--driver D] DIR [-- CMD...]:
an OCI bundle from an image, its layers unpacked once into the layer store."""

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
            unpacked = 0
            dirs = []
            for i, layer in enumerate(img.layers):
                if store.ensure_layer(img, layer, list(reversed(dirs)),
                                      f"layer {i + 1}/{len(img.layers)}", log.warn):
                    unpacked += 1
                dirs.append(store.diff_dir(layer.diff_id))
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


class _StoredImage:
    """An image the store already holds (by name or id), without its source."""

    kind = "store"

    def __init__(self, store, rec: dict) -> None:
        from runtime.image.source import LayerRef
        self.id = rec["id"]
        self.names = rec.get("names") or []
        self.name = self.names[0] if self.names else None
        self.manifest_digest = rec.get("manifest") or rec["id"]
        self.config = rec.get("config") or {}
        self.path = (rec.get("source") or {}).get("path", "")
        self.layers = [LayerRef(b, d, "", None, "") for d, b in
                       zip(rec.get("layers") or [], rec.get("blobs") or [])]
        missing = [x.diff_id for x in self.layers if not store.is_complete(x.diff_id)]
        if missing:
            raise HakoError(f"image {self.name or self.id}: {len(missing)} of its layers are no "
                            f"longer in the store: bundle it from its archive ({self.path})")

    def close(self) -> None:
        pass


def _open(store, ref: str, opts: dict, source):
    try:
        source.parse_ref(ref)
    except source.ImageError as e:
        rec = store.find_image(ref)  # not a file: an image the store holds?
        if rec is None:
            raise HakoError(f"{e} (and no image {ref!r} in the store {store.path})") from None
        return _StoredImage(store, rec)
    return source.open_image(ref, opts.get("name"), opts.get("platform"))
