"""The per-user, content-addressed layer store.

Where: ``$HAKO_STORE`` or ``--store``; else /var/lib/hako for root and
``$XDG_DATA_HOME/hako`` (``~/.local/share/hako``) for everybody else::

    idmap                       the id mapping the layers were unpacked with
    layers/<hex>/diff/          one layer, keyed by its diff_id (uncompressed digest)
    layers/<hex>/layer.json     its completion marker, written last (then renamed in)
    layers/.tmp-<hex>-<pid>/    an unpack in progress (or interrupted: removed later)
    locks/<hex>.lock            flock per layer: one unpack at a time
    store.lock                  flock: shared by unpacks and bundles, exclusive for rm/prune
    images/<config hex>.json    image records (names, config, layers, blobs)
    blobs/sha256/<hex>          pulled layer blobs not unpacked yet (``content``)
    downloads/<hex>             blobs being downloaded
    bundles/<key>.json          bundles that use layers (kept while the bundle is)

A layer is unpacked once: into a temporary directory, under its lock, with
both digests verified at the end; then its marker is written (after syncfs:
one for all the layers a bundle unpacks) and the directory renamed into place. A directory without a marker is never
used; leftovers of an interrupted unpack are removed by the next unpack of
that layer or by ``hako layers prune``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from runtime.errors import HakoError
from runtime.image import digest as D
from runtime.image import idmap
from runtime.image.content import Content
from runtime.image.unpackjob import rmtrees, unpack_job

MARKER = "layer.json"


class StoreError(HakoError):
    pass


def default_path(rootless: bool) -> str:
    env = os.environ.get("HAKO_STORE")
    if env:
        return os.path.abspath(env)
    if not rootless and os.geteuid() == 0:
        return "/var/lib/hako"
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "hako")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "hako")


def _syncfs(fd: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syncfs(ctypes.c_int(fd))


def _write_json(path: str, doc: dict, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def dir_size(path: str) -> int:
    total = 0
    seen = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class _Lock:
    def __init__(self, path: str, exclusive: bool = True, wait: bool = True) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                        | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self.release()  # fd -1: held by another

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "_Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Store:
    def __init__(self, path: str, *, rootless: bool) -> None:
        self.path = os.path.abspath(path)
        self.rootless = rootless
        self.mapping = idmap.current_mapping(rootless)
        self.layers_dir = os.path.join(self.path, "layers")
        self.locks_dir = os.path.join(self.path, "locks")
        self.images_dir = os.path.join(self.path, "images")
        self.bundles_dir = os.path.join(self.path, "bundles")
        self.content = Content(self.path)
        self._warned = False

    # ------------------------------------------------------------------ setup
    def init(self) -> None:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            for d in (self.layers_dir, self.locks_dir, self.images_dir, self.bundles_dir):
                os.makedirs(d, mode=0o700, exist_ok=True)
            self.content.init()
        except OSError as e:
            raise StoreError(f"layer store {self.path}: {e.strerror}") from None
        self.check_idmap(write=True)

    def check_idmap(self, write: bool = False) -> None:
        want = idmap.key(self.mapping)
        p = os.path.join(self.path, "idmap")
        try:
            with open(p) as f:
                have = f.read().strip()
        except FileNotFoundError:
            if write:
                # atomically: a concurrent `bundle` must never read it half-written
                tmp = f"{p}.{os.getpid()}.tmp"
                with open(tmp, "w") as f:
                    f.write(want + "\n")
                try:
                    os.link(tmp, p)  # first writer wins; the others compare below
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
                self.check_idmap(write=False)
            return
        if have != want:
            raise StoreError(f"layer store {self.path} was made with the id mapping {have}, "
                             f"not the current {want} (/etc/subuid changed?): use another "
                             "--store, or remove it with `hako layers prune --all`")

    def lock_store(self, exclusive: bool) -> _Lock:
        return _Lock(os.path.join(self.path, "store.lock"), exclusive)

    # ----------------------------------------------------------------- layers
    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layers_dir, D.hex_of(diff_id, "layer"))

    def diff_dir(self, diff_id: str) -> str:
        return os.path.join(self.layer_dir(diff_id), "diff")

    def is_complete(self, diff_id: str) -> bool:
        return os.path.isfile(os.path.join(self.layer_dir(diff_id), MARKER))

    def layer_meta(self, diff_id: str) -> dict | None:
        return _read_json(os.path.join(self.layer_dir(diff_id), MARKER))

    def ensure_layers(self, img, log_fn=None, on_error=None) -> tuple[list[str], int]:
        """Unpack every layer of *img* not yet in the store (bottom first);
        returns the diff directories (bottom first) and how many this call
        unpacked. One ``syncfs`` for them all (not one per layer): each is
        unpacked under its lock into its temporary directory, then all are
        synced, then each gets its marker and is renamed in. Waiting for a
        lock another hako holds, we first commit what we hold (so two calls
        never wait on each other). *on_error(layer, exc)* may replace an
        unpack error."""
        dirs: list[str] = []
        reads: list[str] = []        # what the next layer sees below it
        pending: list[tuple] = []    # (lock, tmp, final, meta)
        held: dict[str, str] = {}    # diff_id -> its temporary directory, pending
        n = len(img.layers)
        unpacked = 0
        try:
            for i, layer in enumerate(img.layers):
                final = self.layer_dir(layer.diff_id)
                dirs.append(os.path.join(final, "diff"))
                reads.append(dirs[-1])
                if layer.diff_id in held:  # the same layer twice, not committed yet
                    reads[-1] = os.path.join(held[layer.diff_id], "diff")
                    continue
                if self.is_complete(layer.diff_id):
                    continue
                lockp = os.path.join(self.locks_dir, f"{D.hex_of(layer.diff_id, 'layer')}.lock")
                lock = _Lock(lockp, wait=False)
                if lock.fd < 0:  # another hako unpacks it: wait holding nothing
                    self._commit(pending)
                    held.clear()
                    lock = _Lock(lockp)
                if self.is_complete(layer.diff_id):
                    lock.release()  # unpacked while we waited
                    continue
                try:
                    tmp, meta = self._unpack(img, layer, list(reversed(reads[:-1])),
                                             f"layer {i + 1}/{n}", log_fn)
                except BaseException as e:
                    lock.release()
                    if on_error is not None:
                        on_error(layer, e)
                    raise
                pending.append((lock, tmp, final, meta))
                held[layer.diff_id] = tmp
                unpacked += 1
                reads[-1] = os.path.join(tmp, "diff")
        finally:
            self._commit(pending)  # verified layers stay, also after a failure
        return dirs, unpacked

    def ensure_layer(self, img, layer, lowers: list[str], label: str, log_fn=None) -> bool:
        """One layer (its lowers complete); True when this call unpacked it."""
        if self.is_complete(layer.diff_id):
            return False
        with _Lock(os.path.join(self.locks_dir, f"{D.hex_of(layer.diff_id, 'layer')}.lock")):
            if self.is_complete(layer.diff_id):
                return False  # somebody else unpacked it while we waited
            tmp, meta = self._unpack(img, layer, lowers, label, log_fn)
            self._commit([(None, tmp, self.layer_dir(layer.diff_id), meta)])
            return True

    def _commit(self, pending: list[tuple]) -> None:
        """syncfs once, then marker and rename for each; locks released."""
        if not pending:
            return
        try:
            fd = os.open(self.layers_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _syncfs(fd)
            finally:
                os.close(fd)
            for _lock, tmp, final, meta in pending:
                _write_json(os.path.join(tmp, MARKER), meta)
                os.rename(tmp, final)
        finally:
            for lock, *_ in pending:
                if lock is not None:
                    lock.release()
            pending.clear()

    def _unpack(self, img, layer, lowers: list[str], label: str, log_fn) -> tuple[str, dict]:
        """Under the layer's lock: into a new temporary directory; returns it
        and the marker's content (not written yet)."""
        hexid = D.hex_of(layer.diff_id, "layer")
        final = self.layer_dir(layer.diff_id)
        stale = [os.path.join(self.layers_dir, n) for n in os.listdir(self.layers_dir)
                 if n.startswith(f".tmp-{hexid}-")]
        if os.path.lexists(final):
            # a directory without marker (not made by hako): not trusted
            moved = os.path.join(self.layers_dir, f".tmp-{hexid}-stale-{os.getpid()}")
            os.rename(final, moved)
            stale.append(moved)
        tmp = os.path.join(self.layers_dir, f".tmp-{hexid}-{os.getpid()}-{time.time_ns()}")
        os.mkdir(tmp, 0o700)
        os.mkdir(os.path.join(tmp, "diff"), 0o755)
        what = f"{label} {layer.digest or layer.diff_id}"
        args = (img, layer, os.path.join(tmp, "diff"), lowers, self.rootless, stale, what, label)
        try:
            if self.mapping is not None:
                res = idmap.run_in_userns(self.mapping, unpack_job, *args)
            else:
                res = unpack_job(*args)
        except BaseException:
            try:
                os.rmdir(os.path.join(tmp, "diff"))  # the job removed its content
                os.rmdir(tmp)
            except OSError:
                pass
            raise
        if res.get("unmapped") and not idmap.has_subids(self.mapping) and log_fn:
            if not self._warned:
                log_fn(f"{what}: {res['unmapped']} entries are owned by ids other than "
                       "root and you have no subordinate ids (/etc/subuid): they belong to "
                       "you (root in the container)")
                self._warned = True
        for s in res.get("skipped") or []:
            if log_fn:
                log_fn(f"{what}: skipped {s}")
        return tmp, {"diff_id": layer.diff_id, "digest": layer.digest,
                     "media_type": layer.media_type, "unpacked": time.time(),
                     "unpacked_by": os.getpid(), "idmap": idmap.key(self.mapping),
                     "source": img.path, **res}

    def list_layers(self) -> list[dict]:
        out = []
        try:
            names = sorted(os.listdir(self.layers_dir))
        except FileNotFoundError:
            return []
        for n in names:
            p = os.path.join(self.layers_dir, n)
            if n.startswith("."):
                out.append({"diff_id": None, "dir": p, "complete": False, "tmp": True})
                continue
            meta = _read_json(os.path.join(p, MARKER))
            out.append({"diff_id": f"sha256:{n}", "dir": p, "complete": meta is not None,
                        "tmp": False, "meta": meta or {}})
        return out

    def resolve_layer(self, text: str) -> str:
        """A diff_id from a full digest, its hex, or a unique prefix."""
        t = text.split(":", 1)[1] if text.startswith("sha256:") else text
        if not t or any(c not in "0123456789abcdef" for c in t):
            raise StoreError(f"{text!r} is not a layer digest")
        found = [x["diff_id"] for x in self.list_layers()
                 if x["diff_id"] and x["diff_id"][7:].startswith(t)]
        if not found:
            raise StoreError(f"no layer {text} in {self.path}")
        if len(found) > 1:
            raise StoreError(f"layer prefix {text} is ambiguous ({len(found)} layers)")
        return found[0]

    def remove_dirs(self, paths: list[str]) -> None:
        """rm -rf, through the user namespace when the files are not ours."""
        paths = [p for p in paths if os.path.lexists(p)]
        if not paths:
            return
        if self.mapping is not None and idmap.has_subids(self.mapping):
            idmap.run_in_userns(self.mapping, rmtrees, paths)
        else:
            rmtrees(paths)

    def remove_layer(self, diff_id: str) -> None:
        hexid = D.hex_of(diff_id, "layer")
        with _Lock(os.path.join(self.locks_dir, f"{hexid}.lock")):
            final = self.layer_dir(diff_id)
            if not os.path.lexists(final):
                return
            gone = os.path.join(self.layers_dir, f".tmp-rm-{hexid}-{os.getpid()}")
            os.rename(final, gone)  # no longer complete, atomically
        self.remove_dirs([gone])
        try:
            os.unlink(os.path.join(self.locks_dir, f"{hexid}.lock"))
        except OSError:
            pass

    # ----------------------------------------------------------------- images
    def record_image(self, img, dirs: list[str]) -> dict:
        hexid = D.hex_of(img.id, "image")
        p = os.path.join(self.images_dir, f"{hexid}.json")
        old = _read_json(p) or {}
        names = list(dict.fromkeys((old.get("names") or []) + (img.names or [])
                                   + ([img.name] if img.name and ":" not in img.name[:7]
                                      and not img.name.startswith("sha") else [])))
        rec = {"id": img.id, "names": names, "manifest": img.manifest_digest,
               "source": {"kind": img.kind, "path": img.path}, "platform": img.platform,
               "config": img.config, "layers": [x.diff_id for x in img.layers],
               "blobs": [x.digest for x in img.layers],
               "sizes": [x.size for x in img.layers],
               "media_types": [x.media_type for x in img.layers],
               "created": old.get("created") or time.time(), "used": time.time()}
        _write_json(p, rec)
        return rec

    def images(self) -> list[dict]:
        out = []
        try:
            names = sorted(os.listdir(self.images_dir))
        except FileNotFoundError:
            return []
        for n in names:
            if n.endswith(".json"):
                rec = _read_json(os.path.join(self.images_dir, n))
                if rec and rec.get("id"):
                    out.append(rec)
        return out

    def find_image(self, ref: str) -> dict | None:
        from runtime.image.source import normalize_name
        recs = self.images()
        t = ref.split(":", 1)[1] if ref.startswith("sha256:") else ref
        by_id = [r for r in recs if len(t) >= 6 and all(c in "0123456789abcdef" for c in t)
                 and r["id"][7:].startswith(t)]
        if len(by_id) == 1:
            return by_id[0]
        by_name = [r for r in recs if ref in r.get("names", []) or any(
            normalize_name(n) == normalize_name(ref) for n in r.get("names", []) if "/" in n
            or ":" in n)]
        if len(by_name) > 1:
            raise StoreError(f"image name {ref} is ambiguous in {self.path}")
        return by_name[0] if by_name else None

    def remove_image(self, rec: dict) -> None:
        try:
            os.unlink(os.path.join(self.images_dir, f"{D.hex_of(rec['id'])}.json"))
        except FileNotFoundError:
            pass

    # ---------------------------------------------------------------- bundles
    def _bundle_key(self, bundle: str) -> str:
        import hashlib
        return hashlib.sha256(os.path.abspath(bundle).encode()).hexdigest()[:32]

    def record_bundle(self, bundle: str, image_id: str, diff_ids: list[str]) -> None:
        _write_json(os.path.join(self.bundles_dir, self._bundle_key(bundle) + ".json"),
                    {"bundle": os.path.abspath(bundle), "image": image_id, "layers": diff_ids,
                     "created": time.time()})

    def live_bundles(self) -> list[dict]:
        """Bundles that still exist and still use layers of this store (the
        others' records are dropped)."""
        from runtime.image.annotations import ANN_LAYERS
        out = []
        try:
            names = sorted(os.listdir(self.bundles_dir))
        except FileNotFoundError:
            return []
        for n in names:
            p = os.path.join(self.bundles_dir, n)
            rec = _read_json(p)
            cfg = _read_json(os.path.join(rec["bundle"], "config.json")) if rec else None
            layers = []
            if cfg:
                try:
                    layers = json.loads((cfg.get("annotations") or {}).get(ANN_LAYERS) or "[]")
                except ValueError:
                    layers = []
            mine = [lp for lp in layers if isinstance(lp, str)
                    and lp.startswith(self.layers_dir + "/")]
            if not mine:
                try:
                    os.unlink(p)
                except OSError:
                    pass
                continue
            rec["layers"] = [f"sha256:{os.path.basename(os.path.dirname(lp))}" for lp in mine]
            out.append(rec)
        return out

    def users_of(self) -> dict[str, list[str]]:
        """diff_id -> what uses it (image names/ids, bundle paths)."""
        users: dict[str, list[str]] = {}
        for rec in self.images():
            label = "image " + ((rec.get("names") or [None])[0] or rec["id"][:19])
            for d in rec.get("layers") or []:
                users.setdefault(d, []).append(label)
        for b in self.live_bundles():
            for d in b["layers"]:
                users.setdefault(d, []).append("bundle " + b["bundle"])
        return users

    def prune(self, *, all_layers: bool = False) -> tuple[list[str], int]:
        """Remove interrupted unpacks and layers nothing uses (with
        *all_layers*: every layer, image record and bundle record not in use
        by a live bundle). Returns (removed, bytes freed)."""
        with self.lock_store(exclusive=True):
            removed, freed = [], 0
            bundles = self.live_bundles()
            in_bundles = {d for b in bundles for d in b["layers"]}
            if all_layers:
                for rec in self.images():
                    if not set(rec.get("layers") or []) & in_bundles:
                        self.remove_image(rec)
            used = {d for d in self.users_of()}
            junk = []
            for x in self.list_layers():
                if x["tmp"] or not x["complete"]:
                    # only tmp dirs nobody holds the lock of are leftovers
                    n = os.path.basename(x["dir"])
                    hexid = n.split("-")[2] if n.startswith(".tmp-rm-") else n.split("-")[1] \
                        if n.startswith(".tmp-") else n
                    lockp = os.path.join(self.locks_dir, f"{hexid}.lock")
                    fd = os.open(lockp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        os.close(fd)
                        continue  # an unpack is running
                    os.close(fd)
                    junk.append(x["dir"])
                elif x["diff_id"] not in used:
                    junk.append(x["dir"])
                    removed.append(x["diff_id"])
            for p in junk:
                freed += dir_size(p) if not self.rootless else 0
            self.remove_dirs(junk)
            for x in junk:
                n = os.path.basename(x)
                if not n.startswith("."):
                    try:
                        os.unlink(os.path.join(self.locks_dir, f"{n}.lock"))
                    except OSError:
                        pass
            return removed, freed
