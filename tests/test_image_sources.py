"""Reading images: manifest selection (name, digest, platform), the formats,
and the store's bookkeeping; mostly through `hako bundle` as an ordinary user."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

import imagebuild as ib
from test_image_drivers import bundle, patch_config, store_of

pytestmark = pytest.mark.parametrize("mode", ["rootless"], indirect=True)


def _marker_image(rt, arch: str, text: str) -> ib.Image:
    base = ib.layer_tar(None, base_dir=rt.session.rootfs())
    return ib.Image([base, ib.layer_tar([("file", "which", text)])], arch=arch,
                    config={"Cmd": ["cat", "/which"]})


def _run(rt, b: Path) -> str:
    patch_config(rt, b)
    r = rt.hako("run", "--bundle", b, rt.new_id(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_platform_selection(rt):
    layout = ib.write_oci(rt.dir / "multi", [("multi", _marker_image(rt, "amd64", "amd64\n")),
                                             (None, _marker_image(rt, "arm64", "arm64\n"))],
                          multiarch=True)
    rt.chown(layout)
    b, _ = bundle(rt, f"oci:{layout}:multi", name="b1")
    if os.uname().machine == "x86_64":
        assert _run(rt, b) == "amd64\n"
    b2, _ = bundle(rt, f"oci:{layout}:multi", "--platform", "linux/arm64", name="b2")
    cfg = json.loads((b2 / "config.json").read_text())
    assert cfg["annotations"]["org.opencontainers.image.architecture"] == "arm64"
    _, r = bundle(rt, f"oci:{layout}:multi", "--platform", "linux/s390x", name="b3",
                  check=False)
    assert r.returncode != 0 and "linux/amd64" in r.stderr and "linux/arm64" in r.stderr


def test_selection_by_name_and_digest(rt):
    one, two = _marker_image(rt, "amd64", "one\n"), _marker_image(rt, "amd64", "two\n")
    layout = ib.write_oci(rt.dir / "two", [("one", one), ("two", two)])
    rt.chown(layout)
    _, r = bundle(rt, str(layout), name="b0", check=False)
    assert r.returncode != 0 and "--name" in r.stderr and "one" in r.stderr
    b, _ = bundle(rt, str(layout), "--name", "two", name="b1")
    assert _run(rt, b) == "two\n"
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    b, _ = bundle(rt, f"{layout}@{digest}", name="b2")
    assert _run(rt, b) == "one\n"
    _, r = bundle(rt, str(layout), "--name", "three", name="b3", check=False)
    assert r.returncode != 0 and "no image named 'three'" in r.stderr


def test_docker_archive_names(rt):
    arc = ib.write_docker_archive(rt.dir / "d.tar", [
        ("docker.io/library/busybox:latest", _marker_image(rt, "amd64", "bb\n")),
        ("example.com/app:2", _marker_image(rt, "amd64", "app\n"))])
    rt.chown(arc)
    b, _ = bundle(rt, f"docker-archive:{arc}", "--name", "busybox", name="b1")
    assert _run(rt, b) == "bb\n"
    b, _ = bundle(rt, str(arc), "--name", "example.com/app:2", name="b2")
    assert _run(rt, b) == "app\n"
    # docker 25's layout of the same archive: blobs/sha256/ paths in manifest.json
    arc2 = ib.write_docker_archive(rt.dir / "d2.tar", [("new:1", _marker_image(rt, "amd64",
                                                                             "new\n"))],
                                   blobs=True)
    rt.chown(arc2)
    b, _ = bundle(rt, f"docker-archive:{arc2}", name="b4")
    assert _run(rt, b) == "new\n"
    # a legacy layer.tar whose content does not match the config's diff_id
    good = ib.write_docker_archive(rt.dir / "good.tar", [("bad:1", _marker_image(rt, "amd64",
                                                                               "original\n"))])
    with tarfile.open(good) as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else None)
                   for m in src.getmembers()]
    with tarfile.open(rt.dir / "bad.tar", "w") as out:
        for m, data in members:
            if m.name.endswith("layer.tar") and b"original" in data:
                data = data.replace(b"original", b"ORIGINAL")
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    rt.chown(rt.dir / "bad.tar")
    _, r = bundle(rt, str(rt.dir / "bad.tar"), name="b3", check=False)
    assert r.returncode != 0 and "digest mismatch" in r.stderr, r.stderr
    assert not [p for p in (store_of(rt) / "layers").iterdir() if p.name.startswith(".")]


def test_progress_on_a_terminal(rt):
    big = ib.layer_tar([("file", f"f{i}", os.urandom(1 << 20)) for i in range(48)])
    layout = ib.write_oci(rt.dir / "big", [("big", ib.Image([big]))], compression="gzip")
    rt.chown(layout)
    r = rt.hako("bundle", "--image", f"oci:{layout}:big", "--store", store_of(rt),
                rt.dir / "b", "--", "true", env={"HAKO_PROGRESS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "MiB" in r.stderr and "unpacked" in r.stderr, r.stderr
    # and nothing when stderr is not a terminal
    _, r2 = bundle(rt, f"oci:{layout}:big", name="b2", cmd=["true"])
    assert "MiB" not in r2.stderr


def test_help_lists_the_image_commands(rt):
    r = rt.hako("--help", root=None)
    for verb in ("bundle", "images", "layers"):
        assert f"   {verb}" in r.stdout
    r = rt.hako("bundle", "--help", root=None)
    assert "--image" in r.stdout and "--driver" in r.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
