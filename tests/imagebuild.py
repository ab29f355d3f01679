"""Build container images for tests and benchmarks: layers from entry lists,
written as OCI image layouts, oci-archive tarballs or docker-archive tarballs.

Standard library only (zstd layers need the zstd tool). A layer is a list of
entries (tuples)::

    ("dir", path, mode=0o755, uid=0, gid=0)
    ("file", path, content: bytes|str, mode=0o644, uid=0, gid=0[, xattrs dict])
    ("symlink", path, target[, uid, gid])
    ("hardlink", path, target)
    ("whiteout", path)             -> DIR/.wh.NAME
    ("opaque", dirpath)            -> DIR/.wh..wh..opq
    ("char"|"block", path, major, minor, mode=0o666)
    ("fifo", path, mode=0o644)
    ("raw", TarInfo, data|None)    anything else (malicious names ...)

or a host directory (``from_dir``), added as root-owned entries.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {"": "application/vnd.oci.image.layer.v1.tar",
            "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
MTIME = 1_700_000_000


def _info(path: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(path)
    ti.type = kind
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.mtime = MTIME
    ti.uname = ti.gname = ""
    return ti


def layer_tar(entries, *, base_dir: Path | None = None) -> bytes:
    """An uncompressed layer tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if base_dir is not None:
            _add_dir(tf, Path(base_dir))
        for e in entries or []:
            kind = e[0]
            if kind == "dir":
                _, path, *rest = e
                mode, uid, gid = (list(rest) + [0o755, 0, 0][len(rest):])[:3]
                tf.addfile(_info(path, tarfile.DIRTYPE, mode, uid, gid))
            elif kind == "file":
                _, path, content, *rest = e
                mode, uid, gid = (list(rest[:3]) + [0o644, 0, 0][len(rest[:3]):])[:3]
                data = content.encode() if isinstance(content, str) else content
                ti = _info(path, tarfile.REGTYPE, mode, uid, gid)
                ti.size = len(data)
                if len(rest) > 3 and rest[3]:
                    ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in rest[3].items()}
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "symlink":
                _, path, target, *rest = e
                uid, gid = (list(rest) + [0, 0][len(rest):])[:2]
                ti = _info(path, tarfile.SYMTYPE, 0o777, uid, gid)
                ti.linkname = target
                tf.addfile(ti)
            elif kind == "hardlink":
                _, path, target = e
                ti = _info(path, tarfile.LNKTYPE, 0o644)
                ti.linkname = target
                tf.addfile(ti)
            elif kind == "whiteout":
                d, _, name = e[1].rpartition("/")
                tf.addfile(_info((d + "/" if d else "") + ".wh." + name, tarfile.REGTYPE, 0o644))
            elif kind == "opaque":
                tf.addfile(_info(e[1].rstrip("/") + "/.wh..wh..opq", tarfile.REGTYPE, 0o644))
            elif kind in ("char", "block"):
                _, path, major, minor, *rest = e
                ti = _info(path, tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE,
                           rest[0] if rest else 0o666)
                ti.devmajor, ti.devminor = major, minor
                tf.addfile(ti)
            elif kind == "fifo":
                tf.addfile(_info(e[1], tarfile.FIFOTYPE, e[2] if len(e) > 2 else 0o644))
            elif kind == "raw":
                ti, data = e[1], e[2] if len(e) > 2 else None
                tf.addfile(ti, io.BytesIO(data) if data is not None else None)
            else:
                raise ValueError(f"unknown entry kind {kind!r}")
    return buf.getvalue()


def _add_dir(tf: tarfile.TarFile, root: Path) -> None:
    """A host directory as root-owned entries (mode and symlinks kept)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in [None] + sorted(filenames) + sorted(d for d in dirnames
                                                          if os.path.islink(os.path.join(dirpath, d))):
            p = dirpath if name is None else os.path.join(dirpath, name)
            arc = "." if rel == "." and name is None else os.path.normpath(
                os.path.join(rel, name or ""))
            ti = tf.gettarinfo(p, arcname=arc)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = MTIME
            if ti.isreg():
                with open(p, "rb") as f:
                    tf.addfile(ti, f)
            else:
                tf.addfile(ti)


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                              check=True, timeout=120).stdout
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    """Layers (uncompressed tars) + config, to be written in several formats."""

    def __init__(self, layers: list[bytes], *, config: dict | None = None,
                 arch: str = "amd64", os_: str = "linux") -> None:
        self.layers = layers
        self.arch = arch
        self.os = os_
        self.conf = {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
        self.conf.update(config or {})

    def config_json(self) -> bytes:
        doc = {"architecture": self.arch, "os": self.os, "config": self.conf,
               "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in self.layers]},
               "created": "2024-01-01T00:00:00Z",
               "history": [{"created_by": f"layer {i}"} for i in range(len(self.layers))]}
        return json.dumps(doc, sort_keys=True).encode()

    # -- OCI --------------------------------------------------------------------
    def manifest(self, blobs: dict, compression: str | list = "gzip") -> tuple[bytes, dict]:
        cfg = self.config_json()
        blobs[sha(cfg)] = cfg
        comps = compression if isinstance(compression, list) else [compression] * len(self.layers)
        ldescs = []
        for tar, how in zip(self.layers, comps):
            blob = compress(tar, how)
            blobs[sha(blob)] = blob
            ldescs.append({"mediaType": MT_LAYER[how], "digest": sha(blob), "size": len(blob)})
        man = json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                          "config": {"mediaType": MT_CONFIG, "digest": sha(cfg),
                                     "size": len(cfg)},
                          "layers": ldescs}, sort_keys=True).encode()
        blobs[sha(man)] = man
        return man, {"mediaType": MT_MANIFEST, "digest": sha(man), "size": len(man),
                     "platform": {"architecture": self.arch, "os": self.os}}


def write_oci(dest: Path, images: list[tuple[str | None, "Image"]], *,
              compression: str | list = "gzip", multiarch: bool = False) -> Path:
    """An OCI layout with one index.json entry per (ref name, image); with
    *multiarch*, one entry: a nested index of all the images (one name)."""
    dest = Path(dest)
    (dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    blobs: dict[str, bytes] = {}
    entries = []
    for name, img in images:
        _, desc = img.manifest(blobs, compression)
        if name:
            desc["annotations"] = {"org.opencontainers.image.ref.name": name}
        entries.append(desc)
    if multiarch:
        inner = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX,
                            "manifests": [{k: v for k, v in d.items() if k != "annotations"}
                                          for d in entries]}, sort_keys=True).encode()
        blobs[sha(inner)] = inner
        name = next((n for n, _ in images if n), None)
        top = {"mediaType": MT_INDEX, "digest": sha(inner), "size": len(inner)}
        if name:
            top["annotations"] = {"org.opencontainers.image.ref.name": name}
        entries = [top]
    for dg, data in blobs.items():
        (dest / "blobs" / "sha256" / dg[7:]).write_bytes(data)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX,
                                                 "manifests": entries}))
    return dest


def write_oci_archive(dest: Path, images, **kw) -> Path:
    tmp = Path(str(dest) + ".d")
    write_oci(tmp, images, **kw)
    with tarfile.open(dest, "w") as tf:
        for name in ("oci-layout", "index.json", "blobs"):
            tf.add(tmp / name, arcname=name)
    shutil.rmtree(tmp)
    return Path(dest)


def write_docker_archive(dest: Path, images: list[tuple[str | None, "Image"]], *,
                         blobs: bool = False) -> Path:
    """docker save's classic format: <config hex>.json, <id>/layer.tar, manifest.json;
    with *blobs*, docker 25's: every file under blobs/sha256/ (manifest.json still)."""
    manifest = []
    with tarfile.open(dest, "w") as tf:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = MTIME
            tf.addfile(ti, io.BytesIO(data))
        done = set()
        for name, img in images:
            cfg = img.config_json()
            chex = sha(cfg)[7:]
            cpath = f"blobs/sha256/{chex}" if blobs else chex + ".json"
            if cpath not in done:
                add(cpath, cfg)
                done.add(cpath)
            paths = []
            parent = ""
            for tar in img.layers:
                lid = hashlib.sha256((parent + sha(tar)).encode()).hexdigest()
                parent = lid
                p = f"blobs/sha256/{sha(tar)[7:]}" if blobs else f"{lid}/layer.tar"
                if p not in done:
                    add(p, tar)
                    if not blobs:
                        add(f"{lid}/VERSION", b"1.0")
                    done.add(p)
                paths.append(p)
            manifest.append({"Config": cpath, "RepoTags": [name] if name else None,
                             "Layers": paths})
        add("manifest.json", json.dumps(manifest).encode())
    return Path(dest)


# ------------------------------------------------------------- a reference tree
def tree(root: Path, *, skip=("proc", "sys", "dev")) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, content digest | link target | rdev)
    of every entry below *root* (not following symlinks)."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out["/" + os.path.relpath(p, root)] = describe(p, st)
    return out


def describe(p: str, st: os.stat_result) -> tuple:
    import stat as S
    m = st.st_mode
    kind = ("dir" if S.S_ISDIR(m) else "file" if S.S_ISREG(m) else "symlink" if S.S_ISLNK(m)
            else "char" if S.S_ISCHR(m) else "block" if S.S_ISBLK(m) else "fifo"
            if S.S_ISFIFO(m) else "other")
    extra = None
    if kind == "file":
        with open(p, "rb") as f:
            extra = hashlib.md5(f.read()).hexdigest()
    elif kind == "symlink":
        extra = os.readlink(p)
    elif kind in ("char", "block"):
        extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return (kind, f"{S.S_IMODE(m):04o}", st.st_uid, st.st_gid, extra)


# ------------------------------------------------------- the reference flattening
def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def reference_tree(layers: list[bytes]) -> dict[str, tuple]:
    """Apply the layer tars, in order, to an in-memory model of the tree, by
    the OCI rules (whiteouts and opaque markers hide what lower layers put
    there, not what this layer has; directories merge, anything else
    replaces; a hard link is its target), independently of hako and of any
    filesystem. Returns what ``tree`` returns for a real directory."""
    model: dict[str, tuple] = {}

    def drop(path: str, keep: set) -> None:
        for k in [k for k in model if (k == path or k.startswith(path + "/")) and k not in keep]:
            del model[k]

    for tar in layers:
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            members = [(m, tf.extractfile(m).read() if m.isreg() else None)
                       for m in tf.getmembers()]
        this: set[str] = set()
        for m, _ in members:  # opaque markers first, wherever they are
            parts = _parts(m.name)
            if parts and parts[-1] == ".wh..wh..opq":
                d = "/" + "/".join(parts[:-1])
                for k in [k for k in model if k.startswith(d.rstrip("/") + "/")]:
                    del model[k]
        for m, data in members:
            parts = _parts(m.name)
            if not parts or parts[-1] == ".wh..wh..opq":
                continue
            path = "/" + "/".join(parts)
            if parts[-1].startswith(".wh."):
                drop("/" + "/".join(parts[:-1] + [parts[-1][4:]]), this)
                continue
            for i in range(1, len(parts)):
                parent = "/" + "/".join(parts[:i])
                if parent not in model:
                    model[parent] = ("dir", "0755", 0, 0, None)
                    this.add(parent)
            mode = f"{m.mode & 0o7777:04o}"
            if m.isdir():
                if path in model and model[path][0] != "dir":
                    drop(path, set())
                model[path] = ("dir", mode, m.uid, m.gid, None)
            else:
                drop(path, set())
                if m.islnk():
                    model[path] = model["/" + "/".join(_parts(m.linkname))]
                elif m.issym():
                    model[path] = ("symlink", "0777", m.uid, m.gid, m.linkname)
                elif m.isreg():
                    model[path] = ("file", mode, m.uid, m.gid, hashlib.md5(data).hexdigest())
                elif m.ischr() or m.isblk():
                    model[path] = ("char" if m.ischr() else "block", mode, m.uid, m.gid,
                                   f"{m.devmajor}:{m.devminor}")
                elif m.isfifo():
                    model[path] = ("fifo", mode, m.uid, m.gid, None)
            this.add(path)
    return model


def without(tree_: dict, prefixes=("/proc", "/sys", "/dev")) -> dict:
    return {k: v for k, v in tree_.items()
            if not any(k == p or k.startswith(p + "/") for p in prefixes)}


def normalize_symlink_modes(tree_: dict) -> dict:
    """Symlink modes are always 0777 on Linux whatever the tar says."""
    return {k: (v if v[0] != "symlink" else ("symlink", "0777") + tuple(v[2:]))
            for k, v in tree_.items()}


# ------------------------------------------------- listing a container's view
#: run by busybox sh in a container: one line per entry (stat), plus md5sums
LIST_SCRIPT = r"""
cd / || exit 1
find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o ! -path . \
    -exec stat -c 'S|%n|%f|%u|%g|%t:%T' {} +
find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -type l \
    -exec stat -c 'L|%n|%N' {} +
find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -type f \
    -exec md5sum {} +
"""


def parse_listing(text: str) -> dict[str, tuple]:
    import stat as S
    out: dict[str, list] = {}
    links: dict[str, str] = {}
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("S|"):
            _, name, hexmode, uid, gid, dev = line.split("|")
            m = int(hexmode, 16)
            kind = ("dir" if S.S_ISDIR(m) else "file" if S.S_ISREG(m) else "symlink"
                    if S.S_ISLNK(m) else "char" if S.S_ISCHR(m) else "block" if S.S_ISBLK(m)
                    else "fifo" if S.S_ISFIFO(m) else "other")
            extra = None
            if kind in ("char", "block"):
                ma, mi = dev.split(":")
                extra = f"{int(ma, 16)}:{int(mi, 16)}"
            out[name[1:]] = [kind, f"{S.S_IMODE(m):04o}", int(uid), int(gid), extra]
        elif line.startswith("L|"):
            _, name, rest = line.split("|", 2)
            target = rest.split(" -> ", 1)[1]
            links[name[1:]] = target[1:-1] if target[:1] in "'`\"" else target
        elif "  ./" in line:
            digest, name = line.split("  ", 1)
            sums[name[1:]] = digest
    for k, v in out.items():
        if v[0] == "symlink":
            v[4] = links.get(k)
        elif v[0] == "file":
            v[4] = sums.get(k)
    return {k: tuple(v) for k, v in out.items()}


def diff_trees(got: dict, want: dict) -> list[str]:
    """Human-readable differences (empty when equal)."""
    out = []
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            out.append(f"{k}: hako {got.get(k)} != reference {want.get(k)}")
    return out


# ------------------------------------------------------------ the test image
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "www-data:x:33:33:www-data:/var/www:/bin/false\n"
          "app:x:1000:1000:app:/home/app:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nwww-data:x:33:app\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n"


def standard_layers(base_rootfs: Path) -> list[bytes]:
    """busybox + three layers exercising every rule: files replaced, deleted
    by whiteouts, opaque directories, a directory whited out and made again,
    symlinks (relative, absolute), hard links within and across layers,
    setuid/setgid/sticky bits, owners 0/33/1000/65534, a fifo, an xattr."""
    l0 = layer_tar([("dir", "etc", 0o755), ("file", "etc/passwd", PASSWD),
                    ("file", "etc/group", GROUP), ("file", "etc/motd", "welcome\n")],
                   base_dir=base_rootfs)
    l1 = layer_tar([
        ("dir", "srv", 0o755), ("file", "srv/replace", "v1\n", 0o644, 33, 33),
        ("file", "srv/del1", "gone\n"), ("dir", "srv/deldir", 0o755, 1000, 1000),
        ("file", "srv/deldir/a", "a"), ("file", "srv/deldir/b", "b"),
        ("dir", "srv/d2"), ("file", "srv/d2/inner", "i"), ("file", "srv/f2", "file"),
        ("dir", "opq", 0o700, 1000, 1000), ("file", "opq/o1", "1"), ("dir", "opq/sub"),
        ("file", "opq/sub/o3", "3"),
        ("dir", "usr"), ("dir", "usr/local"), ("dir", "usr/local/bin"),
        ("file", "usr/local/bin/suid", "#!/bin/sh\n", 0o4755),
        ("file", "usr/local/bin/sgid", "#!/bin/sh\n", 0o2755, 0, 50),
        ("dir", "srv/sticky", 0o1777, 1000, 1000),
        ("symlink", "srv/link", "replace"), ("symlink", "srv/abs", "/etc/passwd"),
        ("symlink", "srv/dangling", "/nonexistent/x", 33, 33),
        ("hardlink", "srv/replace.hl", "srv/replace"),
        ("fifo", "srv/fifo", 0o620),
        ("file", "srv/nobody", "n", 0o640, 65534, 65534),
        ("file", "srv/xattr", "x", 0o644, 0, 0, {"user.hako.test": "value"}),
        ("symlink", "srv/sl-del", "replace"),
    ])
    l2 = layer_tar([
        ("dir", "srv", 0o755),
        ("file", "srv/replace", "v2, longer\n", 0o600, 1000, 1000),
        ("hardlink", "srv/replace.hl2", "srv/replace"),
        ("hardlink", "srv/motd.hl", "etc/motd"),            # to a lower layer's file
        ("whiteout", "srv/del1"), ("whiteout", "srv/deldir"), ("whiteout", "srv/sl-del"),
        ("opaque", "opq"), ("dir", "opq", 0o750, 1000, 33), ("file", "opq/new", "new"),
        ("file", "tmp/added", "t", 0o666),                   # parent from a lower layer
    ])
    l3 = layer_tar([
        ("dir", "srv/deldir", 0o700, 33, 33), ("file", "srv/deldir/c", "c"),
        ("file", "srv/d2", "was a directory", 0o755),
        ("dir", "srv/f2", 0o711), ("file", "srv/f2/now-dir", "d"),
        ("whiteout", "srv/link"),
        ("whiteout", "srv/again"), ("file", "srv/again/.keep", "k"),
        ("whiteout", "etc/motd"),
    ])
    return [l0, l1, l2, l3]
