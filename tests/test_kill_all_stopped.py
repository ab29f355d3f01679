"""`kill --all` on a container whose init has exited (issue 13, part 2).

containerd's runc shim calls ``kill --all ID 9`` after the init of a container
that shares a pid namespace (a pod's shared namespace, hostPID) has exited, to
kill what it left behind; runc signals what remains in the cgroup and exits 0.
Without a cgroup (rootless on this cgroup v1/hybrid host) hako finds the
leftovers through the container's root mount (runtime/procscan.py); runc 1.1.5
exits 0 there too but signals nothing (its kill --all returns early when the
container is stopped and it has no cgroup), so its orphan lives on.
Plain ``kill`` on a stopped container stays an error, as in runc.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

import support


def unique_seconds() -> str:
    """A sleep argument no other process on the host has."""
    return str(100000 + secrets.randbelow(800000))


def sleepers(secs: str) -> list[int]:
    """Live (non-zombie) processes running `sleep <secs>`."""
    want = f"sleep\0{secs}\0".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() != want:
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
            if data[data.rindex(b")") + 2:].startswith((b"Z", b"X")):
                continue
        except OSError:
            continue
        out.append(int(name))
    return out


def status(rt, cid: str, runtime: str = "hako") -> str:
    r = getattr(rt, runtime)("state", cid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["status"]


def host_pid_namespace(rootless: bool):
    """A config patch: no pid namespace of the container's own (hostPID). A
    rootless container cannot mount a proc for the host's pid namespace: it
    gets the host's /proc bound instead, as rootless podman does."""
    def patch(cfg: dict) -> dict:
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != "pid"]
        if rootless:
            for m in cfg["mounts"]:
                if m["destination"] == "/proc":
                    m.update(type="bind", source="/proc",
                             options=["rbind", "nosuid", "noexec", "nodev"])
        return cfg
    return patch


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


@pytest.mark.parametrize("runtime", ["hako", "runc"])
def test_kill_all_kills_what_an_exited_init_left(rt, runtime):
    """hostPID: the init starts a background process and exits."""
    call = getattr(rt, runtime)
    secs = unique_seconds()
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", f"sleep {secs} & exit 0"],
                       patch=host_pid_namespace(rt.rootless))
    r = call("run", "-d", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    orphans = support.wait_until(lambda: sleepers(secs), what="the background sleep")
    support.wait_until(lambda: status(rt, cid, runtime) == "stopped", what="the init to exit")
    try:
        r = call("kill", cid, "9")
        assert r.returncode != 0 and "not running" in r.stderr, (r.returncode, r.stderr)
        assert sleepers(secs) == orphans
        r = call("kill", "--all", cid, "9")
        assert r.returncode == 0, r.stderr
        if runtime == "runc" and rt.rootless:
            return  # runc 1.1.5: no cgroup, nothing signalled (see the module docstring)
        support.wait_until(lambda: not sleepers(secs), what="the orphan to die")
        r = call("kill", "--all", cid, "9")  # nothing left: still fine
        assert r.returncode == 0, r.stderr
    finally:
        _kill_leftovers(sleepers(secs))


def test_kill_all_in_a_joined_pid_namespace(rt):
    """A pod: B joins A's pid namespace (rootless: and A's user namespace);
    B's init exits leaving a process in A's namespace; kill --all B kills it
    and leaves A alone."""
    a = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), a).returncode == 0
    a_pid = json.loads(rt.hako("state", a).stdout)["pid"]
    secs = unique_seconds()

    def join(cfg: dict) -> dict:
        linux = cfg["linux"]
        for ns in linux["namespaces"]:
            if ns["type"] == "pid" or (ns["type"] == "user" and rt.rootless):
                ns["path"] = f"/proc/{a_pid}/ns/{ns['type']}"
        if rt.rootless:  # a joined user namespace comes with its mappings
            linux.pop("uidMappings", None)
            linux.pop("gidMappings", None)
        return cfg

    b = rt.new_id()
    r = rt.hako("run", "-d", "--bundle",
                rt.bundle(["sh", "-c", f"sleep {secs} & exit 0"], patch=join), b)
    assert r.returncode == 0, r.stderr
    try:
        orphans = support.wait_until(lambda: sleepers(secs), what="B's background sleep")
        assert os.readlink(f"/proc/{orphans[0]}/ns/pid") == os.readlink(f"/proc/{a_pid}/ns/pid")
        support.wait_until(lambda: status(rt, b) == "stopped", what="B's init to exit")
        r = rt.hako("kill", "--all", b, "KILL")
        assert r.returncode == 0, r.stderr
        support.wait_until(lambda: not sleepers(secs), what="B's orphan to die")
        assert status(rt, a) == "running"
    finally:
        _kill_leftovers(sleepers(secs))


def test_kill_all_reaches_exec_processes_after_the_init(rt):
    """hostPID: an exec'd process (not in the init's session) outlives the init."""
    secs = unique_seconds()
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=host_pid_namespace(rt.rootless))
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    r = rt.hako("exec", "-d", cid, "sleep", secs)
    assert r.returncode == 0, r.stderr
    try:
        support.wait_until(lambda: sleepers(secs), what="the exec'd sleep")
        assert rt.hako("kill", cid, "KILL").returncode == 0  # the init only
        support.wait_until(lambda: status(rt, cid) == "stopped", what="the init to die")
        assert sleepers(secs), "the exec'd process died with the init"
        r = rt.hako("kill", "--all", cid, "KILL")
        assert r.returncode == 0, r.stderr
        support.wait_until(lambda: not sleepers(secs), what="the exec'd process to die")
    finally:
        _kill_leftovers(sleepers(secs))


def test_kill_all_on_a_stopped_container_with_nothing_left(rt):
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    support.wait_until(lambda: status(rt, cid) == "stopped", what="the init to exit")
    r = rt.hako("kill", "--all", cid, "TERM")
    assert r.returncode == 0, r.stderr
    r = rt.hako("kill", cid, "TERM")
    assert r.returncode != 0 and r.stderr.strip() == "hako: container not running"
    assert status(rt, cid) == "stopped"
