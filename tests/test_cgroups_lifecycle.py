"""cgroups through real containers: limits, pause/resume, update, events, cleanup.

Root only on this hybrid host for the limits (rootless containers on cgroup v1
run without a cgroup, as with runc; that path is checked too).
"""

from __future__ import annotations

import json
import os
import time

import pytest

import support


def state_of(rt, cid):
    r = rt.hako("state", cid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def cgroup_paths(rt, cid) -> list[str]:
    st = json.loads((rt.state_dir / cid / "state.json").read_text())
    cg = st["hako"].get("cgroup") or {}
    paths = list((cg.get("paths") or {}).values())
    if cg.get("unified"):
        paths.append(cg["unified"][1])
    if cg.get("path"):
        paths.append(cg["path"])
    return paths


def root_only(rt):
    if rt.mode != "root":
        pytest.skip("rootless containers on a cgroup v1/hybrid host have no cgroup (as runc)")


def test_memory_limit_oom_kills(rt):
    root_only(rt)
    bundle = rt.bundle(["sh", "-c", "head -c 200m /dev/zero | tail > /dev/null; echo status=$?"],
                       patch={"linux": {"resources": {"memory": {"limit": 32 * 2**20}}}})
    r = rt.hako("run", "--bundle", bundle, rt.new_id(), timeout=60)
    # the OOM killer takes tail (the shell then prints 137) or, at times, the shell itself
    assert r.stdout.strip() == "status=137" or (r.returncode == 137 and not r.stdout), \
        (r.returncode, r.stdout, r.stderr)


def test_pids_limit_stops_fork_loop(rt):
    root_only(rt)
    script = "for i in $(seq 30); do sleep 100 & done; echo all-forked"
    bundle = rt.bundle(["sh", "-c", script], patch={"linux": {"resources": {"pids": {"limit": 8}}}})
    r = rt.hako("run", "--bundle", bundle, rt.new_id(), timeout=60)
    assert r.returncode != 0 and "all-forked" not in r.stdout
    assert "can't fork" in r.stderr


def test_pause_resume_and_exec_refused_while_paused(rt):
    root_only(rt)
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sh", "-c", "while :; do :; done"]),
                   cid).returncode == 0
    pid = state_of(rt, cid)["pid"]
    assert rt.hako("pause", cid).returncode == 0
    assert state_of(rt, cid)["status"] == "paused"

    def cpu():
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    a = cpu()
    time.sleep(0.5)
    assert cpu() == a, "a paused container kept running"
    r = rt.hako("exec", cid, "true")
    assert r.returncode != 0 and "paused" in r.stderr
    assert rt.hako("resume", cid).returncode == 0
    assert state_of(rt, cid)["status"] == "running"
    time.sleep(0.3)
    assert cpu() > a
    r = rt.hako("resume", cid)
    assert r.returncode != 0 and "not paused" in r.stderr


def test_update_changes_a_live_limit(rt):
    root_only(rt)
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch={"linux": {"resources": {"pids": {"limit": 50}}}})
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    pids_dir = next(p for p in cgroup_paths(rt, cid) if "/pids/" in p)
    assert open(os.path.join(pids_dir, "pids.max")).read().strip() == "50"
    assert rt.hako("update", "--pids-limit", "20", cid).returncode == 0
    assert open(os.path.join(pids_dir, "pids.max")).read().strip() == "20"
    r = rt.hako("update", "--resources", "-", cid, input=json.dumps({"pids": {"limit": 30}}))
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(pids_dir, "pids.max")).read().strip() == "30"
    mem_dir = next(p for p in cgroup_paths(rt, cid) if "/memory/" in p)
    assert rt.hako("update", "--memory", "64m", cid).returncode == 0
    assert int(open(os.path.join(mem_dir, "memory.limit_in_bytes")).read()) == 64 * 2**20


def test_events_stats_line(rt):
    root_only(rt)
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid).returncode == 0
    r = rt.hako("events", "--stats", cid)
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout.splitlines()[0])
    assert ev["type"] == "stats" and ev["id"] == cid
    assert "memory" in ev["data"] and "pids" in ev["data"]


def test_delete_removes_the_cgroup(rt):
    root_only(rt)
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sh", "-c", "sleep 1000 & sleep 1000"]),
                   cid).returncode == 0
    paths = cgroup_paths(rt, cid)
    assert paths and all(os.path.isdir(p) for p in paths)
    assert rt.hako("delete", "--force", cid).returncode == 0
    assert not any(os.path.exists(p) for p in paths)


def test_kill_all_uses_the_cgroup(rt):
    root_only(rt)
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sh", "-c", "sleep 1000 & sleep 1000"]),
                   cid).returncode == 0
    assert rt.hako("kill", "--all", cid, "KILL").returncode == 0
    support.wait_until(lambda: state_of(rt, cid)["status"] == "stopped")


def test_rootless_v1_warns_only_when_limits_are_lost(rt):
    if rt.mode != "rootless":
        pytest.skip("the rootless path")
    r = rt.hako("run", "--bundle", rt.bundle(["true"]), rt.new_id())
    assert r.returncode == 0 and r.stderr == ""
    bundle = rt.bundle(["true"], patch={"linux": {"resources": {"pids": {"limit": 10}}}})
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.returncode == 0
    assert "NOT enforced" in r.stderr and r.stderr.count("\n") == 1
    r = rt.hako("pause", rt.new_id())
    assert r.returncode != 0


def test_systemd_cgroup_is_a_clear_error(rt):
    cid = rt.new_id()
    r = rt.hako("--systemd-cgroup", "create", "--bundle", rt.bundle(["true"]), cid)
    assert r.returncode != 0 and "--systemd-cgroup" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()


def test_hako_killed_mid_create_leaves_nothing_after_delete(rt):
    """SIGKILL of hako while a hook runs: the init dies at EOF; `delete --force`
    of the leftover directory removes the cgroup recorded before it was made."""
    root_only(rt)
    import signal
    cid = rt.new_id()
    bundle = rt.bundle(["true"], patch={"hooks": {"createRuntime": [
        {"path": "/bin/sleep", "args": ["sleep", "30"]}]}})
    p = rt.popen(rt.hako_argv("create", "--bundle", bundle, cid))
    marker = rt.state_dir / cid / "creating.json"
    support.wait_until(lambda: marker.exists(), what="create to record its cgroup")
    cg = json.loads(marker.read_text())["cgroup"]
    paths = list(cg["paths"].values())
    support.wait_until(lambda: all(os.path.isdir(x) for x in paths), what="the cgroup")
    os.killpg(p.pid, signal.SIGKILL)  # hako and its hook (same process group)
    p.wait(timeout=10)
    assert rt.hako("delete", "--force", cid).returncode == 0
    assert not (rt.state_dir / cid).exists()
    support.wait_until(lambda: not any(os.path.exists(x) for x in paths),
                       what="the cgroup to be removed")


def _host_cgroup(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return sorted(f.read().splitlines())


@pytest.mark.parametrize("variant", ["plain", "cgroupns", "hooks"])
def test_init_and_exec_are_born_in_every_hierarchy(rt, variant):
    """The init (create) and an exec'd process join the container's cgroup
    as they are born (clone3 into the cgroup2 dir, their own write to each v1
    `tasks`), on each of create's paths: the init forked directly, with a
    cgroup namespace, and through stage-1 when hooks run. Seen from the host:
    every hierarchy names the container's cgroup, the exec'd process is
    exactly where the init is, and holds no fd of a host cgroup directory."""
    root_only(rt)
    cid = rt.new_id()
    patch = {}
    if variant == "cgroupns":
        patch = lambda c: c["linux"]["namespaces"].append({"type": "cgroup"}) or c  # noqa: E731
    elif variant == "hooks":
        patch = {"hooks": {"createRuntime": [{"path": "/bin/true"}]}}
    pidfile = rt.dir / f"{cid}.pid"
    r = rt.hako("run", "-d", "--pid-file", pidfile, "--bundle",
                rt.bundle(["sleep", "1000"], patch=patch), cid)
    assert r.returncode == 0, r.stderr
    init = int(pidfile.read_text())
    lines = _host_cgroup(init)  # every hierarchy the host has, each a line
    assert lines and all(line.endswith("/" + cid) for line in lines), lines
    epid = rt.dir / f"{cid}.exec.pid"
    r = rt.hako("exec", "-d", "--pid-file", epid, cid, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    proc = int(epid.read_text())
    assert _host_cgroup(proc) == lines
    fds = [os.readlink(f"/proc/{proc}/fd/{n}") for n in os.listdir(f"/proc/{proc}/fd")]
    assert not any("cgroup" in t for t in fds), fds
    r = rt.hako("exec", cid, "sh", "-c", "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    inside_init, _, inside_self = r.stdout.partition("--\n")
    assert inside_init == inside_self


def _make_sub(rt, cid: str, name: str) -> None:
    """A sub-cgroup in each of the container's hierarchies (cpuset needs
    its cpus and mems filled in before a process may join)."""
    for d in set(cgroup_paths(rt, cid)):
        sub = os.path.join(d, name)
        os.mkdir(sub)
        if os.path.exists(os.path.join(d, "cpuset.cpus")):
            for f in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(d, f)) as src:
                    value = src.read().strip()
                with open(os.path.join(sub, f), "w") as dst:
                    dst.write(value)


def _procs(rt, cid) -> set[int]:
    st = json.loads((rt.state_dir / cid / "state.json").read_text())
    with open(st["hako"]["cgroup"]["paths"]["pids"] + "/cgroup.procs") as f:
        return {int(p) for p in f.read().split()}


def test_exec_into_a_sub_cgroup(rt):
    """runc's exec --cgroup: a bare path moves every hierarchy, a controller
    prefix only its own; the sub-cgroup must exist and stay inside; a refusal
    starts no process. `delete` removes the sub-cgroups too."""
    root_only(rt)
    cid = rt.new_id()
    r = rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid)
    assert r.returncode == 0, r.stderr
    _make_sub(rt, cid, "sub")
    r = rt.hako("exec", "--cgroup", "sub", cid, "cat", "/proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(line.endswith(f"/{cid}/sub") for line in lines), lines
    r = rt.hako("exec", "--cgroup", "pids,memory:sub", cid, "cat", "/proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    moved = {line.split(":")[1] for line in r.stdout.splitlines() if line.endswith("/sub")}
    assert moved == {"pids", "memory"}, r.stdout
    before = _procs(rt, cid)
    for arg, why in (("nosuch", "no such sub-cgroup"), ("../x", "leads out of"),
                     ("net_cls:sub", "no net_cls hierarchy")):
        r = rt.hako("exec", "--cgroup", arg, cid, "true")
        assert r.returncode == 1 and why in r.stderr, (arg, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert _procs(rt, cid) == before
    paths = cgroup_paths(rt, cid)
    assert rt.hako("delete", "--force", cid).returncode == 0
    assert not any(os.path.exists(p) for p in paths)


def test_exec_into_a_sub_cgroup_as_runc_does(rt):
    """Differential: the same --cgroup arguments put the process in the same
    place under runc (relative to each runtime's container cgroup)."""
    root_only(rt)
    bundle = rt.bundle(["sleep", "1000"])
    views = {}
    for name, call in (("hako", rt.hako), ("runc", rt.runc)):
        cid = rt.new_id()
        r = call("run", "-d", "--bundle", bundle, cid)
        assert r.returncode == 0, r.stderr
        try:
            pid = json.loads(call("state", cid).stdout)["pid"]
            with open(f"/proc/{pid}/cgroup") as f:
                dirs = {}
                for line in f.read().splitlines():
                    _, ctrls, rel = line.split(":", 2)
                    dirs[ctrls] = rel
            for ctrls, rel in dirs.items():  # the same tree in both runtimes' cgroups
                mount = "/sys/fs/cgroup/" + (ctrls.replace("name=", "") if ctrls else "unified")
                if not ctrls and not os.path.isdir(mount):
                    mount = "/sys/fs/cgroup"  # cgroup v2 alone
                if os.path.isdir(mount + rel):
                    os.mkdir(mount + rel + "/sub")
            r = call("exec", "--cgroup", "pids:sub", "--cgroup", "memory:sub", cid,
                     "cat", "/proc/self/cgroup")
            assert r.returncode == 0, (name, r.stderr)
            views[name] = sorted(line.split(":")[1] + ("/sub" if line.endswith("/sub") else "")
                                 for line in r.stdout.splitlines())
        finally:
            call("delete", "--force", cid)
    assert views["hako"] == views["runc"], views
