"""Cheap checks that the shared fixtures work, using runc alone (no hako needed)."""

from __future__ import annotations

import json
import os

import support


def test_runc_run_echo(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["echo", "hello"])
    r = rt.runc("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"


def test_bundle_layout(rt):
    bundle = rt.bundle(["true"], hostname="box", patch={"process": {"cwd": "/tmp"}})
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["process"]["args"] == ["true"]
    assert cfg["process"]["terminal"] is False
    assert cfg["process"]["cwd"] == "/tmp"
    assert cfg["hostname"] == "box"
    assert f"{support.MARKER}={rt.session.base}" in cfg["process"]["env"]
    rootfs = bundle / "rootfs"
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert (rootfs / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    for d in (bundle, rootfs, rootfs / "bin" / "busybox", rt.state_dir, rt.runc_state_dir):
        assert os.stat(d).st_uid == rt.uid, d
    if rt.rootless:
        assert {"type": "user"} in cfg["linux"]["namespaces"]
        assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": rt.uid, "size": 1}]
        assert cfg["linux"]["gidMappings"] == [{"containerID": 0, "hostID": rt.gid, "size": 1}]
    else:
        assert "uidMappings" not in cfg["linux"]


def test_patch_callable_and_delete(rt):
    def patch(cfg):
        cfg["process"]["args"] = ["sh", "-c", "echo $FOO"]
        cfg["process"]["env"].append("FOO=bar")

    bundle = rt.bundle(patch=patch)
    assert rt.read_config(bundle)["process"]["args"] == ["sh", "-c", "echo $FOO"]
    bundle2 = rt.bundle(["true"], patch={"linux": {"maskedPaths": support.DELETE}})
    assert "maskedPaths" not in rt.read_config(bundle2)["linux"]
    r = rt.runc("run", "--bundle", bundle, rt.new_id())
    assert (r.returncode, r.stdout) == (0, "bar\n"), r.stderr


def test_leftover_detection(rt):
    """A created-but-not-deleted container is seen (state + process) and then gone."""
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "60"])
    r = rt.runc("create", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    left = support.find_leftovers(rt.session.base, [rt.runc_state_dir], rt.session.token)
    kinds = {x.kind for x in left}
    assert "state" in kinds and "process" in kinds, left
    r = rt.runc("start", cid)
    assert r.returncode == 0, r.stderr
    state = json.loads(rt.runc("state", cid).stdout)
    assert state["status"] == "running"
    left = support.find_leftovers(rt.session.base, [rt.runc_state_dir], rt.session.token)
    assert any(x.kind == "process" and x.what == str(state["pid"]) for x in left), left
    r = rt.runc("delete", "--force", cid)
    assert r.returncode == 0, r.stderr
    assert support.find_leftovers(rt.session.base, [rt.runc_state_dir], rt.session.token) == []


def test_call_timeout(rt):
    import pytest

    bundle = rt.bundle(["sleep", "30"])
    with pytest.raises(support.RuntimeTimeout, match="did not finish"):
        rt.runc("run", "--bundle", bundle, rt.new_id(), timeout=1)
