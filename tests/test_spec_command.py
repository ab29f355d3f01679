"""`hako spec` writes runc's starting config, and it runs out of the box."""

from __future__ import annotations

import json
import shutil

from runtime.default_spec import default_spec


def test_spec_writes_default_and_refuses_overwrite(rt):
    d = rt.dir / "s"
    d.mkdir()
    rt.chown(d)
    r = rt.hako("spec", "--bundle", d, root=None)
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "config.json").read_text()) == default_spec(rootless=False)
    r = rt.hako("spec", "--bundle", d, root=None)
    assert r.returncode != 0 and "exists" in r.stderr


def test_spec_rootless_then_run_works_out_of_the_box(rt):
    """The README's first steps for an ordinary user: spec --rootless, run."""
    d = rt.dir / "s"
    shutil.copytree(rt.session.rootfs(), d / "rootfs", symlinks=True)
    rt.chown(d)
    flag = ["--rootless"] if rt.rootless else []
    r = rt.hako("spec", *flag, "--bundle", d, root=None)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["process"]["terminal"] is True and cfg["process"]["args"] == ["sh"]
    # sh with a terminal reads the commands from our stdin
    r = rt.hako("run", "--bundle", d, rt.new_id(), input="echo out-of-the-box\nexit 0\n")
    assert r.returncode == 0, r.stderr
    assert "out-of-the-box" in r.stdout
