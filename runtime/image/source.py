"""Where images come from: OCI image layouts and docker-archive tarballs.

References (``hako bundle --image REF``), as skopeo spells transports::

    oci:PATH[:NAME]              an OCI image layout directory
    oci-archive:PATH[:NAME]      a tar of one (podman save --format oci-archive)
    docker-archive:PATH[:NAME]   docker save output (manifest.json + layer tars)
    PATH[:NAME] | PATH@DIGEST    any of the above, recognised by its content
Anything else (``docker://REF``, a name that is no file) is for the store or a
registry: ``commands/bundle.py`` looks it up, and pulls it (``pull``) when missing.

NAME picks a manifest by ``org.opencontainers.image.ref.name`` (or
``io.containerd.image.name``, or a docker RepoTag); a ``sha256:`` digest picks
the manifest (or index) with that digest. Indexes are followed down to the
manifest for the wanted platform (default: the host's, ``linux/amd64`` here).

Every blob is verified against its digest: index entries, manifests and
configs when read here, layers while they are unpacked (``unpack``), against
both the blob digest and the config's ``rootfs.diff_ids``.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import tarfile

from runtime.errors import HakoError
from runtime.image import digest as D

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
CONFIG_TYPES = (MT_OCI_CONFIG, MT_DOCKER_CONFIG)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
#: small JSON documents are read whole; anything bigger is not a manifest
MAX_JSON = 8 << 20

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i686": "386", "i386": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class ImageError(HakoError):
    pass


# ---------------------------------------------------------------------- platform
def host_platform() -> dict:
    arch = _ARCH.get(_platform.machine(), _platform.machine())
    if isinstance(arch, tuple):
        return {"os": "linux", "architecture": arch[0], "variant": arch[1]}
    return {"os": "linux", "architecture": arch}


def parse_platform(text: str | None) -> dict:
    if not text:
        return host_platform()
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"--platform: {text!r} is not os/arch[/variant] (e.g. linux/amd64)")
    p = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        p["variant"] = parts[2]
    return p


def platform_str(p: dict | None) -> str:
    if not p:
        return "?"
    s = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return s + (f"/{p['variant']}" if p.get("variant") else "")


def _variant(p: dict) -> str:
    v = p.get("variant") or ""
    if p.get("architecture") == "arm64" and v == "v8":
        return ""
    return v


def pick_platform(descs: list[dict], want: dict, what: str) -> dict:
    """The descriptor whose platform is *want*; an exact variant first."""
    same = [d for d in descs if (d.get("platform") or {}).get("os") == want["os"]
            and (d.get("platform") or {}).get("architecture") == want["architecture"]]
    if want.get("variant") is not None:
        exact = [d for d in same if _variant(d["platform"]) == _variant(want)]
    else:
        exact = [d for d in same if not _variant(d["platform"])] or same
    if exact:
        return exact[0]
    have = ", ".join(sorted({platform_str(d.get("platform")) for d in descs})) or "none"
    raise ImageError(f"{what}: no manifest for platform {platform_str(want)} "
                     f"(available: {have}; choose one with --platform)")


# ------------------------------------------------------------------------- files
def _norm_member(name: str, what: str) -> str:
    """A path inside a layout or archive: relative, no '..'."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise ImageError(f"{what}: refusing path {name!r} (absolute or with '..')")
    return "/".join(parts)


class _Files:
    """Read access to the files of a layout: a directory or a tarball."""

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def open(self, rel: str):
        """(binary file object, size)"""
        raise NotImplementedError

    def read(self, rel: str, what: str, limit: int = MAX_JSON) -> bytes:
        f, size = self.open(rel)
        try:
            if size > limit:
                raise ImageError(f"{what}: {rel} is {size} bytes, too big for a JSON document")
            return f.read()
        finally:
            f.close()

    def close(self) -> None:
        pass


class DirFiles(_Files):
    def __init__(self, root: str) -> None:
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open_fd(self, rel: str) -> int:
        # every component without following symlinks out of the layout
        rel = _norm_member(rel, self.root)
        from runtime.syscalls import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, SYS
        return SYS.openat2(self.fd, rel, os.O_RDONLY, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)

    def exists(self, rel: str) -> bool:
        try:
            os.close(self._open_fd(rel))
            return True
        except OSError:
            return False

    def open(self, rel: str):
        try:
            fd = self._open_fd(rel)
        except OSError as e:
            raise ImageError(f"{self.root}: {rel}: {os.strerror(e.errno or 0)}") from None
        f = os.fdopen(fd, "rb", buffering=1 << 20)
        return f, os.fstat(fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TarFiles(_Files):
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.tf = tarfile.open(path, "r:*")
            self.members: dict[str, tarfile.TarInfo] = {}
            for m in self.tf.getmembers():
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                if parts and ".." not in parts:
                    self.members["/".join(parts)] = m
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ImageError(f"{path}: not a readable tar archive: {e}") from None

    def _member(self, rel: str) -> tarfile.TarInfo | None:
        m = self.members.get(_norm_member(rel, self.path))
        seen = 0
        while m is not None and (m.issym() or m.islnk()) and seen < 8:
            # docker save links identical layers; resolve inside the archive only
            base = os.path.dirname(m.name) if m.issym() else ""
            target = os.path.normpath(os.path.join(base, m.linkname))
            m = self.members.get(_norm_member(target, self.path))
            seen += 1
        return m if m is not None and m.isfile() else None

    def exists(self, rel: str) -> bool:
        return self._member(rel) is not None

    def open(self, rel: str):
        m = self._member(rel)
        if m is None:
            raise ImageError(f"{self.path}: no file {rel} in the archive")
        f = self.tf.extractfile(m)
        return f, m.size

    def close(self) -> None:
        self.tf.close()


# ------------------------------------------------------------------------- image
class LayerRef:
    __slots__ = ("digest", "diff_id", "media_type", "size", "rel", "urls")

    def __init__(self, digest: str | None, diff_id: str, media_type: str, size: int | None,
                 rel: str, urls: tuple[str, ...] = ()) -> None:
        self.digest = digest          # the blob's digest (None: legacy docker layer.tar)
        self.diff_id = diff_id        # the uncompressed tar's digest: the store key
        self.media_type, self.size = media_type, size
        self.rel, self.urls = rel, urls  # where it is in the layout/archive; other sources


class Image:
    """One image selected from a source: its config and its layers, bottom first."""

    def __init__(self, *, kind: str, path: str, files: _Files, name: str | None,
                 names: list[str], manifest_digest: str, config_digest: str,
                 config_raw: bytes, config: dict, layers: list[LayerRef]) -> None:
        self.kind, self.path, self.files = kind, path, files
        self.name, self.names = name, names
        self.manifest_digest = manifest_digest
        self.config_digest = config_digest
        self.config_raw = config_raw
        self.config = config
        self.layers = layers

    @property
    def id(self) -> str:
        """The image id: its config digest (as docker and containers-storage)."""
        return self.config_digest

    @property
    def platform(self) -> str:
        return platform_str({k: self.config.get(k) for k in ("os", "architecture", "variant")
                             if self.config.get(k)})

    def open_layer(self, layer: LayerRef):
        return self.files.open(layer.rel)

    def close(self) -> None:
        self.files.close()


def json_doc(data: bytes, what: str, *, error: type[HakoError] = ImageError,
             list_ok: bool = False):
    """A JSON object (or, with list_ok, an array: docker's manifest.json) from
    an image's file or a registry's answer; *error* names the bad one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{what}: not valid JSON: {e}") from None
    if not isinstance(doc, (dict, list) if list_ok else dict):
        raise error(f"{what}: not a JSON {'object or array' if list_ok else 'object'}")
    return doc


def _read_blob(files: _Files, desc: dict, what: str) -> bytes:
    dg = desc.get("digest")
    algo, hexpart = D.parse(dg, what)
    data = files.read(f"blobs/{algo}/{hexpart}", what)
    if desc.get("size") is not None and len(data) != desc["size"]:
        raise D.DigestError(f"{what}: size mismatch: descriptor says {desc['size']} bytes, "
                            f"blob has {len(data)}")
    return D.verify_bytes(data, dg, what)


def normalize_name(name: str) -> str:
    """docker.io/library/busybox:latest == busybox == busybox:latest."""
    n = name
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/",
                   "localhost/"):
        if n.startswith(prefix):
            n = n[len(prefix):]
            break
    if "@" not in n and ":" not in n.rsplit("/", 1)[-1]:
        n += ":latest"
    return n


def _name_matches(names: list[str], want: str) -> bool:
    for n in names:
        if not n:
            continue
        if n == want:
            return True
        if "/" not in n and ":" not in n:
            continue  # a bare tag (skopeo's oci:dir:TAG) only matches exactly
        if normalize_name(n) == normalize_name(want):
            return True
    return False


def _desc_names(desc: dict) -> list[str]:
    ann = desc.get("annotations") or {}
    return [v for v in (ann.get(REF_NAME), ann.get(CONTAINERD_NAME)) if v]


# ----------------------------------------------------------------- the reference
def parse_ref(ref: str) -> tuple[str | None, str, str | None]:
    """(transport or None, path, name or digest or None)."""
    kind = None
    for t in ("oci", "oci-archive", "docker-archive"):
        if ref.startswith(t + ":"):
            kind, ref = t, ref[len(t) + 1:]
            break
    if os.path.exists(ref):
        return kind, ref, None
    if "@" in ref:
        p, _, dg = ref.rpartition("@")
        if os.path.exists(p):
            D.parse(dg, "image reference")
            return kind, p, dg
    # PATH:NAME, where NAME may have ':' too (name:tag): the first prefix
    # that exists is the path (skopeo's oci: paths have no ':' at all)
    i = ref.find(":")
    while i > 0:
        p, name = ref[:i], ref[i + 1:]
        if os.path.exists(p):
            return kind, p, name or None
        i = ref.find(":", i + 1)
    if kind is not None:
        raise ImageError(f"image reference {kind}:{ref}: {ref.split(':')[0]} does not exist")
    raise ImageError(f"image reference {ref!r}: no such file or directory")


def open_image(ref: str, name: str | None = None, platform: str | None = None) -> Image:
    kind, path, ref_name = parse_ref(ref)
    if name and ref_name and name != ref_name:
        raise ImageError(f"--name {name} and the name in the reference ({ref_name}) differ")
    name = name or ref_name
    want = parse_platform(platform)
    explicit_platform = bool(platform)
    path = os.path.abspath(path)
    files: _Files
    try:
        files = DirFiles(path) if os.path.isdir(path) else TarFiles(path)
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    try:
        if kind is None:
            if files.exists("oci-layout") and files.exists("index.json"):
                kind = "oci" if isinstance(files, DirFiles) else "oci-archive"
            elif files.exists("manifest.json"):
                kind = "docker-archive"
            else:
                raise ImageError(f"{path}: neither an OCI image layout (oci-layout, index.json) "
                                 "nor a docker archive (manifest.json)")
        if kind == "docker-archive":
            img = _open_docker(files, path, name, want, explicit_platform)
        else:
            if kind == "oci" and not isinstance(files, DirFiles):
                raise ImageError(f"oci:{path}: not a directory (use oci-archive: for tarballs)")
            img = _open_oci(files, path, kind, name, want)
        return img
    except BaseException:
        files.close()
        raise


def _check_layout(files: _Files, path: str) -> None:
    doc = json_doc(files.read("oci-layout", path), f"{path}: oci-layout")
    ver = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(ver, str) or not ver.startswith("1."):
        raise ImageError(f"{path}: oci-layout: unsupported imageLayoutVersion {ver!r}")


def _open_oci(files: _Files, path: str, kind: str, name: str | None, want: dict) -> Image:
    _check_layout(files, path)
    index = json_doc(files.read("index.json", path), f"{path}: index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ImageError(f"{path}: index.json has no manifests list")
    descs = [d for d in index["manifests"] if isinstance(d, dict)]
    names = sorted({n for d in descs for n in _desc_names(d)})
    chosen_names: list[str] = []
    if name and name.startswith(("sha256:", "sha512:")):
        desc = next((d for d in descs if d.get("digest") == name), None)
        if desc is None:
            desc = {"digest": name}  # a manifest inside a nested index: read it directly
        chosen_names = _desc_names(desc)
    elif name:
        matches = [d for d in descs if _name_matches(_desc_names(d), name)]
        if not matches:
            raise ImageError(f"{path}: no image named {name!r} "
                             f"(names: {', '.join(names) or 'none'})")
        desc = matches[0] if len({d.get('digest') for d in matches}) == 1 else \
            pick_platform(matches, want, f"{path}:{name}")
        chosen_names = _desc_names(desc)
    else:
        if not descs:
            raise ImageError(f"{path}: index.json lists no manifests")
        if len({d.get("digest") for d in descs}) == 1:
            desc = descs[0]
        elif all(d.get("platform") for d in descs) and len(
                {tuple(_desc_names(d)) for d in descs}) <= 1:
            desc = pick_platform(descs, want, path)  # one multi-platform image
        else:
            raise ImageError(f"{path}: holds {len(descs)} images: choose one with --name "
                             f"(names: {', '.join(names) or 'none (use a digest)'})")
        chosen_names = _desc_names(desc)
    # follow indexes down to a manifest
    for _depth in range(8):
        what = f"{path}: {desc.get('digest')}"
        raw = _read_blob(files, desc, what)
        doc = json_doc(raw, what)
        mt = doc.get("mediaType") or desc.get("mediaType") or (
            MT_OCI_INDEX if "manifests" in doc else MT_OCI_MANIFEST)
        if desc.get("mediaType") and doc.get("mediaType") and desc["mediaType"] != doc["mediaType"]:
            raise ImageError(f"{what}: mediaType {doc['mediaType']} differs from the "
                             f"descriptor's {desc['mediaType']}")
        if mt in INDEX_TYPES:
            inner = [d for d in doc.get("manifests") or [] if isinstance(d, dict)]
            if not inner:
                raise ImageError(f"{what}: empty image index")
            desc = inner[0] if len(inner) == 1 and not inner[0].get("platform") else \
                pick_platform(inner, want, what)
            continue
        if mt not in MANIFEST_TYPES:
            raise ImageError(f"{what}: unsupported manifest media type {mt}")
        return _from_manifest(files, path, kind, name, chosen_names, desc["digest"], doc, want)
    raise ImageError(f"{path}: image indexes nested too deeply")


def _from_manifest(files: _Files, path: str, kind: str, name: str | None, names: list[str],
                   manifest_digest: str, manifest: dict, want: dict) -> Image:
    what = f"{path}: manifest {manifest_digest}"
    cdesc = manifest.get("config")
    if not isinstance(cdesc, dict):
        raise ImageError(f"{what}: no config descriptor")
    if cdesc.get("mediaType") and cdesc["mediaType"] not in CONFIG_TYPES:
        raise ImageError(f"{what}: config of type {cdesc['mediaType']} is not a container "
                         "image (an artifact?)")
    craw = _read_blob(files, cdesc, f"{path}: config {cdesc.get('digest')}")
    config = json_doc(craw, f"{path}: config")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    ldescs = [d for d in manifest.get("layers") or [] if isinstance(d, dict)]
    if len(diff_ids) != len(ldescs):
        raise ImageError(f"{what}: {len(ldescs)} layers but the config lists "
                         f"{len(diff_ids)} diff_ids")
    layers = []
    for i, (ld, did) in enumerate(zip(ldescs, diff_ids)):
        algo, hexpart = D.parse(ld.get("digest"), f"{what}: layers[{i}]")
        D.parse(did, f"{what}: config rootfs.diff_ids[{i}]")
        rel = f"blobs/{algo}/{hexpart}"
        if not files.exists(rel):
            urls = " (a foreign layer: download it into the layout first)" if ld.get("urls") else ""
            raise ImageError(f"{what}: layer blob {ld['digest']} is missing{urls}")
        layers.append(LayerRef(ld["digest"], did, ld.get("mediaType") or "", ld.get("size"), rel))
    _check_config_platform(config, want, what, strict=False)
    return Image(kind=kind, path=path, files=files, name=name, names=names,
                 manifest_digest=manifest_digest, config_digest=cdesc["digest"],
                 config_raw=craw, config=config, layers=layers)


def _check_config_platform(config: dict, want: dict, what: str, strict: bool) -> None:
    os_, arch = config.get("os"), config.get("architecture")
    if os_ and arch and (os_, arch) != (want["os"], want["architecture"]):
        msg = (f"{what}: the image is for {os_}/{arch}, not "
               f"{want['os']}/{want['architecture']}")
        if strict:
            raise ImageError(msg)
        from runtime import log
        log.warn(msg)


def _open_docker(files: _Files, path: str, name: str | None, want: dict,
                 explicit_platform: bool) -> Image:
    doc = json_doc(files.read("manifest.json", path), f"{path}: manifest.json", list_ok=True)
    if not isinstance(doc, list) or not doc:
        raise ImageError(f"{path}: manifest.json lists no images")
    entries = [e for e in doc if isinstance(e, dict) and e.get("Config")]
    names = sorted({t for e in entries for t in e.get("RepoTags") or []})
    if name and name.startswith(("sha256:", "sha512:")):
        hexpart = D.hex_of(name, "--name")
        chosen = [e for e in entries if hexpart in e["Config"]]
    elif name:
        chosen = [e for e in entries if _name_matches(e.get("RepoTags") or [], name)]
    else:
        chosen = entries if len(entries) == 1 else []
        if not chosen:
            raise ImageError(f"{path}: holds {len(entries)} images: choose one with --name "
                             f"(names: {', '.join(names) or 'none'})")
    if not chosen:
        raise ImageError(f"{path}: no image named {name!r} (names: {', '.join(names) or 'none'})")
    e = chosen[0]
    crel = _norm_member(e["Config"], path)
    craw = files.read(crel, f"{path}: {crel}")
    base = os.path.basename(crel)
    hexpart = base[:-5] if base.endswith(".json") else base
    cdigest = D.of_bytes(craw)
    if len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart):
        D.verify_bytes(craw, f"sha256:{hexpart}", f"{path}: config {crel}")
    config = json_doc(craw, f"{path}: config {crel}")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    lpaths = e.get("Layers") or []
    if len(diff_ids) != len(lpaths):
        raise ImageError(f"{path}: {len(lpaths)} layers but the config lists "
                         f"{len(diff_ids)} diff_ids")
    layers = []
    for i, (lp, did) in enumerate(zip(lpaths, diff_ids)):
        D.parse(did, f"{path}: config rootfs.diff_ids[{i}]")
        rel = _norm_member(lp, path)
        if not files.exists(rel):
            raise ImageError(f"{path}: layer {rel} is missing from the archive")
        blob = None
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] == "blobs":
            blob = f"{parts[1]}:{parts[2]}"
            D.parse(blob, f"{path}: {rel}")
        layers.append(LayerRef(blob, did, "application/vnd.docker.image.rootfs.diff.tar", None,
                               rel))
    _check_config_platform(config, want, path, strict=explicit_platform)
    return Image(kind="docker-archive", path=path, files=files, name=name,
                 names=e.get("RepoTags") or [], manifest_digest=cdigest, config_digest=cdigest,
                 config_raw=craw, config=config, layers=layers)
