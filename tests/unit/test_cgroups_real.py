"""runtime.cgroups against the real kernel, as root, without any container runtime.

Each test makes cgroups named after a random token, puts plain child processes
(python, sleep) in them and checks that the limits really bite: a memory hog
is OOM-killed, a fork loop stops at pids.limit, a frozen busy loop stops
accumulating CPU time, kill_all empties the cgroup and destroy leaves nothing.
The v2 code runs against the host's cgroup2 hierarchy (/sys/fs/cgroup/unified
on this hybrid host, or /sys/fs/cgroup on a v2 one). A fixture removes every
directory carrying the token, and restores the unified root's
subtree_control, even when a test fails; every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.cgroups import create_manager, fsutil, paths  # noqa: E402
from runtime.cgroups.v2 import V2Manager  # noqa: E402

HOST = paths.Host.detect()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real cgroups"),
    pytest.mark.skipif(HOST.mode == "none", reason="no cgroup filesystem"),
]
PY = "/usr/bin/python3"
TIMEOUT = 30.0
needs_v1 = pytest.mark.skipif(HOST.mode not in ("v1", "hybrid"), reason="needs v1 controllers")
needs_unified = pytest.mark.skipif(HOST.unified is None, reason="needs a cgroup2 hierarchy")


def _cgroup_mounts() -> list[str]:
    mps = [m.mountpoint for m in HOST.hierarchies().values()]
    if HOST.unified is not None:
        mps.append(HOST.unified.mountpoint)
    return mps


def _purge(token: str) -> list[str]:
    """Kill and remove every cgroup directory whose name holds the token."""
    found = []
    for mp in _cgroup_mounts():
        for dirpath, dirnames, _ in os.walk(mp, topdown=True):
            if dirpath.count("/") - mp.count("/") > 3:
                dirnames[:] = []
                continue
            for d in list(dirnames):
                if token in d:
                    found.append(os.path.join(dirpath, d))
                    dirnames.remove(d)
    for path in found:
        for f, v in (("freezer.state", "THAWED"), ("cgroup.freeze", "0"), ("cgroup.kill", "1")):
            try:
                fsutil.write(path, f, v)
            except Exception:
                pass
        for dirpath, _d, _f in os.walk(path):
            for pid in fsutil.read_pids(dirpath) if os.path.exists(dirpath) else []:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        fsutil.rmdir_tree(path)
    return found


@pytest.fixture
def token():
    tok = "hakocgt" + secrets.token_hex(4)
    uni = HOST.unified.mountpoint if HOST.unified is not None else None
    before = set((fsutil.read_or(uni, "cgroup.subtree_control", "") or "").split()) if uni \
        else set()
    procs: list[subprocess.Popen] = []
    yield tok, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    left = _purge(tok)
    if uni:
        after = set((fsutil.read_or(uni, "cgroup.subtree_control", "") or "").split())
        for c in sorted(after - before):
            try:
                fsutil.write(uni, "cgroup.subtree_control", "-" + c)
            except Exception:
                pass
    assert not [p for p in left if os.path.exists(p)], f"cgroups left behind: {left}"


def gated(procs: list, code: str) -> subprocess.Popen:
    """A python child that waits for a line on stdin before running ``code``,
    so it can be put in a cgroup first."""
    p = subprocess.Popen([PY, "-c", "import sys\nsys.stdin.readline()\n" + code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def go(p: subprocess.Popen) -> None:
    p.stdin.write("\n")
    p.stdin.flush()


def cputime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def wait_for(cond, timeout: float = TIMEOUT, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def manager(tok: str, resources: dict | None = None, **spec_linux):
    spec = {"linux": {"cgroupsPath": f"/{tok}/ctr", "resources": resources or {}, **spec_linux}}
    m = create_manager(spec, tok, rootless=False, systemd=False)
    m.create()
    m.apply(spec["linux"]["resources"])
    return m


# ------------------------------------------------------------------ v1 / hybrid
@needs_v1
def test_memory_hog_is_oom_killed_and_reported(token):
    tok, procs = token
    limit = 48 << 20
    m = manager(tok, {"memory": {"limit": limit, "swap": limit}})
    assert fsutil.read_uint(m.paths["memory"], "memory.limit_in_bytes") == limit
    from runtime.cgroups.notify import oom_notifier
    oom = oom_notifier(m)
    try:
        p = gated(procs, "chunks = []\nwhile True:\n    chunks.append(b'x' * (4 << 20))\n")
        m.enter(p.pid)
        go(p)
        assert p.wait(timeout=TIMEOUT) == -signal.SIGKILL
        assert m.oom_kill_count() >= 1
        ready = select.select([oom.fileno()], [], [], TIMEOUT)[0]
        assert ready and oom.events() >= 1
    finally:
        oom.close()
    st = m.stats()
    mem = st["memory"]
    assert mem["usage"]["limit"] == limit and mem["usage"]["max"] > limit // 2
    m.destroy()


@needs_v1
def test_fork_loop_stops_at_pids_limit(token):
    tok, procs = token
    m = manager(tok, {"pids": {"limit": 8}})
    p = gated(procs, (
        "import os, time\n"
        "n = 0\n"
        "while n < 100:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print(n, flush=True)\n"
        "time.sleep(60)\n"))
    m.enter(p.pid)
    go(p)
    ready = select.select([p.stdout], [], [], TIMEOUT)[0]
    assert ready, "the fork loop did not stop"
    assert int(p.stdout.readline()) == 7  # 8 tasks: the parent and 7 children
    assert m.stats()["pids"] == {"current": 8, "limit": 8}
    m.kill_all(signal.SIGKILL)
    assert m.wait_empty(TIMEOUT)
    assert p.wait(timeout=TIMEOUT) == -signal.SIGKILL
    m.destroy()
    assert not m.exists()


@needs_v1
def test_freeze_stops_a_busy_loop(token):
    tok, procs = token
    m = manager(tok)
    p = gated(procs, "while True:\n    pass\n")
    m.enter(p.pid)
    go(p)
    assert wait_for(lambda: cputime(p.pid) > 5)
    m.freeze()
    assert m.is_frozen()
    t0 = cputime(p.pid)
    time.sleep(0.5)
    assert cputime(p.pid) == t0
    m.thaw()
    assert not m.is_frozen()
    assert wait_for(lambda: cputime(p.pid) > t0 + 5)
    m.kill_all(signal.SIGKILL)
    assert p.wait(timeout=TIMEOUT) == -signal.SIGKILL
    m.destroy()


@needs_v1
def test_kill_all_signals_every_process_even_when_paused(token):
    tok, procs = token
    m = manager(tok)
    p = gated(procs, "import subprocess, time\n"
                     "kids = [subprocess.Popen(['sleep', '60']) for _ in range(3)]\n"
                     "print('ok', flush=True)\ntime.sleep(60)\n")
    m.enter(p.pid)
    go(p)
    assert select.select([p.stdout], [], [], TIMEOUT)[0] and p.stdout.readline().strip() == "ok"
    assert len(m.pids()) == 4
    m.kill_all(signal.SIGTERM)
    assert m.wait_empty(TIMEOUT)
    # paused: SIGKILL must still empty it (the freezer is thawed after)
    q = subprocess.Popen(["sleep", "60"])
    procs.append(q)
    m.enter(q.pid)
    m.freeze()
    m.kill_all(signal.SIGKILL)
    assert q.wait(timeout=TIMEOUT) == -signal.SIGKILL
    assert m.wait_empty(TIMEOUT) and not m.is_frozen()
    m.destroy()
    assert not [d for d in m.dirs() if os.path.exists(d)]


@needs_v1
def test_cpu_cpuset_and_devices_files(token):
    tok, procs = token
    m = manager(tok, {"cpu": {"shares": 256, "quota": 20000, "period": 100000, "cpus": "0",
                              "mems": "0"},
                      "devices": [{"allow": False, "access": "rwm"},
                                  {"allow": True, "type": "c", "major": 1, "minor": 3,
                                   "access": "rw"}]})
    assert fsutil.read(m.paths["cpu"], "cpu.shares").strip() == "256"
    assert fsutil.read(m.paths["cpu"], "cpu.cfs_quota_us").strip() == "20000"
    assert fsutil.read(m.paths["cpuset"], "cpuset.cpus").strip() == "0"
    lst = fsutil.read(m.paths["devices"], "devices.list").split("\n")
    assert "a *:* rwm" not in lst and "c 1:3 rwm" in lst and "c 1:9 rwm" in lst
    # the devices cgroup really denies: /dev/kmsg (c 1:11) is not allowed
    p = gated(procs, "import os\nfor d in ('/dev/null', '/dev/kmsg'):\n"
                     "    try:\n        os.close(os.open(d, os.O_RDONLY)); print(d, 'ok')\n"
                     "    except OSError as e:\n        print(d, e.errno)\n")
    m.enter(p.pid)
    go(p)
    out, _ = p.communicate(timeout=TIMEOUT)
    assert out.split("\n")[:2] == ["/dev/null ok", "/dev/kmsg 1"]
    m.destroy()


@needs_v1
def test_update_pause_events_through_the_cli(token, tmp_path, capsys):
    """hako update / pause / resume / events on a "container" whose init is a
    plain sleep in a hako-made cgroup (no container runtime involved)."""
    tok, procs = token
    from runtime.cgroups import ops
    from runtime.cli import main
    from runtime.state import Container, proc_stat
    m = manager(tok, {"memory": {"limit": 100 << 20}, "pids": {"limit": 10}})
    p = subprocess.Popen(["sleep", "60"])
    procs.append(p)
    m.enter(p.pid)
    root = tmp_path / "state"
    (root / tok).mkdir(parents=True)
    (root / tok / "state.json").write_text(json.dumps({
        "ociVersion": "1.3.0", "id": tok, "pid": p.pid, "bundle": "/", "rootfs": "/",
        "hako": {"init_start": proc_stat(p.pid)[1], "cgroup": m.to_state()}}))
    g = ["--root", str(root)]
    assert main(g + ["update", "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "5",
                     "--cpu-quota", "50000", tok]) == 0
    assert fsutil.read_uint(m.paths["memory"], "memory.limit_in_bytes") == 64 << 20
    assert fsutil.read(m.paths["pids"], "pids.max").strip() == "5"
    assert fsutil.read(m.paths["cpu"], "cpu.cfs_quota_us").strip() == "50000"
    assert main(g + ["pause", tok]) == 0
    with Container.open(str(root), tok) as c:
        assert ops.status(c) == "paused"
    assert main(g + ["pause", tok]) == 1
    assert main(g + ["resume", tok]) == 0
    with Container.open(str(root), tok) as c:
        assert ops.status(c) == "running"
    capsys.readouterr()
    assert main(g + ["events", "--stats", tok]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"] == {"current": 1, "limit": 5}
    m.kill_all(signal.SIGKILL)
    assert p.wait(timeout=TIMEOUT) == -signal.SIGKILL
    m.destroy()


@pytest.mark.skipif(HOST.mode != "hybrid", reason="hybrid host only")
def test_hybrid_joins_the_unified_hierarchy_and_limits_hugetlb_there(token):
    tok, procs = token
    m = manager(tok, {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert m.driver == "hybrid"
    p = subprocess.Popen(["sleep", "60"])
    procs.append(p)
    m.enter(p.pid)
    cg = Path(f"/proc/{p.pid}/cgroup").read_text()
    assert f"0::/{tok}/ctr\n" in cg and f":memory:/{tok}/ctr\n" in cg
    if "hugetlb" not in m.paths:
        assert fsutil.read(m.unified.path, "hugetlb.2MB.max").strip() == str(4 << 20)
    m.kill_all(signal.SIGKILL)  # via cgroup.kill on the unified hierarchy
    assert p.wait(timeout=TIMEOUT) == -signal.SIGKILL
    m.destroy()


def test_rootless_on_this_host(capsys):
    from runtime import log
    m = create_manager({}, "x", rootless=True, systemd=False)
    if HOST.mode in ("v1", "hybrid"):
        assert m is None
        assert capsys.readouterr().err.count("warning") == 0  # no limits asked for
        spec = {"linux": {"resources": {"memory": {"limit": 1 << 26}}}}
        assert create_manager(spec, "x", rootless=True, systemd=False) is None
        assert capsys.readouterr().err.count("warning") == 1
    log.configure(None, "text", False)


# ------------------------------------------------------------------ v2 (unified)
@needs_unified
def test_v2_core_files_on_the_unified_hierarchy(token):
    """procs, freeze, kill, subtree_control and the eBPF device filter."""
    tok, procs = token
    mp = HOST.unified.mountpoint
    m = V2Manager(tok, mp, f"{mp}/{tok}/ctr")
    m.create()
    avail = set(fsutil.read(mp, "cgroup.controllers").split())
    enabled = set(fsutil.read(f"{mp}/{tok}", "cgroup.subtree_control").split())
    assert enabled == avail & set(fsutil.read(f"{mp}/{tok}", "cgroup.controllers").split())
    res = {"devices": [{"allow": False, "access": "rwm"}]}
    if "hugetlb" in avail:
        res["hugepageLimits"] = [{"pageSize": "2MB", "limit": 2 << 20}]
    m.apply(res)
    if "hugetlb" in avail:
        assert fsutil.read(m.path, "hugetlb.2MB.max").strip() == str(2 << 20)
    p = gated(procs, "import os\nfor d in ('/dev/null', '/dev/kmsg'):\n"
                     "    try:\n        os.close(os.open(d, os.O_RDONLY)); print(d, 'ok')\n"
                     "    except OSError as e:\n        print(d, e.errno)\n"
                     "print('spin', flush=True)\nwhile True:\n    pass\n")
    m.enter(p.pid)
    assert m.pids() == [p.pid]
    go(p)
    lines = [p.stdout.readline().strip() for _ in range(3)]
    assert lines == ["/dev/null ok", "/dev/kmsg 1", "spin"]
    assert wait_for(lambda: cputime(p.pid) > 5)
    m.freeze()
    assert m.is_frozen()
    assert "frozen 1" in fsutil.read(m.path, "cgroup.events")
    t0 = cputime(p.pid)
    time.sleep(0.5)
    assert cputime(p.pid) == t0
    m.thaw()
    assert wait_for(lambda: cputime(p.pid) > t0 + 5)
    m.freeze()
    m.kill_all(signal.SIGKILL)  # cgroup.kill works on a frozen cgroup
    assert p.wait(timeout=TIMEOUT) == -signal.SIGKILL
    assert m.wait_empty(TIMEOUT)
    m.destroy()
    assert not os.path.exists(m.path)
