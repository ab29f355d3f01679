"""``hako images pull``: an image from a registry into the layer store.

1. The reference is resolved (``regconf``): a short name through
   ``[aliases]`` or ``unqualified-search-registries`` (tried in order), each
   candidate through its mirrors, then its location.
2. The manifest (an index is followed to the wanted platform), then the
   config, are fetched and verified.
3. Layers whose ``diff_id`` the store already holds (unpacked, or as a
   blob of any image) are skipped. The others are downloaded by a few
   threads (``JOBS``) into ``<store>/downloads/``, verified while streamed,
   fsync'ed and renamed into the content area (``content.py``). Nothing is
   unpacked here: ``hako bundle`` unpacks a layer the first time a bundle
   needs it (containerd's split of content and snapshots). A mismatching
   blob is deleted at once; a blob left by a killed pull is resumed
   (re-hashed, then Range) by the next one.
4. The image is recorded under its qualified name (the tag moves to it).
"""

from __future__ import annotations

import fcntl
import os
import threading

from runtime.errors import HakoError
from runtime.image import digest as D
from runtime.image import content as C
from runtime.image import blobfetch, httpc, regauth, regconf
from runtime.image import reference as R
from runtime.image import source as S
from runtime.image.pullview import Display, human
from runtime.image.registry import Registry, RegistryError, Stopped

JOBS = max(1, min(8, int(os.environ.get("HAKO_PULL_JOBS") or 3)))
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")


class PullError(HakoError):
    pass


class Options:
    def __init__(self, *, platform: str | None = None, tls_verify: bool = True,
                 creds: regauth.Credentials | None = None, authfile: str | None = None,
                 cert_dir: str | None = None, quiet: bool = False, log=None) -> None:
        self.platform = platform
        self.tls_verify = tls_verify
        self.creds = creds
        self.authfile = authfile
        self.cert_dir = cert_dir
        self.quiet = quiet
        self.log = log or (lambda msg: None)


class RemoteImage:
    """What ``Store.record_image`` needs, for a pulled image."""

    kind = "docker"

    def __init__(self, ref: R.Reference, names: list[str], manifest_digest: str,
                 config_digest: str, config_raw: bytes, config: dict,
                 layers: list[S.LayerRef]) -> None:
        self.ref = ref
        self.source_repo = ref.repository     # where the blobs are (a mirror's path)
        self.path = f"docker://{ref}"
        self.name = names[0] if names else None
        self.names = names
        self.manifest_digest = manifest_digest
        self.config_digest = config_digest
        self.config_raw = config_raw
        self.config = config
        self.layers = layers
        self.origin: str | None = None        # the mirror it came from

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def platform(self) -> str:
        return S.platform_str({k: self.config.get(k) for k in ("os", "architecture", "variant")
                               if self.config.get(k)})

    def close(self) -> None:
        pass


# ----------------------------------------------------------------- resolution
class _Registries:
    """One Registry object per host, with its credentials."""

    def __init__(self, opts: Options, conf: regconf.RegistriesConf) -> None:
        self.opts = opts
        self.conf = conf
        self.by_host: dict[tuple, Registry] = {}

    def get(self, ref: R.Reference, insecure: bool) -> Registry:
        insecure = insecure or self.conf.insecure(ref.registry)
        key = (ref.registry, insecure)
        reg = self.by_host.get(key)
        if reg is None:
            creds = self.opts.creds or regauth.lookup(ref.registry, ref.repository,
                                                      self.opts.authfile)
            if creds is not None:
                self.opts.log(f"{ref.registry}: credentials of {creds.user} from {creds.source}")
            reg = Registry(ref.registry, insecure=insecure, tls_verify=self.opts.tls_verify,
                           creds=creds, cert_dir=self.opts.cert_dir, log=self.opts.log)
            self.by_host[key] = reg
        return reg

    def close(self) -> None:
        for r in self.by_host.values():
            r.close()

    def abort(self) -> None:
        for r in self.by_host.values():
            r.abort()


def _media_type(doc: dict, header: str) -> str:
    mt = doc.get("mediaType") or header
    if mt in S.INDEX_TYPES or mt in S.MANIFEST_TYPES or mt in SCHEMA1:
        return mt
    if doc.get("schemaVersion") == 1:
        return SCHEMA1[0]
    return S.MT_OCI_INDEX if "manifests" in doc else S.MT_OCI_MANIFEST


def resolve(reg: Registry, ref: R.Reference, want: dict, explicit: bool, names: list[str]
            ) -> RemoteImage:
    """Manifest (through an index), config and layer list of *ref*."""
    repo = ref.repository
    what = str(ref)
    data, header_mt, digest = reg.manifest(repo, ref.reference, what)
    for _depth in range(4):
        doc = S.json_doc(data, f"{what}: manifest {digest}", error=PullError)
        mt = _media_type(doc, header_mt)
        if mt in SCHEMA1:
            raise PullError(f"{what}: a Docker schema 1 manifest (deprecated, unsupported): "
                            "push the image again with a current tool")
        if mt not in S.INDEX_TYPES:
            break
        descs = [d for d in doc.get("manifests") or [] if isinstance(d, dict)]
        if not descs:
            raise PullError(f"{what}: empty image index")
        descs = [d for d in descs if (d.get("platform") or {}).get("os") != "unknown"] or descs
        desc = S.pick_platform(descs, want, what)
        dg = desc.get("digest")
        D.parse(dg, f"{what}: index entry")
        data, header_mt, digest = reg.manifest(repo, dg, f"{what}: manifest {dg[:19]}")
        if desc.get("size") is not None and len(data) != desc["size"]:
            raise D.DigestError(f"{what}: manifest {dg}: size mismatch: the index says "
                                f"{desc['size']} bytes, got {len(data)}")
    else:
        raise PullError(f"{what}: image indexes nested too deeply")
    if mt not in S.MANIFEST_TYPES:
        raise PullError(f"{what}: unsupported manifest media type {mt}")
    cdesc = doc.get("config")
    if not isinstance(cdesc, dict):
        raise PullError(f"{what}: manifest {digest}: no config descriptor")
    if cdesc.get("mediaType") and cdesc["mediaType"] not in S.CONFIG_TYPES:
        raise PullError(f"{what}: config of type {cdesc['mediaType']} is not a container "
                        "image (an artifact?)")
    D.parse(cdesc.get("digest"), f"{what}: config")
    craw = reg.blob_bytes(repo, cdesc, f"{what}: config {cdesc['digest'][:19]}")
    config = S.json_doc(craw, f"{what}: config", error=PullError)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    ldescs = [d for d in doc.get("layers") or [] if isinstance(d, dict)]
    if len(diff_ids) != len(ldescs):
        raise PullError(f"{what}: {len(ldescs)} layers but the config lists {len(diff_ids)} "
                        "diff_ids")
    layers = []
    for i, (ld, did) in enumerate(zip(ldescs, diff_ids)):
        D.parse(ld.get("digest"), f"{what}: layers[{i}]")
        D.parse(did, f"{what}: config rootfs.diff_ids[{i}]")
        mt = ld.get("mediaType") or ""
        if mt and mt not in LAYER_TYPES:
            raise PullError(f"{what}: layers[{i}]: media type {mt} is not a container image "
                            "layer")
        size = ld.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise PullError(f"{what}: layers[{i}]: invalid size {size!r}")
        layers.append(S.LayerRef(ld["digest"], did, mt, size, "",
                                 _urls(ld.get("urls"), f"{what}: layers[{i}].urls")))
    S._check_config_platform(config, want, what, strict=explicit)
    if ref.digest:
        names = names + [f"{ref.name}@{ref.digest}"]
    return RemoteImage(ref, names, digest, cdesc["digest"], craw, config, layers)


def _urls(value, what: str) -> tuple[str, ...]:
    """A descriptor's urls: HTTP(S) addresses the blob may also come from."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise PullError(f"{what}: expected a list of URLs")
    for u in value:
        if not u.startswith(("https://", "http://")) or "#" in u or any(
                c.isspace() or ord(c) < 32 for c in u):
            raise PullError(f"{what}: {u[:100]!r} is not an http(s) URL")
    return tuple(value)


def find(text: str, opts: Options, regs: _Registries) -> tuple[Registry, RemoteImage]:
    """Try every candidate and endpoint of *text*; the first image found."""
    ref = R.parse(text)
    conf = regs.conf
    want = S.parse_platform(opts.platform)
    cands = [c.tagged() for c in conf.candidates(ref)]
    errors: list[tuple[str, HakoError]] = []
    for cand in cands:
        names = [str(cand)] if cand.tag else []
        for ep in conf.endpoints(cand):
            try:
                reg = regs.get(ep.ref, ep.insecure)
                img = resolve(reg, ep.ref, want, bool(opts.platform), names)
                if ep.ref.name != cand.name:
                    opts.log(f"{cand}: from {ep.ref.name}")
                img.origin = ep.ref.name if ep.ref.name != cand.name else None
                img.ref = cand
                img.path = f"docker://{cand}"
                return reg, img
            except (RegistryError, httpc.TransportError, D.DigestError) as e:
                errors.append((str(ep.ref), e))
                opts.log(f"{ep.ref}: {e}")
                continue
    if len(errors) == 1:
        raise errors[0][1]
    if not ref.qualified and all(isinstance(e, RegistryError) and e.not_found
                                 for _, e in errors):
        raise PullError(f"{text}: not found in the search registries "
                        f"({', '.join(n for n, _ in errors)})")
    raise PullError(f"{text}: " + "; ".join(str(e) for _, e in errors))


# ------------------------------------------------------------------ downloads
class _Blob:
    def __init__(self, layer: S.LayerRef, path: str) -> None:
        self.layer = layer
        self.path = path
        self.lock_path = path + ".lock"
        self.lock_fd = -1
        self.mutex = threading.Lock()
        self.row: dict | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.fetched = False

    def release(self, remove: bool) -> None:
        """Unlock (main thread and worker may both call it); the file is
        removed only by the holder of the lock."""
        with self.mutex:
            if self.lock_fd < 0:
                return
            for p in ((self.path,) if remove else ()) + (self.lock_path,):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            os.close(self.lock_fd)
            self.lock_fd = -1


def _lock(blob: _Blob, stop: threading.Event) -> None:
    """flock the blob's lock file (the one still at its path)."""
    while True:
        fd = os.open(blob.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop.wait(0.1):
                    os.close(fd)
                    raise Stopped() from None
        try:
            same = os.stat(blob.lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            blob.lock_fd = fd
            return
        os.close(fd)  # its holder removed it: lock the new one


def _worker(queue: list, qlock: threading.Lock, reg: Registry, repo: str, store,
            stop: threading.Event, display: Display) -> None:
    while True:
        with qlock:
            if not queue:
                return
            blob = queue.pop(0)
        if stop.is_set():  # another download failed: nobody waits forever on this one
            blob.error = Stopped()
            blob.done.set()
            continue
        try:
            _lock(blob, stop)
            if C.available(store, blob.layer):
                blob.release(remove=False)  # another hako fetched it meanwhile
                display.set(blob.row, "already in the store", "already in the store")
            else:
                display.set(blob.row, "downloading")
                desc = {"digest": blob.layer.digest, "size": blob.layer.size,
                        "urls": blob.layer.urls}

                def progress(n: int, row=blob.row) -> None:
                    row["done"] = n
                blobfetch.download(reg, repo, desc, blob.path, f"{blob.layer.digest[:19]}",
                                   progress=progress, stop=stop)
                store.content.commit(blob.path, blob.layer.digest)
                blob.fetched = True
                display.set(blob.row, "downloaded",
                            f"downloaded {human(blob.layer.size or blob.row['done'])}")
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            blob.error = e
            blob.release(remove=False)  # download() removed a bad file itself
            stop.set()
        finally:
            blob.done.set()


def pull(text: str, store, opts: Options) -> dict:
    """Pull *text* into *store*; returns the image record."""
    conf = regconf.RegistriesConf.load()
    regs = _Registries(opts, conf)
    display = Display(opts.quiet)
    summary = None
    try:
        reg, img = find(text, opts, regs)
        rec = _fetch_layers(reg, img, store, opts, display, regs)
        summary = rec.pop("summary")
        return rec
    finally:
        display.finish(summary)
        regs.close()


def _fetch_layers(reg: Registry, img: RemoteImage, store, opts: Options, display: Display,
                  regs: _Registries) -> dict:
    httpc.hold_gate_across_fork()
    n = len(img.layers)
    display.line(f"{img.ref}: manifest {img.manifest_digest[:19]}, {n} layer"
                 f"{'s' if n != 1 else ''}, {img.platform}"
                 + (f", from {img.origin}" if img.origin else ""))
    try:
        store.content.init()
    except OSError as e:
        raise PullError(f"{store.content.downloads}: {e.strerror}") from None
    downloads = store.content.downloads
    records = C._records_layers(store)
    blobs: dict[str, _Blob] = {}
    queue: list[_Blob] = []
    for layer in img.layers:
        label = f"Copying blob {layer.digest[7:19]}"
        if layer.digest in blobs:
            continue
        if C.available(store, layer, records):
            display.set(display.add(label, layer.size, "already in the store"), "skipped",
                        "already in the store")
            continue
        b = _Blob(layer, os.path.join(downloads, f"{D.hex_of(layer.digest)}"))
        b.row = display.add(label, layer.size, "waiting")
        blobs[layer.digest] = b
        queue.append(b)
    stop = threading.Event()
    qlock = threading.Lock()
    threads = [threading.Thread(target=_worker, args=(queue, qlock, reg, img.source_repo, store,
                                                      stop, display), daemon=True)
               for _ in range(min(JOBS, len(queue)))]
    display.start()
    for t in threads:
        t.start()
    try:
        for b in blobs.values():
            while not b.done.wait(0.2):
                pass
            if b.error is not None:
                # a download stopped because another failed: that one's error
                raise next((x.error for x in blobs.values() if x.error is not None
                            and not isinstance(x.error, Stopped)), b.error)
            b.release(remove=True)
        for t in threads:
            t.join()  # `hako bundle REF` forks next (rootless unpack)
        rec = store.record_image(img, [store.diff_dir(x.diff_id) for x in img.layers])
        _move_names(store, img)
    except BaseException as e:
        stop.set()
        regs.abort()
        for t in threads:
            t.join(timeout=10)
        for b in blobs.values():
            # a bad blob is gone already; a partial one goes too
            b.release(remove=True)
        if isinstance(e, Stopped):
            raise PullError(f"{img.ref}: interrupted") from None
        raise
    fetched = sum(1 for b in blobs.values() if b.fetched)
    rec = dict(rec, fetched=fetched,
               summary=f"{img.ref}: {fetched} layer{'s' if fetched != 1 else ''} pulled, "
                       f"{n - fetched} already in the store; image {img.id[:19]}")
    return rec


def _move_names(store, img: RemoteImage) -> None:
    """A tag names one image: drop the pulled names from other records."""
    from runtime.image.store import _write_json
    for rec in store.images():
        if rec["id"] == img.id:
            continue
        keep = [x for x in rec.get("names") or [] if x not in img.names]
        if keep != (rec.get("names") or []):
            rec["names"] = keep
            _write_json(os.path.join(store.images_dir, f"{D.hex_of(rec['id'])}.json"), rec)
