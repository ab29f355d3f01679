"""The engine matrix: every step through podman, docker and containerd, with
hako as their runtime (and runc side by side). Steps run in this file's order
per engine (the ``engine`` fixture is session-scoped and parametrized, so pytest
runs every step of one cell before starting the next); a step that needs the
detached container makes it when an earlier step did not leave it running.

A step an engine does not support in a mode skips with the engine's own message
("unsupported: ..."); a step the engine has no command for skips with "n/a: ...".
"""

from __future__ import annotations

import os

import pytest

import enginekit
from enginekit import wait_for

pytestmark = pytest.mark.engines

BOX = enginekit.Engine.BOX
TYPE = "tty; echo hello-$((6*7)); exit {code}\n"


def box(engine) -> str:
    """The detached container, running (made again if an earlier step failed)."""
    st = engine.status(BOX)
    if st == "running":
        return BOX
    if st is not None:
        engine.rm_force(BOX)
    engine.run_detached(BOX, engine.BOX_CMD).ok("run -d")
    wait_for(lambda: engine.status(BOX) == "running", 15, f"{BOX} to run")
    return BOX


def unsupported_here(engine, r) -> None:
    """Rootless on a cgroup v1/hybrid host: no cgroup, so no freezer and no
    limits. Skip with the engine's own words when that is why it failed."""
    if r.rc != 0 and engine.rootless and enginekit.cgroup_v1_or_hybrid():
        assert engine.status(BOX) == "running", "the container must survive the refusal"
        pytest.skip(f"unsupported: {r.first_error()}")


# ------------------------------------------------------------------------- steps

def test_run_rm_echo(engine):
    r = engine.run_rm(["echo", "hello from busybox"]).ok("run --rm echo")
    assert "hello from busybox" in r.out, r.describe()


def test_exit_code_propagated(engine):
    r = engine.run_rm(["sh", "-c", "exit 3"])
    assert r.rc == 3, f"exit code {r.rc}, not 3: {r.describe()}"


def test_missing_executable(engine):
    """The runtime's --log JSON error, parsed by the engine, in its usual words."""
    r = engine.run_rm(["nosuchcmd"])
    assert r.rc != 0, r.describe()
    assert "executable file not found" in r.err, f"not the engine's usual message: {r.first_error()}"
    if engine.cell.startswith(("podman", "docker")):
        assert r.rc == 127, f"exit code {r.rc}, not 127: {r.describe()}"


def test_run_detached(engine):
    if engine.status(BOX) is not None:
        engine.rm_force(BOX)
    engine.run_detached(BOX, engine.BOX_CMD).ok("run -d")
    wait_for(lambda: engine.status(BOX) == "running", 15, f"{BOX} to run")


def test_exec(engine):
    """Five times: a quick exec races the engine learning its pid (--pid-file)."""
    name = box(engine)
    for _ in range(5):
        r = engine.exec(name, ["sh", "-c", "echo exec-ok; exit 4"])
        assert r.rc == 4 and "exec-ok" in r.out, f"exec: {r.describe()}"


def test_exec_tty(engine):
    r = engine.exec_tty(box(engine), TYPE.format(code=6))
    assert r.rc == 6 and "/dev/pts/" in r.out and "hello-42" in r.out, f"exec -it: {r.describe()}"


def test_top(engine):
    name = box(engine)
    r = engine.top(name).ok("top/ps")
    if isinstance(engine, enginekit.Containerd):
        assert str(engine.pid(name)) in r.out, r.describe()
    else:
        assert "sleep" in r.out or "sh -c" in r.out, r.describe()


def test_kill_hup(engine):
    name = box(engine)
    engine.kill(name, "HUP").ok("kill -s HUP")
    wait_for(lambda: "hup" in engine.exec(name, ["cat", "/tmp/hup"]).out, 10,
             "the container's trap to record SIGHUP")
    assert engine.status(name) == "running"


def test_pause_unpause(engine):
    name = box(engine)
    r = engine.pause(name)
    unsupported_here(engine, r)
    r.ok("pause")
    assert engine.status(name) == "paused"
    engine.unpause(name).ok("unpause")
    assert engine.status(name) == "running"
    assert engine.exec(name, ["true"]).rc == 0


def test_update_memory(engine):
    if isinstance(engine, enginekit.Containerd):
        pytest.skip("n/a: ctr 1.6 has no update command (docker's update goes through "
                    "the same shim: see docker-*)")
    name = box(engine)
    r = engine.update_memory(name, "64m")
    unsupported_here(engine, r)
    r.ok("update --memory")
    r = engine.exec(name, ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                       "/sys/fs/cgroup/memory.max 2>/dev/null"])
    assert "67108864" in r.out, f"memory limit not applied: {r.describe()}"


def test_stop_term_then_kill(engine):
    """PID 1 (a shell without a TERM trap) ignores SIGTERM: the engine kills it
    after the 1 s timeout."""
    name = box(engine)
    r = engine.stop_box(name, 1).ok("stop")
    assert r.elapsed >= 0.9, f"stopped after {r.elapsed:.2f}s: TERM was not ignored?"
    assert engine.status(name) in ("exited", "stopped", "no task"), engine.status(name)
    if isinstance(engine, enginekit.Containerd):
        assert "137" in r.text, r.describe()
    else:
        assert engine.exit_code(name) == 137


def test_start_again(engine):
    if engine.status(BOX) == "running":
        engine.stop_box(BOX, 0)
    if engine.status(BOX) is None:
        box(engine)
        engine.stop_box(BOX, 0).ok("stop")
    engine.start_box(BOX).ok("start")
    wait_for(lambda: engine.status(BOX) == "running", 15, f"{BOX} to run again")
    assert engine.exec(BOX, ["true"]).rc == 0


def test_restart(engine):
    if isinstance(engine, enginekit.Containerd):
        pytest.skip("n/a: ctr has no restart command (stop + start: the steps above)")
    name = box(engine)
    before = engine.pid(name)
    engine.restart(name).ok("restart")
    wait_for(lambda: engine.status(name) == "running", 15, f"{name} to run after restart")
    assert engine.pid(name) not in (0, before)


def test_rm_force(engine):
    name = box(engine)
    engine.rm_force(name).ok("rm -f")
    assert not engine.exists(name)


def test_run_tty(engine):
    r = engine.run_tty(TYPE.format(code=5))
    assert r.rc == 5 and "/dev/pts/" in r.out and "hello-42" in r.out, f"run -it: {r.describe()}"


def test_run_init(engine):
    r = engine.run_init(["ps"]).ok("run --init")
    pid1 = [ln for ln in r.out.splitlines() if ln.split()[:1] == ["1"]]
    assert pid1 and "init" in pid1[0], f"PID 1 is not the init: {r.describe()}"


def test_preserve_fds(engine):
    if not isinstance(engine, enginekit.Podman):
        pytest.skip("n/a: only podman has --preserve-fds")
    r = engine.run_preserve_fds(["readlink", "/proc/self/fd/3"]).ok("run --preserve-fds 1")
    assert r.out.strip() == "/etc/hostname", r.describe()


def test_idmapped_volume(engine):
    """``podman run --uidmap ... -v SRC:DST:idmap``: podman passes the idmap
    option alone, so the volume takes the container's mapping and a file the
    host's root owns is the container root's."""
    if not isinstance(engine, enginekit.Podman) or engine.rootless:
        pytest.skip("n/a: podman as root only (idmapped mounts need root)")
    if engine.runtime != "hako":
        pytest.skip("n/a: runc 1.1 ignores the idmap option (the file shows as 65534)")
    src = engine.private("idmap-volume")
    (src / "owned-by-root").write_text("x\n")
    os.chown(src / "owned-by-root", 0, 0)
    r = engine.run_rm(["stat", "-c", "%u %g", "/vol/owned-by-root"],
                      "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536",
                      "-v", f"{src}:/vol:idmap").ok("run -v SRC:/vol:idmap")
    assert r.out.split()[-2:] == ["0", "0"], r.describe()
