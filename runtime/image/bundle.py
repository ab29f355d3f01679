"""The bundle writer: config.json from the image config, rootfs from a driver.

config.json starts from ``runtime.default_spec.default_spec(rootless=...)``
and takes from the image config (OCI image-spec config.md, as umoci maps it):

- process.args = Entrypoint + Cmd (arguments after the bundle directory
  replace Cmd, as ``docker run IMAGE ARGS`` does);
- process.env = the image's Env (PATH kept from the default when absent);
- process.cwd = WorkingDir (default /);
- process.user from User (``uid[:gid]`` or names, resolved in the image's
  /etc/passwd and /etc/group; additionalGids from /etc/group);
- annotations = Labels, plus org.opencontainers.image.{stopSignal,exposedPorts}
  and hako's own: the driver, the layer directories, the root's attributes,
  the image id, its names and manifest digest;
- root.path = rootfs (an empty directory the driver mounts on), writable;
- rootless: linux.uidMappings/gidMappings = the store's mapping (0 -> you,
  1.. -> your subordinate ids).
"""

from __future__ import annotations

import json
import os

from runtime.errors import HakoError
from runtime.image import drivers, idmap
from runtime.image.unpack import resolve_in_image

ANN_IMAGE_ID = "io.hako.image.id"
ANN_IMAGE_NAME = "io.hako.image.name"
ANN_IMAGE_MANIFEST = "io.hako.image.manifest"


def _read_image_file(lowers_top_first: list[str], path: str) -> str | None:
    p = resolve_in_image(lowers_top_first, path)
    if p is None or not os.path.isfile(p):
        return None
    try:
        with open(p, errors="replace") as f:
            return f.read(4 << 20)
    except OSError as e:
        raise HakoError(f"image {path}: cannot read it to resolve the image's User: "
                        f"{e.strerror} (use a numeric uid:gid)") from None


def _table(text: str | None, n: int) -> list[list[str]]:
    out = []
    for line in (text or "").splitlines():
        if line and not line.startswith("#"):
            f = line.split(":")
            if len(f) >= n:
                out.append(f)
    return out


def resolve_user(user: str, lowers_top_first: list[str]) -> dict:
    """OCI image config User -> runtime-spec process.user."""
    user = (user or "").strip()
    if not user:
        return {"uid": 0, "gid": 0}
    name, _, group = user.partition(":")
    passwd = None
    uid = gid = None
    username = None
    if name.isdigit():
        uid = int(name)
    if uid is None or not group:
        passwd = _table(_read_image_file(lowers_top_first, "/etc/passwd"), 7)
        for f in passwd:
            if (uid is None and f[0] == name) or (uid is not None and f[2] == str(uid)):
                try:
                    uid, gid, username = int(f[2]), int(f[3]), f[0]
                except ValueError:
                    continue
                break
        if uid is None:
            raise HakoError(f"image config User {user!r}: no user {name!r} in the image's "
                            "/etc/passwd")
    groups = _table(_read_image_file(lowers_top_first, "/etc/group"), 4) \
        if (group and not group.isdigit()) or username else []
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = [f for f in groups if f[0] == group]
            if not found:
                raise HakoError(f"image config User {user!r}: no group {group!r} in the "
                                "image's /etc/group")
            gid = int(found[0][2])
    out = {"uid": uid, "gid": gid if gid is not None else 0}
    if username and not group:
        extra = sorted({int(f[2]) for f in groups if f[2].isdigit()
                        and username in f[3].split(",") and int(f[2]) != out["gid"]})
        if extra:
            out["additionalGids"] = extra
    return out


def make_config(img_config: dict, *, rootless: bool, mapping, args: list[str] | None,
                tty: bool, lowers_top_first: list[str]) -> dict:
    from runtime.default_spec import default_spec
    cfg = img_config.get("config") or {}
    uid = gid = None
    if rootless and mapping is not None:
        uid, gid = mapping[0][0][1], mapping[1][0][1]
    spec = default_spec(rootless=rootless, uid=uid, gid=gid)
    entry = list(cfg.get("Entrypoint") or [])
    cmd = list(args) if args else list(cfg.get("Cmd") or [])
    proc_args = entry + cmd
    if not proc_args:
        raise HakoError("the image has no Entrypoint or Cmd: give the command after the "
                        "bundle directory (hako bundle --image REF DIR -- CMD ...)")
    proc = spec["process"]
    proc["args"] = proc_args
    proc["terminal"] = bool(tty)
    env = [e for e in cfg.get("Env") or [] if isinstance(e, str) and "=" in e]
    keys = {e.split("=", 1)[0] for e in env}
    base = [e for e in proc["env"] if e.split("=", 1)[0] not in keys
            and (tty or not e.startswith("TERM="))]
    proc["env"] = base + env
    proc["cwd"] = cfg.get("WorkingDir") or "/"
    proc["user"] = resolve_user(cfg.get("User") or "", lowers_top_first)
    if rootless and not idmap.has_subids(mapping) and (
            proc["user"]["uid"] or proc["user"]["gid"] or proc["user"].get("additionalGids")):
        from runtime import log
        log.warn(f"the image runs as {cfg.get('User')!r} (uid {proc['user']['uid']}), which a "
                 "user namespace without subordinate ids (/etc/subuid) cannot map: the "
                 "container runs as root (you) instead")
        proc["user"] = {"uid": 0, "gid": 0}
    spec["root"] = {"path": "rootfs", "readonly": False}
    ann = dict(cfg.get("Labels") or {})
    if cfg.get("StopSignal"):
        ann["org.opencontainers.image.stopSignal"] = str(cfg["StopSignal"])
    if cfg.get("ExposedPorts"):
        ann["org.opencontainers.image.exposedPorts"] = ",".join(sorted(cfg["ExposedPorts"]))
    for k in ("os", "architecture", "author", "created"):
        if img_config.get(k):
            ann[f"org.opencontainers.image.{k}"] = str(img_config[k])
    spec["annotations"] = ann
    if rootless and mapping is not None and idmap.has_subids(mapping):
        u, g = idmap.to_spec(mapping)
        linux = spec["linux"]
        linux["uidMappings"], linux["gidMappings"] = u, g
    return spec


def root_attr(metas: list[dict | None]) -> dict:
    """The merged root's owner and mode: the topmost layer that has "./"."""
    for m in reversed(metas):
        r = (m or {}).get("root")
        if r:
            return {"mode": r["mode"], "uid": r["uid"], "gid": r["gid"]}
    return {"mode": 0o755, "uid": 0, "gid": 0}


def write_bundle(dest: str, spec: dict, *, force: bool = False) -> None:
    dest = os.path.abspath(dest)
    cfgp = os.path.join(dest, "config.json")
    try:
        os.makedirs(dest, mode=0o755, exist_ok=True)
        if os.path.exists(cfgp) and not force:
            raise HakoError(f"{cfgp} exists (--force overwrites it)")
        rootfs = os.path.join(dest, spec["root"]["path"])
        if os.path.isdir(rootfs) and os.listdir(rootfs) and not os.path.ismount(rootfs):
            raise HakoError(f"{rootfs} is not empty: the driver mounts the image there")
        os.makedirs(rootfs, mode=0o755, exist_ok=True)
        tmp = cfgp + ".tmp"
        with open(tmp, "w") as f:
            json.dump(spec, f, indent="\t")
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, cfgp)
    except OSError as e:
        raise HakoError(f"bundle {dest}: {e.strerror}: {e.filename or ''}") from None


def annotate(spec: dict, *, driver: str, layer_dirs: list[str], root: dict, image_id: str,
             names: list[str], manifest: str, keep: bool) -> None:
    ann = spec.setdefault("annotations", {})
    ann[drivers.ANN_DRIVER] = driver
    ann[drivers.ANN_LAYERS] = json.dumps(layer_dirs)
    ann[drivers.ANN_ROOT] = json.dumps(root, sort_keys=True)
    ann[ANN_IMAGE_ID] = image_id
    ann[ANN_IMAGE_MANIFEST] = manifest
    if names:
        ann[ANN_IMAGE_NAME] = names[0]
    if keep:
        ann[drivers.ANN_KEEP] = "true"
    if driver == "fuse-overlayfs":
        # the daemon runs in the container's cgroup (it is the init's child):
        # its device rules must let it open /dev/fuse
        res = spec.get("linux", {}).get("resources")
        if res is not None and isinstance(res.get("devices"), list):
            res["devices"].append({"allow": True, "type": "c", "major": 10, "minor": 229,
                                   "access": "rw"})
