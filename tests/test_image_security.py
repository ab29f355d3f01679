"""Malicious layers: refused, or neutralised, root and rootless.

Every layer goes through ``hako bundle`` (as the mode's user), then the test
checks that nothing was written outside the store, that no partial layer
passes as complete, and, for what is kept, what a container sees.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

import imagebuild as ib
from test_image_drivers import bundle, patch_config, run_listing, store_of


def _image(rt, name: str, layers: list[bytes]) -> Path:
    base = ib.layer_tar(None, base_dir=rt.session.rootfs())
    layout = ib.write_oci(rt.dir / f"img-{name}", [(name, ib.Image([base] + layers))])
    return rt.chown(layout)


def _raw(name: str, kind=tarfile.REGTYPE, data: bytes | None = b"x", linkname: str = "",
         mode: int = 0o644) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.linkname = linkname
    ti.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return ("raw", ti, data if kind == tarfile.REGTYPE else None)


def _refused(rt, name: str, entries: list, why: str) -> None:
    layout = _image(rt, name, [ib.layer_tar(entries)])
    _, r = bundle(rt, f"oci:{layout}:{name}", name=f"b-{name}", check=False)
    assert r.returncode != 0, r.stdout
    assert why in r.stderr, r.stderr
    layers = store_of(rt) / "layers"
    # the base layer is there; the bad one neither complete nor left behind
    assert len([p for p in layers.iterdir() if (p / "layer.json").exists()]) == 1
    assert not [p for p in layers.iterdir() if p.name.startswith(".")]
    assert not (rt.dir / f"b-{name}").exists()


def test_dotdot_and_absolute_paths_refused(rt):
    victim = rt.dir / "victim"
    _refused(rt, "dotdot", [_raw("../../../victim")], "'..'")
    _refused(rt, "dotdot2", [("dir", "a"), _raw("a/../../victim")], "'..'")
    _refused(rt, "absolute", [_raw(str(victim))], "absolute path")
    assert not victim.exists()


def test_symlink_traversal_refused(rt):
    outside = rt.dir / "outside"
    outside.mkdir()
    rt.chown(outside)
    _refused(rt, "abslink", [("symlink", "evil", str(outside)), _raw("evil/pwned")],
             "goes through the symlink")
    _refused(rt, "rellink", [("symlink", "up", "../../../../../../../../" + str(outside)),
                             _raw("up/pwned")], "goes through the symlink")
    _refused(rt, "dirlink", [("dir", "d"), ("symlink", "d/s", "/"), ("dir", "d/s/etc")],
             "goes through the symlink")
    # a hard link through a symlink, or out of the layer
    _refused(rt, "hardlink", [("symlink", "s", "/etc"), ("hardlink", "h", "s/passwd")],
             "hard link")
    _refused(rt, "hardlink2", [("hardlink", "h", "../../../../etc/passwd")], "'..'")
    assert list(outside.iterdir()) == []


def test_whiteout_names_refused(rt):
    _refused(rt, "whdot", [_raw(".wh..")], "whiteout of")
    _refused(rt, "whdir", [("dir", ".wh.x")], "whiteout")


def test_absolute_symlinks_resolve_inside_the_container(rt):
    secret = rt.dir / "host-secret"
    secret.write_text("host only\n")
    rt.chown(secret)
    layout = _image(rt, "links", [ib.layer_tar([
        ("symlink", "to-host", str(secret)), ("symlink", "to-passwd", "/etc/passwd"),
        ("symlink", "up", "../../../../../.." + str(secret))])])
    b, _ = bundle(rt, f"oci:{layout}:links")
    patch_config(rt, b, ["/bin/sh", "-c", "cat /to-host /up; cat /to-passwd | head -1"],
                 user={"uid": 0, "gid": 0}, cwd="/")
    r = rt.hako("run", "--bundle", b, rt.new_id(), timeout=60)
    assert "host only" not in r.stdout
    assert r.stdout.strip() == "root:x:0:0:root:/root:/bin/sh", (r.stdout, r.stderr)


def test_device_nodes_and_overlay_tricks_neutralised(rt):
    lower = ib.layer_tar([("dir", "keep"), ("file", "keep/visible", "v")])
    top = ib.layer_tar([
        ("char", "devnull", 1, 3), ("block", "sda", 8, 0, 0o660),
        ("char", "fake-whiteout", 0, 0),                           # would act as a whiteout
        ("dir", "keep"), ("file", "keep/new", "n", 0o644, 0, 0,
                          {"trusted.overlay.opaque": "y"}),
        _raw("fifo-ok", tarfile.FIFOTYPE, None),
    ])
    # a directory claiming to be opaque through its xattrs (pax on the dir entry)
    ti = tarfile.TarInfo("opq-forged")
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.pax_headers = {"SCHILY.xattr.user.overlay.opaque": "y",
                      "SCHILY.xattr.trusted.overlay.opaque": "y"}
    forged = ib.layer_tar([("raw", ti, None)])
    below = ib.layer_tar([("dir", "opq-forged"), ("file", "opq-forged/still-here", "s")])
    layout = _image(rt, "devs", [lower, below, top, forged])
    b, r = bundle(rt, f"oci:{layout}:devs")
    assert "fake-whiteout" in r.stderr and "overlay whiteout" in r.stderr
    if rt.rootless:
        assert "skipped devnull (device 1:3)" in r.stderr
    view = run_listing(rt, b)
    assert "/opq-forged/still-here" in view           # the forged opaque xattr was dropped
    assert "/keep/visible" in view and "/keep/new" in view
    assert "/fake-whiteout" not in view
    assert view["/fifo-ok"][0] == "fifo"
    if rt.rootless:
        assert "/devnull" not in view and "/sda" not in view
    else:
        assert view["/devnull"][0::4] == ("char", "1:3")
        assert view["/sda"][0::4] == ("block", "8:0")
    metas = [json.loads((p / "layer.json").read_text())
             for p in (store_of(rt) / "layers").iterdir()]
    assert any("trusted.overlay.opaque" in m["dropped_xattrs"] for m in metas)


def test_corrupt_blobs_refused(rt):
    layers = [ib.layer_tar(None, base_dir=rt.session.rootfs()),
              ib.layer_tar([("file", "f", "content")])]
    layout = ib.write_oci(rt.dir / "corrupt", [("c", ib.Image(layers))], compression="")
    blob = layout / "blobs" / "sha256" / ib.sha(layers[1])[7:]
    data = bytearray(blob.read_bytes())
    i = data.index(b"content")
    data[i] = ord("C")          # same size, other content
    blob.write_bytes(bytes(data))
    rt.chown(layout)
    _, r = bundle(rt, f"oci:{layout}:c", name="bc", check=False)
    assert r.returncode != 0 and "digest mismatch" in r.stderr, r.stderr
    layers_dir = store_of(rt) / "layers"
    assert not (layers_dir / ib.sha(layers[1])[7:]).exists()
    assert not [p for p in layers_dir.iterdir() if p.name.startswith(".")]
    # a config that does not match its digest is refused before any unpack
    layout2 = ib.write_oci(rt.dir / "corrupt2", [("c", ib.Image(layers))], compression="")
    man = json.loads((layout2 / "blobs" / "sha256" /
                      json.loads((layout2 / "index.json").read_text())["manifests"][0]["digest"][7:]
                      ).read_text())
    cfgp = layout2 / "blobs" / "sha256" / man["config"]["digest"][7:]
    cfgp.write_text(cfgp.read_text().replace("/bin/sh", "/bin/xx"))
    rt.chown(layout2)
    _, r = bundle(rt, f"oci:{layout2}:c", name="bc2", check=False)
    assert r.returncode != 0 and "digest mismatch" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_layer_store_files_belong_to_subordinate_ids(rt, hako_session):
    """Rootless ownership: unpacked in a user namespace, so the host sees
    subordinate ids (and the user cannot remove them directly)."""
    layout = _image(rt, "own", [ib.layer_tar([("file", "owned", "o", 0o600, 1000, 1000)])])
    bundle(rt, f"oci:{layout}:own")
    if os.geteuid() != 0:
        pytest.skip("needs root to read the subordinate ids' files")
    cfg = json.loads((rt.dir / "b" / "config.json").read_text())
    sub = cfg["linux"]["uidMappings"][1]
    found = [p for p in (store_of(rt) / "layers").glob("*/diff/owned")]
    assert len(found) == 1
    assert found[0].stat().st_uid == sub["hostID"] + 1000 - 1
    # and `hako layers prune --all` can remove them (through the user namespace)
    (rt.dir / "b" / "config.json").unlink()
    assert rt.hako("images", "rm", "own", "--store", store_of(rt)).returncode == 0
    r = rt.hako("layers", "prune", "--store", store_of(rt))
    assert r.returncode == 0, r.stderr
    assert not found[0].exists()
