"""Images -> bundles -> containers, with each rootfs driver, root and rootless.

The merged view a container sees (listed from inside by busybox: type, mode,
owner, content) is compared, file by file, with two independent flattenings
of the same image: ``umoci raw unpack`` (Debian's umoci, as root) and the
tests' own in-memory model (tests/imagebuild.reference_tree).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import imagebuild as ib
import support

DRIVERS = ("overlay", "fuse-overlayfs", "vfs")
CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_CHOWN"]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def images(hako_session):
    """The standard test image as an OCI layout, an oci-archive and a
    docker-archive (readable by every user), and its reference trees."""
    d = hako_session.base / "images"
    d.mkdir(mode=0o755, exist_ok=True)
    layers = ib.standard_layers(hako_session.rootfs())
    cfg = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hello from the image"],
           "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "IMAGE_VAR=1"],
           "WorkingDir": "/srv", "User": "app", "Labels": {"org.example.label": "yes"},
           "StopSignal": "SIGINT"}
    img = ib.Image(layers, config=cfg)
    comp = ["gzip", "", "gzip", "zstd" if shutil.which("zstd") else "gzip"]
    out = {
        "oci": ib.write_oci(d / "oci", [("test:1", img), ("other", ib.Image(layers[:1]))],
                            compression=comp),
        "oci-archive": ib.write_oci_archive(d / "oci.tar", [("test:1", img)]),
        "docker-archive": ib.write_docker_archive(d / "docker.tar", [("example/test:1", img)]),
        "layers": layers,
        "reference": ib.without(ib.reference_tree(layers)),
    }
    for p in d.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    if os.geteuid() == 0 and shutil.which("umoci"):
        um = d / "umoci-rootfs"
        # umoci 0.4 has no zstd: the same layers, gzip only
        gz = ib.write_oci(d / "oci-gzip", [("test:1", img)], compression="gzip")
        r = subprocess.run(["umoci", "raw", "unpack", "--image", f"{gz}:test:1", str(um)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out["umoci"] = ib.without(ib.tree(um, skip=()))
    return out


def store_of(rt) -> Path:
    return rt.dir / "store"


def bundle(rt, ref: str, *extra, name: str = "b", cmd: list[str] | None = None,
           check: bool = True) -> tuple[Path, subprocess.CompletedProcess]:
    path = rt.dir / name
    args = ["bundle", "--image", ref, "--store", store_of(rt), *extra, path]
    if cmd:
        args += ["--", *cmd]
    r = rt.hako(*args, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return path, r


def patch_config(rt, path: Path, args: list[str] | None = None, **proc) -> dict:
    """Change process settings of a bundle hako wrote (and add the test
    session marker to its environment, as rt.bundle() does)."""
    cfg = json.loads((path / "config.json").read_text())
    p = cfg["process"]
    if args is not None:
        p["args"] = args
    p.update(proc)
    p["env"].append(f"{support.MARKER}={rt.session.base}")
    support.busybox.write_config(path, cfg)
    return cfg


def run_listing(rt, path: Path) -> dict:
    caps = {k: list(CAPS) for k in ("bounding", "effective", "permitted")}
    patch_config(rt, path, ["/bin/sh", "-c", ib.LIST_SCRIPT], user={"uid": 0, "gid": 0}, cwd="/",
                 capabilities=caps)
    r = rt.hako("run", "--bundle", path, rt.new_id(), timeout=120)
    assert r.returncode == 0, r.stderr
    return ib.parse_listing(r.stdout)


def comparable(rt, b: Path, tree: dict) -> dict:
    """Symlink modes normalised; without subordinate ids (a rootless user with
    no /etc/subuid entry) every owner is the user, i.e. root in the container."""
    tree = ib.normalize_symlink_modes(tree)
    maps = json.loads((b / "config.json").read_text())["linux"].get("uidMappings") or []
    if rt.rootless and len(maps) < 2:
        tree = {k: (v[0], v[1], 0, 0, v[4]) for k, v in tree.items()}
    return tree


def layer_markers(rt) -> dict[str, float]:
    d = store_of(rt) / "layers"
    return {p.name: (p / "layer.json").stat().st_mtime_ns for p in d.iterdir()
            if not p.name.startswith(".")}


# -------------------------------------------------------------------- the view
@pytest.mark.parametrize("driver", DRIVERS)
def test_merged_view_matches_references(rt, images, driver):
    path, r = bundle(rt, f"oci:{images['oci']}:test:1", "--driver", driver)
    assert f"driver {driver}" in r.stdout
    got = comparable(rt, path, run_listing(rt, path))
    assert ib.diff_trees(got, comparable(rt, path, images["reference"])) == []
    if "umoci" in images:
        assert ib.diff_trees(got, comparable(rt, path, images["umoci"])) == []
    if rt.rootless and got["/srv/nobody"][2] == 0:
        return  # no subordinate ids: owners cannot be checked
    # spot checks of what the rules must have produced
    assert got["/srv/replace"][1:4] == ("0600", 1000, 1000)
    assert "/srv/del1" not in got and "/srv/deldir/a" not in got and "/srv/deldir/c" in got
    assert set(k for k in got if k.startswith("/opq/")) == {"/opq/new"}
    assert got["/usr/local/bin/suid"][1] == "4755" and got["/usr/local/bin/sgid"][1:4] == (
        "2755", 0, 50)
    assert got["/srv/sticky"][1] == "1777" and got["/tmp"][1] == "1777"
    assert got["/srv/nobody"][2:4] == (65534, 65534)
    assert got["/srv/d2"][0] == "file" and got["/srv/f2"][0] == "dir"
    assert got["/srv/abs"] == ("symlink", "0777", 0, 0, "/etc/passwd")


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive"])
def test_archives(rt, images, kind):
    name = "example/test:1" if kind == "docker-archive" else "test:1"
    path, r = bundle(rt, f"{kind}:{images[kind]}", "--name", name, "--driver", "overlay")
    got = comparable(rt, path, run_listing(rt, path))
    assert ib.diff_trees(got, comparable(rt, path, images["reference"])) == []


def test_config_from_image(rt, images):
    path, _ = bundle(rt, str(images["oci"]), "--name", "test:1")
    cfg = json.loads((path / "config.json").read_text())
    proc = cfg["process"]
    assert proc["args"] == ["/bin/sh", "-c", "echo hello from the image"]
    assert "IMAGE_VAR=1" in proc["env"] and "PATH=/usr/local/bin:/usr/bin:/bin" in proc["env"]
    assert proc["cwd"] == "/srv"
    subids = not rt.rootless or len(cfg["linux"].get("uidMappings") or []) > 1
    if subids:
        assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [33, 50]}
    else:  # nothing but root can be mapped
        assert proc["user"] == {"uid": 0, "gid": 0}
    ann = cfg["annotations"]
    assert ann["org.example.label"] == "yes"
    assert ann["org.opencontainers.image.stopSignal"] == "SIGINT"
    assert ann["io.hako.rootfs.driver"] in DRIVERS
    assert len(json.loads(ann["io.hako.rootfs.layers"])) == 4
    assert cfg["root"] == {"path": "rootfs", "readonly": False}
    if rt.rootless:
        assert cfg["linux"]["uidMappings"][0] == {"containerID": 0, "hostID": rt.uid, "size": 1}
    # and it runs as the image says (cwd /srv, user app)
    patch_config(rt, path)
    r = rt.hako("run", "--bundle", path, rt.new_id(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello from the image"
    # the command after the bundle directory replaces Cmd, not the Entrypoint
    path2, _ = bundle(rt, str(images["oci"]), "--name", "test:1", name="b2",
                      cmd=["id -u; pwd"])
    patch_config(rt, path2)
    r = rt.hako("run", "--bundle", path2, rt.new_id(), timeout=60)
    assert r.stdout.split() == ["1000" if subids else "0", "/srv"], r.stderr


def _written(path) -> bool:
    """The file is there; or its directory is already 0700 and the container's
    uid 1000's, which the container makes so only after the write (a test run
    by an ordinary user cannot look inside)."""
    try:
        return path.exists()
    except PermissionError:
        return True


# ------------------------------------------------------- reuse, rw layer, state
@pytest.mark.parametrize("driver", DRIVERS)
def test_second_container_reuses_layers_and_delete_cleans(rt, images, driver):
    b1, r1 = bundle(rt, f"oci:{images['oci']}:test:1", "--driver", driver, name="b1")
    assert "4 unpacked" in r1.stdout
    marks = layer_markers(rt)
    assert len(marks) == 4
    b2, r2 = bundle(rt, f"oci:{images['oci']}:test:1", "--driver", driver, name="b2")
    assert "0 unpacked" in r2.stdout
    assert layer_markers(rt) == marks  # no second unpack
    ids = []
    for b in (b1, b2):
        # files of another id in a private directory: rootless, only the user
        # namespace's root can remove them at delete
        patch_config(rt, b, ["/bin/sh", "-c", "mkdir /srv/sub && echo data > /srv/sub/new-file"
                             " && chown -R 1000:1000 /srv/sub && chmod 700 /srv/sub; sleep 60"],
                     user={"uid": 0, "gid": 0}, cwd="/",
                     capabilities={k: list(CAPS) for k in ("bounding", "effective",
                                                           "permitted")})
        cid = rt.new_id()
        r = rt.hako("run", "--detach", "--bundle", b, cid, timeout=60)
        assert r.returncode == 0, r.stderr
        ids.append(cid)
    for b, cid in zip((b1, b2), ids):
        st = json.loads(rt.hako("state", cid).stdout)
        assert st["annotations"]["io.hako.rootfs.driver"] == driver
        rw = b / "rw" / cid
        assert rw.is_dir()
        top = rw / ("upper" if driver != "vfs" else "root")
        support.wait_until(lambda: _written(top / "srv" / "sub" / "new-file"), 10,
                           what=f"the write to reach {top.name}")
    fuse = fuse_procs(rt)
    assert len(fuse) == (2 if driver == "fuse-overlayfs" else 0), fuse
    # exec sees the same root
    r = rt.hako("exec", ids[0], "cat", "/srv/sub/new-file", timeout=30)
    assert r.stdout == "data\n", r.stderr
    for b, cid in zip((b1, b2), ids):
        r = rt.hako("delete", "--force", cid, timeout=30)
        assert r.returncode == 0, r.stderr
        assert not (b / "rw" / cid).exists()
    support.wait_until(lambda: not fuse_procs(rt), 10, what="fuse-overlayfs to exit")
    assert layer_markers(rt) == marks  # the layers stay


def fuse_procs(rt) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if cmd.startswith("fuse-overlayfs") and str(rt.dir) in cmd and \
                stat[stat.rindex(")") + 2] != "Z":
            out.append(int(pid))
    return out


def test_keep_rw_layer(rt, images):
    b, _ = bundle(rt, f"oci:{images['oci']}:test:1", "--driver", "overlay", "--keep-rw")
    patch_config(rt, b, ["/bin/sh", "-c", "cat /srv/kept 2>/dev/null; echo more >> /srv/kept"],
                 user={"uid": 0, "gid": 0}, cwd="/")
    cid = rt.new_id()
    assert rt.hako("run", "--bundle", b, cid, timeout=60).returncode == 0
    assert (b / "rw" / cid / "upper" / "srv" / "kept").exists()
    # the same id again continues from the kept layer
    r = rt.hako("run", "--bundle", b, cid, timeout=60)
    assert r.stdout.strip() == "more", r.stderr


def test_fuse_overlayfs_dies_with_a_container_without_pid_namespace(rt, images):
    b, _ = bundle(rt, f"oci:{images['oci']}:test:1", "--driver", "fuse-overlayfs")
    cfg = patch_config(rt, b, ["sleep", "60"], user={"uid": 0, "gid": 0}, cwd="/")
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    # no pid namespace of its own: no procfs of its own either (rootless cannot mount one)
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/proc"]
    cfg["linux"]["maskedPaths"] = cfg["linux"]["readonlyPaths"] = []
    support.busybox.write_config(b, cfg)
    cid = rt.new_id()
    assert rt.hako("run", "--detach", "--bundle", b, cid, timeout=60).returncode == 0
    assert len(fuse_procs(rt)) == 1
    assert rt.hako("delete", "--force", cid, timeout=30).returncode == 0
    support.wait_until(lambda: not fuse_procs(rt), 10, what="fuse-overlayfs to exit")
    assert not (b / "rw" / cid).exists()


def test_overlay_mount_entry_in_config(rt, hako_session):
    """config.json mounts of type overlay (rootless: with userxattr)."""
    b = rt.bundle(["/bin/sh", "-c", "cat /mnt/lower.txt; echo up > /mnt/new; ls /mnt"])
    base = rt.dir / "ovl"
    for d in ("lower", "upper", "work"):
        (base / d).mkdir(parents=True)
    (base / "lower" / "lower.txt").write_text("from lower\n")
    rt.chown(base)
    opts = [f"lowerdir={base / 'lower'}", f"upperdir={base / 'upper'}",
            f"workdir={base / 'work'}"] + (["userxattr"] if rt.rootless else [])
    cfg = rt.read_config(b)
    cfg["mounts"].append({"destination": "/mnt", "type": "overlay", "source": "overlay",
                          "options": opts})
    rt.write_config(b, cfg)
    r = rt.hako("run", "--bundle", b, rt.new_id(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from", "lower", "lower.txt", "new"]
    assert (base / "upper" / "new").read_text() == "up\n"


# ------------------------------------------------------------------ CLI: store
def test_images_and_layers_commands(rt, images):
    b, _ = bundle(rt, f"oci:{images['oci']}:test:1")
    store = ["--store", store_of(rt)]
    r = rt.hako("images", *store)
    assert r.returncode == 0 and "test:1" in r.stdout and "4/4" in r.stdout, r.stdout
    rows = json.loads(rt.hako("layers", "ls", "--format", "json", *store).stdout)
    assert len(rows) == 4 and all(x["complete"] for x in rows)
    assert all(any(str(b) in u for u in x["used_by"]) for x in rows)
    victim = rows[-1]["diff_id"]
    r = rt.hako("layers", "rm", victim[:19], *store)
    assert r.returncode != 0 and "used by" in r.stderr
    # a second bundle, by name from the store (no archive needed)
    b2, r2 = bundle(rt, "test:1", name="b2")
    assert "0 unpacked" in r2.stdout
    # the bundles are gone: prune keeps the layers the image record holds ...
    shutil.rmtree(b)
    shutil.rmtree(b2)
    assert rt.hako("layers", "prune", *store).stdout.split() == []
    # ... until the image is forgotten
    assert rt.hako("images", "rm", "test:1", *store).returncode == 0
    r = rt.hako("layers", "prune", *store)
    assert r.returncode == 0 and len(r.stdout.split()) == 4, r.stderr
    assert json.loads(rt.hako("layers", "ls", "--format", "json", *store).stdout) == []
    # a bundle whose layers were removed fails at create with a clear message
    b3, _ = bundle(rt, f"oci:{images['oci']}:test:1", name="b3")
    patch_config(rt, b3, ["true"], user={"uid": 0, "gid": 0}, cwd="/")
    d = json.loads(rt.hako("layers", "ls", "--format", "json", *store).stdout)[0]["diff_id"]
    assert rt.hako("layers", "rm", "--force", d, *store).returncode == 0
    r = rt.hako("run", "--bundle", b3, rt.new_id(), timeout=60)
    assert r.returncode != 0 and "not in the layer store" in r.stderr


def test_concurrent_bundles_unpack_each_layer_once(rt, images):
    procs = [rt.popen(rt.hako_argv("bundle", "--image", f"oci:{images['oci']}:test:1",
                                   "--store", store_of(rt), rt.dir / f"c{i}"),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    total = sum(int(o[0].split("layers, ")[1].split()[0]) for o in outs)
    assert total == 4, [o[0] for o in outs]
    metas = [json.loads((p / "layer.json").read_text())
             for p in (store_of(rt) / "layers").iterdir()]
    assert len(metas) == 4
    assert not [p for p in (store_of(rt) / "layers").iterdir() if p.name.startswith(".")]


def test_interrupted_unpack_never_passes_as_complete(rt, hako_session):
    big = ib.layer_tar([("file", f"big/f{i}", os.urandom(256 << 10)) for i in range(160)])
    img = ib.Image([ib.layer_tar(None, base_dir=hako_session.rootfs()), big])
    layout = ib.write_oci(rt.dir / "big", [("big", img)], compression="gzip")
    rt.chown(layout)
    layers = store_of(rt) / "layers"
    p = rt.popen(rt.hako_argv("bundle", "--image", f"oci:{layout}:big", "--store",
                              store_of(rt), rt.dir / "bb"),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    big_hex = ib.sha(big)[7:]

    def partial():
        try:
            return any(x.name.startswith(f".tmp-{big_hex}") and (x / "diff" / "big").exists()
                       for x in layers.iterdir())
        except FileNotFoundError:
            return False
    support.wait_until(partial, 60, interval=0.005, what="the unpack of the big layer")
    os.killpg(p.pid, 9)
    p.wait(timeout=30)
    assert not (layers / big_hex / "layer.json").exists()
    assert not (layers / big_hex).exists()
    # the next bundle redoes it (and cleans the leftover up)
    _, r = bundle(rt, f"oci:{layout}:big", name="bb2")
    assert "1 unpacked" in r.stdout or "2 unpacked" in r.stdout
    assert (layers / big_hex / "layer.json").exists()
    assert not [x for x in layers.iterdir() if x.name.startswith(".")]
    assert len(list((layers / big_hex / "diff" / "big").iterdir())) == 160


def test_same_id_under_another_root_cannot_take_the_rw_layer(rt, images):
    b, _ = bundle(rt, f"oci:{images['oci']}:test:1", "--driver", "overlay")
    patch_config(rt, b, ["sleep", "60"], user={"uid": 0, "gid": 0}, cwd="/")
    cid = rt.new_id()
    assert rt.hako("run", "--detach", "--bundle", b, cid, timeout=60).returncode == 0
    other = rt.dir / "other-root"
    other.mkdir(mode=0o700)
    rt.chown(other)
    r = rt.hako("run", "--bundle", b, cid, root=other, timeout=60)
    assert r.returncode != 0 and "belongs to the container" in r.stderr, r.stderr
    assert (b / "rw" / cid / "upper").is_dir()  # untouched
    assert rt.hako("delete", "--force", cid, root=other).returncode == 0
    assert (b / "rw" / cid / "upper").is_dir()
    assert rt.hako("delete", "--force", cid).returncode == 0
    assert not (b / "rw" / cid).exists()
