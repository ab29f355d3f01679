"""The runc-compatible lifecycle, run for real, as root and rootless.

Every test runs once per mode (the ``mode`` fixture); ``rt`` runs hako as
that mode's user and checks at teardown that nothing was left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import support


def state_of(rt, cid: str, **kw) -> dict:
    r = rt.hako("state", cid, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_status(rt, cid: str, want: str, **kw) -> dict:
    return support.wait_until(lambda: (s := state_of(rt, cid, **kw))["status"] == want and s,
                              what=f"{cid} to be {want}")


def test_run_prints_and_exits_zero(rt):
    r = rt.hako("run", "--bundle", rt.bundle(["echo", "hello from hako"]), rt.new_id())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from hako\n"
    assert r.stderr == ""


def test_run_exit_status_is_propagated(rt):
    r = rt.hako("run", "--bundle", rt.bundle(["sh", "-c", "exit 3"]), rt.new_id())
    assert r.returncode == 3


def test_run_killed_by_signal_gives_128_plus_n(rt):
    # pid 1 cannot SIGKILL itself inside its namespace: kill it from outside
    cid = rt.new_id()
    p = rt.popen(rt.hako_argv("run", "--bundle", rt.bundle(["sleep", "1000"]), cid))
    support.wait_until(lambda: rt.hako("state", cid).returncode == 0 and
                       state_of(rt, cid)["status"] == "running", what="running")
    assert rt.hako("kill", cid, "KILL").returncode == 0
    assert p.wait(timeout=20) == 128 + 9


def test_run_leaves_no_state(rt):
    cid = rt.new_id()
    assert rt.hako("run", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    assert not (rt.state_dir / cid).exists()
    assert "does not exist" in rt.hako("state", cid).stderr


def test_engine_style_sequence(rt):
    """What containerd's shim and conmon do: create, start, state, kill, delete."""
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"])
    pid_file = rt.dir / "init.pid"
    r = rt.hako("create", "--bundle", bundle, "--pid-file", pid_file, cid)
    assert r.returncode == 0, r.stderr
    st = state_of(rt, cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == str(bundle)
    assert st["pid"] == int(pid_file.read_text()) > 0
    assert st["rootfs"] == str(bundle / "rootfs")
    assert (rt.state_dir / cid / "exec.fifo").exists()
    # the init waits: it is not yet the user's process
    assert "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_text()

    r = rt.hako("start", cid)
    assert r.returncode == 0, r.stderr
    st = state_of(rt, cid)
    assert st["status"] == "running"
    support.wait_until(lambda: "sleep" in Path(f"/proc/{st['pid']}/cmdline").read_text(),
                       what="the user process to exec")
    assert rt.hako("start", cid).returncode != 0  # second start refused

    r = rt.hako("delete", cid)
    assert r.returncode != 0 and "not stopped" in r.stderr
    assert rt.hako("kill", cid, "KILL").returncode == 0
    st = wait_status(rt, cid, "stopped")
    assert st["pid"] == 0
    r = rt.hako("kill", cid, "TERM")
    assert r.returncode != 0 and "not running" in r.stderr
    assert rt.hako("delete", cid).returncode == 0
    assert "does not exist" in rt.hako("state", cid).stderr
    assert not (rt.state_dir / cid).exists()


def test_default_state_root_without_root_flag(rt):
    """No --root: /run/hako as root, $XDG_RUNTIME_DIR/hako rootless."""
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"])
    r = rt.hako("create", "--bundle", bundle, cid, root=None)
    assert r.returncode == 0, r.stderr
    try:
        expected = Path("/run/hako") if rt.mode == "root" else rt.xdg / "hako"
        assert (expected / cid / "state.json").exists()
        assert state_of(rt, cid, root=None)["status"] == "created"
        assert rt.hako("start", cid, root=None).returncode == 0
        assert rt.hako("kill", cid, "9", root=None).returncode == 0
        wait_status(rt, cid, "stopped", root=None)
    finally:
        assert rt.hako("delete", "--force", cid, root=None).returncode == 0
    assert not (expected / cid).exists()


def test_delete_force_kills_running(rt):
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid).returncode == 0
    pid = state_of(rt, cid)["pid"]
    assert rt.hako("delete", "--force", cid).returncode == 0
    support.wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
                       Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z",
                       what="the init to die")


def test_delete_created_without_force(rt):
    """runc deletes a created (never started) container without --force."""
    cid = rt.new_id()
    assert rt.hako("create", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    assert rt.hako("delete", cid).returncode == 0
    assert not (rt.state_dir / cid).exists()


def test_kill_created_container(rt):
    cid = rt.new_id()
    assert rt.hako("create", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    assert rt.hako("kill", cid, "SIGKILL").returncode == 0
    wait_status(rt, cid, "stopped")
    r = rt.hako("start", cid)
    assert r.returncode != 0 and "stopped" in r.stderr


@pytest.mark.parametrize("spelling", ["9", "KILL", "SIGKILL", "kill", "sigkill"])
def test_kill_signal_spellings(rt, spelling):
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid).returncode == 0
    assert rt.hako("kill", cid, spelling).returncode == 0
    wait_status(rt, cid, "stopped")


def test_kill_default_is_term(rt):
    cid = rt.new_id()
    script = "trap 'echo TERM >/tmp/got; exit 0' TERM; while :; do sleep 0.05; done"
    bundle = rt.bundle(["sh", "-c", script])
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    time.sleep(0.2)  # let the shell install its trap
    assert rt.hako("kill", cid).returncode == 0
    wait_status(rt, cid, "stopped")


def test_kill_all(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    assert rt.hako("kill", "--all", cid, "KILL").returncode == 0
    wait_status(rt, cid, "stopped")


def test_bad_signal_is_an_error(rt):
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid).returncode == 0
    r = rt.hako("kill", cid, "SIGNOPE")
    assert r.returncode != 0 and "unknown signal" in r.stderr
    assert state_of(rt, cid)["status"] == "running"


def test_list(rt):
    ids = [rt.new_id(), rt.new_id()]
    for cid in ids:
        assert rt.hako("create", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    r = rt.hako("list", "--format", "json")
    listed = {s["id"]: s for s in json.loads(r.stdout)}
    assert set(ids) <= set(listed)
    assert all(listed[i]["status"] == "created" for i in ids)
    q = rt.hako("list", "-q").stdout.split()
    assert sorted(q) == sorted(ids)
    table = rt.hako("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert len(table) == 3


def test_create_stdio_becomes_container_stdio(rt):
    """Engines hand create its stdio and expect the container to use it."""
    cid = rt.new_id()
    out = rt.dir / "out.txt"
    with open(out, "w") as f:
        os.chown(out, rt.uid, rt.gid)
        r = rt.hako("create", "--bundle", rt.bundle(["sh", "-c", "echo to-stdout; echo to-stderr >&2"]),
                    cid, stdout=f, stderr=f)
    assert r.returncode == 0
    assert rt.hako("start", cid).returncode == 0
    wait_status(rt, cid, "stopped")
    assert sorted(out.read_text().split()) == ["to-stderr", "to-stdout"]


def test_signals_to_run_are_forwarded(rt):
    script = "trap 'echo forwarded; exit 7' USR1; echo ready; while :; do sleep 0.05; done"
    out = rt.dir / "fwd.txt"
    with open(out, "w") as f:
        p = rt.popen(rt.hako_argv("run", "--bundle", rt.bundle(["sh", "-c", script]), rt.new_id()),
                     stdout=f)
        support.wait_until(lambda: "ready" in out.read_text(), what="the container to start")
        time.sleep(0.1)
        os.kill(p.pid, signal.SIGUSR1)  # setpriv execs hako in place: same pid
        assert p.wait(timeout=20) == 7
    assert out.read_text().split() == ["ready", "forwarded"]


def test_preserve_fds(rt):
    out = rt.dir / "fd3.txt"
    out.write_text("")
    os.chown(out, rt.uid, rt.gid)
    argv = rt.hako_argv("run", "--preserve-fds", "1", "--bundle",
                        rt.bundle(["sh", "-c", "echo via-fd3 >&3; ls /proc/self/fd"]), rt.new_id())
    cmd = " ".join(f"'{a}'" for a in argv)
    r = rt.run(["sh", "-c", f"exec 3>>'{out}'; exec {cmd}"])
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "via-fd3\n"
    # 0-2, the preserved 3, and ls's own directory fd: nothing of hako's
    assert sorted(r.stdout.split()) == ["0", "1", "2", "3", "4"]


def test_no_host_fd_reaches_the_container(rt):
    r = rt.hako("run", "--bundle", rt.bundle(["ls", "/proc/self/fd"]), rt.new_id())
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["0", "1", "2", "3"]


def test_process_env_cwd_and_user(rt):
    uid = 0 if rt.rootless else 1000
    bundle = rt.bundle(["sh", "-c", "echo $FOO; pwd; id -u; id -g; echo $HOME; umask"],
                       patch={"process": {"env": ["PATH=/bin", "FOO=bar baz"], "cwd": "/work/here",
                                          "user": {"uid": uid, "gid": uid, "umask": 0o027}}})
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    home = "/root" if uid == 0 else "/"
    assert r.stdout.split("\n")[:6] == ["bar baz", "/work/here", str(uid), str(uid), home, "0027"]


def test_hostname_and_namespaces(rt):
    r = rt.hako("run", "--bundle", rt.bundle(["sh", "-c", "hostname; echo $$"], hostname="boxy"),
                rt.new_id())
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["boxy", "1"]


def test_readonly_root(rt):
    bundle = rt.bundle(["sh", "-c", "touch /x 2>/dev/null && echo writable || echo readonly"],
                       patch={"root": {"readonly": True}})
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.stdout.strip() == "readonly"


# ------------------------------------------------------------------ errors
def assert_clean_failure(rt, r, cid: str, *needles: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    assert lines[0].startswith("hako: ")
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (rt.state_dir / cid).exists(), "state directory left behind"


def test_missing_executable_fails_at_create(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["no-such-program"]), cid)
    assert_clean_failure(rt, r, cid, 'exec: "no-such-program": executable file not found in $PATH')


def test_missing_absolute_executable(rt):
    cid = rt.new_id()
    r = rt.hako("run", "--bundle", rt.bundle(["/nope/prog"]), cid)
    assert_clean_failure(rt, r, cid, '"/nope/prog"', "no such file")


def test_missing_config(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["true"])
    (bundle / "config.json").unlink()
    r = rt.hako("create", "--bundle", bundle, cid)
    assert_clean_failure(rt, r, cid, "config.json")


def test_invalid_config_names_the_path(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["true"], patch={"linux": {"uidMappings": [
        {"containerID": 0, "hostID": rt.uid, "size": 0}]}})
    r = rt.hako("create", "--bundle", bundle, cid)
    assert_clean_failure(rt, r, cid, "config.json: linux.uidMappings[0].size")


def test_invalid_json(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["true"])
    (bundle / "config.json").write_text("{ not json")
    r = rt.hako("create", "--bundle", bundle, cid)
    assert_clean_failure(rt, r, cid, "config.json")


def test_missing_rootfs(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["true"])
    cfg = rt.read_config(bundle)
    cfg["root"]["path"] = "no-such-rootfs"
    rt.write_config(bundle, cfg)
    r = rt.hako("create", "--bundle", bundle, cid)
    assert_clean_failure(rt, r, cid, "root.path")


def test_bad_mount_fails_cleanly(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["true"], patch=lambda c: c["mounts"].append(
        {"destination": "/data", "type": "bind", "source": "/no/such/source",
         "options": ["rbind"]}))
    r = rt.hako("create", "--bundle", bundle, cid)
    assert_clean_failure(rt, r, cid, "/no/such/source")


def test_duplicate_id(rt):
    cid = rt.new_id()
    assert rt.hako("create", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    r = rt.hako("create", "--bundle", rt.bundle(["true"]), cid)
    assert r.returncode != 0 and "exists" in r.stderr
    assert state_of(rt, cid)["status"] == "created"  # the first one is untouched


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "."])
def test_invalid_ids(rt, bad):
    r = rt.hako("create", "--bundle", rt.bundle(["true"]), bad)
    assert r.returncode != 0 and r.stderr.startswith("hako: ")


def test_unknown_verbs_and_flags(rt):
    assert rt.hako("frobnicate").returncode != 0
    r = rt.hako("create", "--bogus", "x")
    assert r.returncode != 0 and "bogus" in r.stderr


def test_json_log(rt):
    log = rt.dir / "log.json"
    cid = rt.new_id()
    r = rt.hako("--log", log, "--log-format", "json", "create", "--bundle",
                rt.bundle(["no-such-program"]), cid)
    assert r.returncode != 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error"
    assert "executable file not found" in entries[-1]["msg"]
    assert set(entries[-1]) == {"level", "msg", "time"}


def test_rootless_needs_user_namespace(rt):
    if rt.mode != "rootless":
        pytest.skip("only rootless needs a user namespace")
    cid = rt.new_id()
    bundle = rt.bundle(["true"], patch=lambda c: c["linux"].update(namespaces=[
        n for n in c["linux"]["namespaces"] if n["type"] != "user"]))
    r = rt.hako("create", "--bundle", bundle, cid)
    assert_clean_failure(rt, r, cid, "user namespace")


def test_hostile_rootfs_symlinks_stay_inside(rt):
    """A mount target reached through symlinks that point out of the rootfs
    must land inside the rootfs, never on the host."""
    outside = rt.dir / "outside"
    outside.mkdir()
    (outside / "marker").write_text("host")
    rt.chown(outside)

    def patch(c):
        c["mounts"].append({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid"]})
        c["mounts"].append({"destination": "/abs/sub", "type": "tmpfs", "source": "tmpfs"})
        c["process"]["args"] = ["sh", "-c", "echo ok > /evil/sub/f; ls /evil /abs"]
    bundle = rt.bundle(patch=patch)
    rootfs = bundle / "rootfs"
    os.symlink("../../../../../../../.." + str(outside), rootfs / "evil")
    os.symlink(str(outside), rootfs / "abs")
    for p in (rootfs / "evil", rootfs / "abs"):
        os.lchown(p, rt.uid, rt.gid)
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(outside)) == ["marker"], "a mount or file escaped the rootfs"
    assert not any(str(outside) in line for line in open("/proc/self/mountinfo"))


def test_proc_and_dev_inside(rt):
    r = rt.hako("run", "--bundle", rt.bundle(["sh", "-c", "ls /dev; cat /proc/1/comm; "
                                                  "echo x > /dev/null && echo null-ok"]),
                rt.new_id())
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
                "fd", "stdin", "stdout", "stderr"):
        assert dev in out, f"/dev/{dev} missing: {out}"
    assert "null-ok" in out


def test_no_pivot(rt):
    r = rt.hako("run", "--no-pivot", "--bundle", rt.bundle(["sh", "-c", "ls /; echo $$"]),
                rt.new_id())
    assert r.returncode == 0, r.stderr
    assert "bin" in r.stdout.split() and r.stdout.split()[-1] == "1"


def test_state_json_matches_schema(rt):
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4
    schema_dir = support.REPO.parent / "shared" / "oci-runtime-spec-v1.3.0"
    if not (schema_dir / "state-schema.json").exists():
        pytest.skip(f"OCI schemas not found at {schema_dir}")
    registry = Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text()), default_specification=DRAFT4))
        for p in schema_dir.glob("*.json"))
    validator = jsonschema.Draft4Validator(
        json.loads((schema_dir / "state-schema.json").read_text()), registry=registry)
    cid = rt.new_id()
    assert rt.hako("create", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    validator.validate(state_of(rt, cid))
    assert rt.hako("start", cid).returncode == 0
    wait_status(rt, cid, "stopped")
    validator.validate(state_of(rt, cid))


def test_waiting_init_is_not_reachable_from_the_container(rt):
    """CVE-2019-5736: until it execs, the init is hako's interpreter inside the
    container's pid namespace; the container must not be able to open it.
    (Rootless, exec into a created container is refused for the same reason.)"""
    cid = rt.new_id()
    if rt.rootless:
        assert rt.hako("create", "--bundle", rt.bundle(["sleep", "100"]), cid).returncode == 0
        r = rt.hako("exec", cid, "true")
        assert r.returncode != 0 and "start it first" in r.stderr
        assert rt.hako("kill", "--all", cid, "KILL").returncode == 0
        support.wait_until(lambda: state_of(rt, cid)["status"] == "stopped")
        return
    assert rt.hako("create", "--bundle", rt.bundle(["sleep", "100"]), cid).returncode == 0
    r = rt.hako("exec", cid, "sh", "-c",
                "cat /proc/1/environ >/dev/null 2>&1 && echo readable || echo denied; "
                "readlink /proc/1/exe || echo no-exe")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["denied", "no-exe"]
