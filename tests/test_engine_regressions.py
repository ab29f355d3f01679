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


# What conmon and containerd's shim do around `RT exec --detach --pid-file F`:
# as a subreaper, reap whatever exits, in order. Both learn the process' pid
# from the pid file once the runtime has exited; an exit reaped before that
# is lost (podman exec returned 255, `ctr task exec` hung).
SUBREAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
pid_file = sys.argv[1]
rt = subprocess.Popen(sys.argv[2:])
order = []
while len(order) < 2:
    pid, status = os.waitpid(-1, 0)
    order.append("runtime" if pid == rt.pid else "process")
print(" ".join(order), open(pid_file).read().strip())
"""


def test_detached_exec_process_starts_after_the_runtime_exits(rt):
    cid = rt.new_id()
    r = rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid)
    assert r.returncode == 0, r.stderr
    pid_file = rt.dir / "exec.pid"
    for _ in range(3):
        r = rt.run([sys.executable, "-I", "-S", "-c", SUBREAPER, pid_file,
                    *rt.hako_argv("exec", "--detach", "--pid-file", pid_file, cid, "true")])
        assert r.returncode == 0, r
        assert r.stdout.startswith("runtime process "), (
            f"the exec'd process exited before hako did: {r.stdout}")
    rt.hako("delete", "--force", cid)


# The joiner reports the process' pid and the process reports "ready" on the
# same pipe, in either order. Delay the pid message: hako must still wait for it.
SLOW_PID_MESSAGE = """
import sys, time
sys.path.insert(0, {repo!r})
from runtime.channel import Channel
_send = Channel.send
def send(self, **msg):
    if "pid" in msg:
        time.sleep(0.3)
    return _send(self, **msg)
Channel.send = send
from runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_exec_ready_before_pid_message(rt):
    """podman exec (rootless) sometimes gave exit code -1/255: conmon read 0
    from --pid-file, written before the joiner's pid message had arrived."""
    cid = rt.new_id()
    r = rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid)
    assert r.returncode == 0, r.stderr
    code = SLOW_PID_MESSAGE.format(repo=str(support.REPO))
    hako = [sys.executable, "-I", "-S", "-c", code, "--root", rt.state_dir]
    pid_file = rt.dir / "exec.pid"
    r = rt.run([*hako, "exec", "--detach", "--pid-file", pid_file, cid, "sleep", "5"])
    assert r.returncode == 0, r
    pid = int(pid_file.read_text())
    assert pid > 0 and os.path.exists(f"/proc/{pid}"), f"pid file says {pid}"
    r = rt.run([*hako, "exec", cid, "sh", "-c", "exit 7"])
    assert r.returncode == 7, r
    rt.hako("delete", "--force", cid)
