"""Regressions first seen under real engines (tests/engines/), reproduced here
without an engine, deterministically.
"""

from __future__ import annotations

import os
import sys

import pytest

import support

# hako's CLI in-process, with every cgroup.procs write delayed: the init has
# long failed (and exited) by the time the parent moves it into its cgroup.
SLOW_CGROUP_MOVE = """
import sys, time
sys.path.insert(0, {repo!r})
from runtime.cgroups import fsutil
_write_pid = fsutil.write_pid
def slow(*a, **k):
    time.sleep(0.5)
    return _write_pid(*a, **k)
fsutil.write_pid = slow
from runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_init_error_wins_over_a_late_cgroup_move(rt):
    """containerd's shim showed "cannot write PID to .../cgroup.procs: No such
    process" instead of "executable file not found" about half the time: the
    init failed before the parent had moved it into its cgroup."""
    cid = rt.new_id()

    def patch(cfg):  # containerd's spec has no cgroup mount: the parent moves the init
        cfg["linux"]["cgroupsPath"] = f"/{cid}"
        cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "cgroup"]

    bundle = rt.bundle(["no-such-program"], patch=patch)
    code = SLOW_CGROUP_MOVE.format(repo=str(support.REPO))
    r = rt.run([sys.executable, "-I", "-S", "-c", code, "--root", rt.state_dir,
                "create", "--bundle", bundle, cid])
    assert r.returncode == 1, r
    assert 'exec: "no-such-program": executable file not found in $PATH' in r.stderr, r.stderr
    assert "cgroup.procs" not in r.stderr
    assert not (rt.state_dir / cid).exists()


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_cgroup_mount_shows_the_containers_own_cgroup(rt):
    """podman/docker `update --memory` looked ignored from inside: without a
    cgroup namespace on cgroup v1, the init binds *its own* cgroup at
    /sys/fs/cgroup/<controller> -- it must be in the container's cgroup by
    then, not still in its parent's while the parent moves it."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        pytest.skip("cgroup v2 host: a cgroup2 mount shows the whole hierarchy")
    cid = rt.new_id()
    bundle = rt.bundle(["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
                       patch={"linux": {"cgroupsPath": f"/{cid}",
                                        "resources": {"memory": {"limit": 64 << 20}}}})
    code = SLOW_CGROUP_MOVE.format(repo=str(support.REPO))
    r = rt.run([sys.executable, "-I", "-S", "-c", code, "--root", rt.state_dir,
                "run", "--bundle", bundle, cid])
    assert r.returncode == 0, r
    assert r.stdout.strip() == str(64 << 20), r.stdout
