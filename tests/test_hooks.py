"""OCI hooks: order, namespace, stdin state, timeout, failure and cleanup."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import support

# A host-side hook: appends what it saw (its kind, the state on stdin, its
# mount namespace, the cmdline of the state's pid) as one JSON line.
RECORDER = """#!/usr/bin/python3
import json, os, sys
kind, log = sys.argv[1], sys.argv[2]
state = json.load(sys.stdin)
cmd = ""
if state.get("pid"):
    try:
        cmd = open(f"/proc/{state['pid']}/cmdline").read().replace("\\0", " ").strip()
    except OSError:
        cmd = "?"
rec = {"kind": kind, "state": state, "mntns": os.readlink("/proc/self/ns/mnt"), "cmd": cmd,
       "env": dict(os.environ)}
with open(log, "a") as f:
    f.write(json.dumps(rec) + "\\n")
if len(sys.argv) > 3:
    sys.exit(int(sys.argv[3]))
"""


@pytest.fixture
def hooklog(rt):
    d = rt.dir / "hooks"
    d.mkdir()
    rec = d / "record.py"
    rec.write_text(RECORDER)
    rec.chmod(0o755)
    log = d / "log"
    log.write_text("")
    log.chmod(0o666)
    rt.chown(d)
    return d


def records(hookdir: Path) -> list[dict]:
    return [json.loads(l) for l in (hookdir / "log").read_text().splitlines() if l.strip()]


def host_hook(hookdir: Path, kind: str, exit_code: int | None = None, **extra) -> dict:
    args = ["record.py", kind, str(hookdir / "log")] + ([str(exit_code)] if exit_code is not None else [])
    return {"path": str(hookdir / "record.py"), "args": args, "env": ["HOOKVAR=yes"], **extra}


def in_container_hook(kind: str) -> dict:
    """startContainer runs after pivot_root: its path is the container's."""
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> /hooks/{kind}.json"],
            "env": ["PATH=/bin"]}


def with_hooks(hookdir: Path, hooks: dict):
    def patch(c):
        c["hooks"] = hooks
        c["mounts"].append({"destination": "/hooks", "type": "bind", "source": str(hookdir),
                            "options": ["rbind", "rw"]})
    return patch


def test_every_phase_in_order_with_state(rt, hooklog):
    hooks = {k: [host_hook(hooklog, k)] for k in
             ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
    hooks["startContainer"] = [in_container_hook("startContainer")]
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=with_hooks(hooklog, hooks))
    assert rt.hako("create", "--bundle", bundle, cid).returncode == 0
    pid = json.loads(rt.hako("state", cid).stdout)["pid"]
    kinds = [r["kind"] for r in records(hooklog)]
    assert kinds == ["prestart", "createRuntime", "createContainer"]
    assert not (hooklog / "startContainer.json").exists()  # not during create
    r = rt.hako("start", cid)
    assert r.returncode == 0, r.stderr
    assert [r["kind"] for r in records(hooklog)][-1] == "poststart"
    # (read once the process runs: the waiting init is non-dumpable, so only root
    # could read its /proc entries before start)
    init_mntns = os.readlink(f"/proc/{pid}/ns/mnt")
    start_state = json.loads((hooklog / "startContainer.json").read_text())
    assert start_state["status"] == "created" and start_state["id"] == cid
    assert rt.hako("kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: json.loads(rt.hako("state", cid).stdout)["status"] == "stopped")
    assert rt.hako("delete", cid).returncode == 0
    recs = {r["kind"]: r for r in records(hooklog)}
    assert list(recs) == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    for kind, rec in recs.items():
        assert rec["state"]["id"] == cid and rec["state"]["bundle"] == str(bundle)
        assert rec["env"].get("HOOKVAR") == "yes" and "HAKO_TEST_SESSION" not in rec["env"]
    assert recs["createRuntime"]["state"]["status"] == "created"  # tests/test_hook_status.py
    assert recs["createRuntime"]["state"]["pid"] == pid
    assert recs["poststart"]["state"]["status"] == "running"
    assert recs["poststop"]["state"]["status"] == "stopped"
    # namespaces: runtime hooks in the caller's, createContainer in the container's
    host_mntns = os.readlink("/proc/self/ns/mnt")
    assert recs["createRuntime"]["mntns"] == host_mntns
    assert recs["poststart"]["mntns"] == host_mntns
    assert recs["createContainer"]["mntns"] == init_mntns != host_mntns
    # poststart sees the user's process, not hako's init
    assert recs["poststart"]["cmd"] == "sleep 1000"


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_aborts_and_cleans_up(rt, hooklog, kind):
    hooks = {kind: [host_hook(hooklog, kind, exit_code=3)], "poststop": [host_hook(hooklog, "poststop")]}
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=with_hooks(hooklog, hooks)), cid)
    assert r.returncode != 0
    assert f"hooks.{kind}[0]" in r.stderr and "status 3" in r.stderr
    assert not (rt.state_dir / cid).exists()
    # the spec continues the lifecycle at delete: poststop still runs
    assert [r["kind"] for r in records(hooklog)] == [kind, "poststop"]


def test_hook_timeout_kills_it(rt, hooklog):
    hooks = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}
    cid = rt.new_id()
    t0 = time.monotonic()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=with_hooks(hooklog, hooks)), cid)
    assert r.returncode != 0 and "timed out after 1s" in r.stderr
    assert time.monotonic() - t0 < 20
    assert not (rt.state_dir / cid).exists()
    # no `sleep 30` survives (the teardown checks processes of this session too)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and
                _cmdline(p) == "sleep 30"]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        return ""


def test_failing_start_container_hook_fails_start(rt, hooklog):
    hooks = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]}
    cid = rt.new_id()
    assert rt.hako("create", "--bundle", rt.bundle(["sleep", "1000"],
                                                   patch=with_hooks(hooklog, hooks)), cid).returncode == 0
    r = rt.hako("start", cid)
    assert r.returncode != 0 and "hooks.startContainer[0]" in r.stderr
    support.wait_until(lambda: json.loads(rt.hako("state", cid).stdout)["status"] == "stopped")


def test_failing_poststart_and_poststop_are_warnings(rt, hooklog):
    hooks = {"poststart": [host_hook(hooklog, "poststart", exit_code=1),
                           host_hook(hooklog, "poststart2")],
             "poststop": [host_hook(hooklog, "poststop", exit_code=1)]}
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=with_hooks(hooklog, hooks))
    assert rt.hako("create", "--bundle", bundle, cid).returncode == 0
    r = rt.hako("start", cid)
    assert r.returncode == 0 and "warning" in r.stderr and "hooks.poststart[0]" in r.stderr
    r = rt.hako("delete", "--force", cid)
    assert r.returncode == 0 and "hooks.poststop[0]" in r.stderr
    assert [r["kind"] for r in records(hooklog)] == ["poststart", "poststart2", "poststop"]


def test_missing_hook_binary(rt, hooklog):
    hooks = {"createRuntime": [{"path": "/no/such/hook"}]}
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=with_hooks(hooklog, hooks)), cid)
    assert r.returncode != 0 and "/no/such/hook" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()


def test_run_runs_poststop(rt, hooklog):
    hooks = {"poststop": [host_hook(hooklog, "poststop")]}
    r = rt.hako("run", "--bundle", rt.bundle(["true"], patch=with_hooks(hooklog, hooks)), rt.new_id())
    assert r.returncode == 0, r.stderr
    assert [r["kind"] for r in records(hooklog)] == ["poststop"]
