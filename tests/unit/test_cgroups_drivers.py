"""The v1, v2 and hybrid drivers against a fake cgroupfs: what is written where,
conversions, clear errors for what cannot be honoured, freezer, stats, and the
pause/resume/update/events verbs end to end on a fake state directory."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cgroupfs_fake import FakeCgroupfs  # noqa: E402
from runtime.cgroups import create_manager, fsutil, manager_from_state, ops  # noqa: E402
from runtime.errors import HakoError  # noqa: E402


@pytest.fixture
def warnings(monkeypatch):
    got: list[str] = []
    from runtime import log
    monkeypatch.setattr(log, "warn", got.append)
    return got


def make(tmp_path, monkeypatch, mode, spec=None, **kw):
    fs = FakeCgroupfs(tmp_path, mode, **kw).install(monkeypatch)
    spec = spec or {"linux": {"cgroupsPath": "/ctr"}}
    m = create_manager(spec, "ctr", rootless=False, systemd=False, host=fs.host())
    m.create()
    return fs, m


def rd(path) -> str:
    return Path(path).read_text().strip()


# ------------------------------------------------------------------ create / destroy
@pytest.mark.parametrize("mode", ["v1", "v2", "hybrid"])
def test_create_and_destroy(tmp_path, monkeypatch, mode):
    fs, m = make(tmp_path, monkeypatch, mode, {"linux": {"cgroupsPath": "/a/b/ctr"}})
    for d in m.dirs():
        assert os.path.isdir(d)
    m.destroy()
    assert not [d for d in m.dirs() if os.path.exists(d)]
    m.destroy()  # idempotent


def test_v1_cpuset_parents_get_cpus_and_mems(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1", {"linux": {"cgroupsPath": "/p/q/ctr"}})
    for d in ("p", "p/q", "p/q/ctr"):
        assert rd(fs.root / "cpuset" / d / "cpuset.cpus") == "0-1"
        assert rd(fs.root / "cpuset" / d / "cpuset.mems") == "0"


def test_destroy_reports_busy(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    (Path(m.paths["memory"]) / "cgroup.procs").write_text("12345\n")
    monkeypatch.setattr(fsutil.time, "sleep", lambda s: None)
    with pytest.raises(HakoError, match="cannot remove cgroup.*busy"):
        m.destroy()


def test_v2_enables_controllers_top_down(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v2", {"linux": {"cgroupsPath": "/a/ctr"}})
    want = "+cpu +cpuset +hugetlb +io +memory +pids"
    assert rd(fs.root / "cgroup.subtree_control") == want
    assert rd(fs.root / "a" / "cgroup.subtree_control") == want
    assert rd(fs.root / "a" / "ctr" / "cgroup.subtree_control") == ""


def test_hybrid_leaves_the_unified_tree_alone_unless_needed(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "hybrid", v2_controllers=("hugetlb",),
                 v1=("cpu", "memory", "devices", "freezer", "pids"))
    m.apply({})
    assert rd(fs.root / "unified" / "cgroup.subtree_control") == ""
    m.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert rd(fs.root / "unified" / "cgroup.subtree_control") == "+hugetlb"
    assert rd(fs.root / "unified" / "ctr" / "hugetlb.2MB.max") == str(4 << 20)


# ------------------------------------------------------------------ v1 resources
def test_v1_memory_cpu_pids(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    m.apply({"memory": {"limit": 100 << 20, "swap": 200 << 20, "reservation": 50 << 20,
                        "swappiness": 0, "disableOOMKiller": True},
             "cpu": {"shares": 512, "quota": 20000, "period": 50000, "burst": 1000,
                     "realtimeRuntime": 100, "realtimePeriod": 1000, "cpus": "1", "mems": "0",
                     "idle": 1},
             "pids": {"limit": 42}})
    mem = Path(m.paths["memory"])
    assert rd(mem / "memory.limit_in_bytes") == str(100 << 20)
    assert rd(mem / "memory.memsw.limit_in_bytes") == str(200 << 20)
    assert rd(mem / "memory.soft_limit_in_bytes") == str(50 << 20)
    assert rd(mem / "memory.swappiness") == "0"
    assert rd(mem / "memory.oom_control") == "1"
    cpu = Path(m.paths["cpu"])
    assert [rd(cpu / f) for f in ("cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us",
                                  "cpu.cfs_burst_us", "cpu.rt_runtime_us", "cpu.rt_period_us",
                                  "cpu.idle")] == ["512", "20000", "50000", "1000", "100", "1000",
                                                   "1"]
    assert rd(Path(m.paths["cpuset"]) / "cpuset.cpus") == "1"
    assert rd(Path(m.paths["pids"]) / "pids.max") == "42"
    m.apply({"pids": {"limit": -1}})
    assert rd(Path(m.paths["pids"]) / "pids.max") == "max"


def test_v1_swap_raised_before_memory(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    mem = Path(m.paths["memory"])
    (mem / "memory.limit_in_bytes").write_text("1000")
    log: list = []
    monkeypatch.setattr(fsutil, "WRITE_LOG", log)
    m.apply({"memory": {"limit": 5000, "swap": 9000}})
    names = [Path(p).name for p, _ in log if p.startswith(str(mem))]
    assert names[:2] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    log.clear()
    m.apply({"memory": {"limit": -1}})  # unlimited: swap unlimited too
    assert [(Path(p).name, v) for p, v in log if p.startswith(str(mem))][:2] == [
        ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_v1_check_before_update(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    (Path(m.paths["memory"]) / "memory.usage_in_bytes").write_text("10000")
    with pytest.raises(HakoError, match="rejecting memory limit 5000 <= usage 10000"):
        m.apply({"memory": {"limit": 5000, "checkBeforeUpdate": True}})


def test_v1_swappiness_range(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    with pytest.raises(HakoError, match="swappiness"):
        m.apply({"memory": {"swappiness": 101}})


def test_v1_kernel_memory_not_enforced_warns(tmp_path, monkeypatch, warnings):
    fs, m = make(tmp_path, monkeypatch, "v1")
    (Path(m.paths["memory"]) / "memory.kmem.limit_in_bytes").unlink()
    m.apply({"memory": {"kernel": 1 << 20, "kernelTCP": 1 << 20}})
    assert any("kernel" in w and "not enforced" in w for w in warnings)
    assert rd(Path(m.paths["memory"]) / "memory.kmem.tcp.limit_in_bytes") == str(1 << 20)


def test_v1_blkio_weight_falls_back_then_fails_clearly(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    blk = Path(m.paths["blkio"])
    with pytest.raises(HakoError, match="blockIO.weight.*neither blkio.weight nor "
                                        "blkio.bfq.weight"):
        m.apply({"blockIO": {"weight": 500}})
    (blk / "blkio.bfq.weight").write_text("100")
    m.apply({"blockIO": {"weight": 500, "throttleReadBpsDevice": [
        {"major": 8, "minor": 0, "rate": 1000}]}})
    assert rd(blk / "blkio.bfq.weight") == "500"
    assert rd(blk / "blkio.throttle.read_bps_device") == "8:0 1000"


@pytest.mark.parametrize("res,ctrl", [
    ({"network": {"classID": 5}}, "net_cls"),
    ({"network": {"priorities": [{"name": "eth0", "priority": 1}]}}, "net_prio"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}, "hugetlb"),
])
def test_v1_missing_controller_is_an_error(tmp_path, monkeypatch, res, ctrl):
    fs, m = make(tmp_path, monkeypatch, "v1")
    log: list = []
    monkeypatch.setattr(fsutil, "WRITE_LOG", log)
    with pytest.raises(HakoError, match=f"the {ctrl} cgroup controller is not mounted"):
        m.apply({"memory": {"limit": 1 << 20}, **res})
    assert log == []  # checked before anything is written


def test_v1_net_controllers_when_mounted(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1",
                 v1=("memory", "devices", "freezer", "net_cls", "net_prio"))
    m.apply({"network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}})
    assert rd(Path(m.paths["net_cls"]) / "net_cls.classid") == "1048577"
    assert rd(Path(m.paths["net_prio"]) / "net_prio.ifpriomap") == "eth0 5"


def test_unified_on_v1_is_an_error(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    with pytest.raises(HakoError, match="unified.*cgroup v1"):
        m.apply({"unified": {"memory.high": "1"}})


def test_unified_on_hybrid_only_for_unified_controllers(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "hybrid", v2_controllers=("hugetlb",))
    with pytest.raises(HakoError, match="memory controller is not on this host's unified"):
        m.apply({"unified": {"memory.high": "1"}})
    m.apply({"unified": {"hugetlb.2MB.max": "2097152"}})
    assert rd(Path(m.unified.path) / "hugetlb.2MB.max") == "2097152"


def test_hugetlb_unknown_page_size(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1",
                 v1=("memory", "devices", "freezer", "hugetlb"))
    with pytest.raises(HakoError, match="page size '3MB'"):
        m.apply({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]})
    m.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]})
    assert rd(Path(m.paths["hugetlb"]) / "hugetlb.2MB.limit_in_bytes") == str(2 << 20)


# ------------------------------------------------------------------ v2 resources
def test_v2_conversions(tmp_path, monkeypatch, warnings):
    fs, m = make(tmp_path, monkeypatch, "v2")
    monkeypatch.setattr("runtime.cgroups.ebpf.attach", lambda path, insns: None)
    m.apply({"memory": {"limit": 100 << 20, "swap": 300 << 20, "reservation": 10 << 20,
                        "swappiness": 10},
             "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "burst": 10, "idle": 0,
                     "cpus": "0", "mems": "0"},
             "blockIO": {"weight": 1000, "throttleWriteIOPSDevice": [
                 {"major": 8, "minor": 16, "rate": 30}]},
             "pids": {"limit": 7}, "unified": {"memory.high": "1000000"}})
    p = Path(m.path)
    assert rd(p / "memory.max") == str(100 << 20)
    assert rd(p / "memory.swap.max") == str(200 << 20)  # memsw - memory
    assert rd(p / "memory.low") == str(10 << 20)
    assert rd(p / "cpu.weight") == "100"
    assert rd(p / "cpu.max") == "50000 200000"
    assert rd(p / "cpu.max.burst") == "10"
    assert rd(p / "io.weight") == "10000"
    assert rd(p / "io.max") == "8:16 wiops=30"
    assert rd(p / "pids.max") == "7"
    assert rd(p / "memory.high") == "1000000"
    assert any("swappiness" in w for w in warnings)


def test_v2_quota_without_period_and_unlimited(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v2")
    monkeypatch.setattr("runtime.cgroups.ebpf.attach", lambda path, insns: None)
    m.apply({"cpu": {"quota": -1}, "memory": {"limit": -1}})
    assert rd(Path(m.path) / "cpu.max") == "max 100000"
    assert rd(Path(m.path) / "memory.max") == "max"
    assert rd(Path(m.path) / "memory.swap.max") == "max"


@pytest.mark.parametrize("res,msg", [
    ({"cpu": {"realtimeRuntime": 5}}, "real-time"),
    ({"blockIO": {"leafWeight": 5}}, "leaf weight"),
    ({"network": {"classID": 1}}, "exists only on cgroup v1"),
    ({"memory": {"useHierarchy": False}}, "always hierarchical"),
    ({"unified": {"a/b": "1"}}, "no slashes"),
    ({"unified": {"nodot": "1"}}, "CONTROLLER.PARAMETER"),
])
def test_v2_refusals(tmp_path, monkeypatch, res, msg):
    fs, m = make(tmp_path, monkeypatch, "v2")
    monkeypatch.setattr("runtime.cgroups.ebpf.attach", lambda path, insns: None)
    with pytest.raises(HakoError, match=msg):
        m.apply(res)


def test_v2_missing_controller(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v2", v2_controllers=("cpu", "pids"))
    with pytest.raises(HakoError, match="memory cgroup controller is not available"):
        m.apply({"memory": {"limit": 1 << 20}})
    with pytest.raises(HakoError, match="io controller is not available"):
        m.apply({"unified": {"io.weight": "5"}})


def test_v2_devices_go_to_ebpf(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v2")
    got = []
    monkeypatch.setattr("runtime.cgroups.ebpf.attach", lambda path, insns: got.append(path))
    m.apply({"devices": [{"allow": False, "access": "rwm"}]})
    assert got == [m.path]
    got.clear()
    m.apply({}, skip_devices=True)
    assert got == []


# ------------------------------------------------------------------ freezer, kill
@pytest.mark.parametrize("mode", ["v1", "v2", "hybrid"])
def test_freeze_thaw_state(tmp_path, monkeypatch, mode):
    fs, m = make(tmp_path, monkeypatch, mode)
    assert not m.is_frozen()
    if mode == "v2":
        (Path(m.path) / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    m.freeze()
    assert m.is_frozen()
    m.thaw()
    assert not m.is_frozen()


def test_v1_frozen_by_a_parent_is_not_paused(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    f = Path(m.paths["freezer"])
    (f / "freezer.state").write_text("FROZEN\n")
    (f / "freezer.self_freezing").write_text("0\n")
    assert not m.is_frozen()


def test_v2_freeze_times_out_and_thaws(tmp_path, monkeypatch):
    import runtime.cgroups.v2 as v2
    fs, m = make(tmp_path, monkeypatch, "v2")
    monkeypatch.setattr(v2, "FREEZE_TIMEOUT", 0.2)
    with pytest.raises(HakoError, match="timed out"):
        m.freeze()
    assert rd(Path(m.path) / "cgroup.freeze") == "0"


def test_no_freezer(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1", v1=("memory", "devices"))
    with pytest.raises(HakoError, match="freezer cgroup controller is not mounted"):
        m.freeze()
    assert not m.is_frozen()


def test_kill_all_uses_cgroup_kill_on_v2(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v2")
    m.kill_all(9)
    assert rd(Path(m.path) / "cgroup.kill") == "1"


# ------------------------------------------------------------------ stats
def test_v1_stats_shape(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    st = m.stats()
    assert set(st) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                       "network_interfaces"}
    assert st["cpu"]["usage"]["total"] == 123456789
    assert st["cpu"]["usage"]["percpu"] == [100, 200]
    assert st["cpu"]["usage"]["percpu_user"] == [60, 150]
    assert st["cpu"]["throttling"] == {"periods": 7, "throttledPeriods": 2, "throttledTime": 1500}
    assert st["memory"]["cache"] == 100 and st["memory"]["raw"]["rss"] == 200
    assert st["memory"]["usage"] == {"limit": 9223372036854771712, "usage": 4096, "max": 8192,
                                     "failcnt": 0}
    assert st["memory"]["kernelTCP"] == {"limit": 9223372036854771712, "failcnt": 0}
    assert st["pids"] == {"current": 1}
    assert st["blkio"]["ioServicedRecursive"] == [
        {"major": 8, "op": "Read", "value": 3}, {"major": 8, "op": "Write", "value": 4}]
    assert st["cpuset"]["cpus"] == [0, 1] and st["cpuset"]["sched_relax_domain_level"] == -1
    assert st["network_interfaces"] is None and st["intel_rdt"] == {}
    json.dumps(st)


def test_v2_stats(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v2")
    (Path(m.path) / "pids.max").write_text("50\n")
    st = m.stats()
    assert st["cpu"]["usage"] == {"total": 10000, "kernel": 4000, "user": 6000}
    assert st["memory"]["cache"] == 50
    assert st["memory"]["usage"]["usage"] == 4096
    assert st["pids"] == {"current": 1, "limit": 50}
    assert {"major": 8, "op": "Read", "value": 10} in st["blkio"]["ioServiceBytesRecursive"]


# ------------------------------------------------------------------ the verbs
def _container(tmp_path, m, cid="ctr"):
    """A state dir whose "init" is this test process (status: running)."""
    from runtime.state import proc_stat
    root = tmp_path / "state"
    (root / cid).mkdir(parents=True)
    state = {"ociVersion": "1.3.0", "id": cid, "pid": os.getpid(), "bundle": "/", "rootfs": "/",
             "hako": {"init_start": proc_stat(os.getpid())[1],
                      "cgroup": m.to_state() if m else None}}
    (root / cid / "state.json").write_text(json.dumps(state))
    return {"root": str(root)}


def test_pause_resume_status(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    (Path(m.paths["pids"]) / "cgroup.procs").write_text(f"{os.getpid()}\n")
    g = _container(tmp_path, m)
    with pytest.raises(HakoError, match="container not paused"):
        ops.resume(g, "ctr")
    ops.pause(g, "ctr")
    from runtime.state import Container
    with Container.open(g["root"], "ctr") as c:
        assert ops.status(c) == "paused"
    with pytest.raises(HakoError, match="container not running"):
        ops.pause(g, "ctr")
    ops.resume(g, "ctr")
    with Container.open(g["root"], "ctr") as c:
        assert ops.status(c) == "running"
    (Path(m.paths["pids"]) / "cgroup.procs").write_text("")


def test_pause_when_the_processes_are_gone(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    g = _container(tmp_path, m)
    with pytest.raises(HakoError, match="already exited"):
        ops.pause(g, "ctr")


def test_verbs_without_a_cgroup(tmp_path):
    g = _container(tmp_path, None)
    for verb in (ops.pause, lambda g, c: ops.update(g, c, {"memory": "1m"}),
                 lambda g, c: ops.events(g, c, stats_only=True)):
        with pytest.raises(HakoError, match="no cgroup"):
            verb(g, "ctr")


def test_update_flags_merge_and_persist(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    m.apply({"memory": {"limit": 100 << 20}, "pids": {"limit": 10}})
    g = _container(tmp_path, m)
    from runtime.cli import main
    assert main(["--root", g["root"], "update", "--memory", "200m", "--cpu-share", "256",
                 "--pids-limit", "20", "ctr"]) == 0
    assert rd(Path(m.paths["memory"]) / "memory.limit_in_bytes") == str(200 << 20)
    assert rd(Path(m.paths["cpu"]) / "cpu.shares") == "256"
    assert rd(Path(m.paths["pids"]) / "pids.max") == "20"
    saved = json.loads((Path(g["root"]) / "ctr" / "state.json").read_text())
    res = manager_from_state(saved["hako"]["cgroup"]).resources
    assert res["memory"]["limit"] == 200 << 20 and res["cpu"]["shares"] == 256


def test_update_resources_from_stdin(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    g = _container(tmp_path, m)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(
        {"memory": {"limit": 300 << 20}, "pids": {"limit": 33}})))
    ops.update(g, "ctr", {"resources": "-"})
    assert rd(Path(m.paths["memory"]) / "memory.limit_in_bytes") == str(300 << 20)
    assert rd(Path(m.paths["pids"]) / "pids.max") == "33"
    monkeypatch.setattr(sys, "stdin", io.StringIO("[1]"))
    with pytest.raises(HakoError, match="JSON object"):
        ops.update(g, "ctr", {"resources": "-"})


def test_update_bad_flag_value_exit_code(tmp_path, monkeypatch, capsys):
    fs, m = make(tmp_path, monkeypatch, "v1")
    g = _container(tmp_path, m)
    from runtime.cli import main
    assert main(["--root", g["root"], "update", "--memory", "lots", "ctr"]) == 2
    assert "invalid value for memory" in capsys.readouterr().err
    assert main(["--root", g["root"], "update", "--l3-cache-schema", "L3:0=f", "ctr"]) == 1


def test_events_stats_once(tmp_path, monkeypatch, capsys):
    fs, m = make(tmp_path, monkeypatch, "v1")
    g = _container(tmp_path, m)
    from runtime.cli import main
    assert main(["--root", g["root"], "events", "--stats", "ctr"]) == 0
    line = capsys.readouterr().out
    ev = json.loads(line)
    assert list(ev) == ["type", "id", "data"] and ev["type"] == "stats" and ev["id"] == "ctr"
    assert '"type":"stats"' in line  # compact, like Go's json.Encoder
    assert main(["--root", g["root"], "events", "--interval", "0s", "ctr"]) == 1


def test_events_stream_stops_when_the_cgroup_goes(tmp_path, monkeypatch, capsys):
    fs, m = make(tmp_path, monkeypatch, "v2")
    g = _container(tmp_path, m)
    import threading
    t = threading.Timer(0.35, m.destroy)
    t.start()
    try:
        ops.events(g, "ctr", interval=0.1)
    finally:
        t.join()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines and all(e["type"] == "stats" for e in lines)


def test_rdma(tmp_path, monkeypatch):
    fs, m = make(tmp_path, monkeypatch, "v1")
    with pytest.raises(HakoError, match="the rdma cgroup controller is not mounted"):
        m.apply({"rdma": {"mlx5_1": {"hcaHandles": 3}}})
    from runtime.cgroups.v2 import rdma_lines
    assert rdma_lines({"b": {"hcaObjects": 5}, "a": {"hcaHandles": 3, "hcaObjects": 7}}) == [
        "a hca_handle=3 hca_object=7", "b hca_handle=max hca_object=5"]
