"""process.fork_child with a cgroup: the child joins it as it is born.

The kernel's answer is what matters here, so most of this forks for real:
without root, on plain directories standing in for cgroupfs (clone3 refuses
a directory that is not a cgroup, so the child takes the fork-and-write
path); as root, on throwaway cgroups of this host, where clone3
CLONE_INTO_CGROUP puts the child in the cgroup2 one and the child writes
itself into the v1 ones. Every child is waited for with a deadline.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
import uuid
from pathlib import Path

import pytest

from runtime import process
from runtime import syscalls as S
from runtime.cgroups.quick import Joiner
from runtime.channel import Channel

UNIFIED_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
V1_PIDS = "/sys/fs/cgroup/pids"


def _run(body, cgroup, timeout: float = 20.0) -> tuple[list[dict], int]:
    """fork_child(body, cgroup=...); every message the child sent, and its
    exit status. The child is killed if it outlives ``timeout``."""
    parent, child = Channel.pair()
    pid = process.fork_child(child, body, child, cgroup=cgroup)
    child.close()
    msgs: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([parent.rfd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the child did not finish in time")
            msg = parent.recv()
            if msg is None:
                break
            msgs.append(msg)
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    return msgs, os.waitstatus_to_exitcode(status)


def _report(chan: Channel) -> None:
    """What the child sees of itself."""
    fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    targets = {}
    for n in fds:
        try:
            targets[str(n)] = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            pass
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    chan.send(cgroup=cgroup, fds=targets, pid=os.getpid())


def _fake_cgroupfs(tmp_path: Path) -> Joiner:
    """Directories with the files a cgroupfs directory has (no O_CREAT)."""
    dirs = []
    for name in ("cpu", "pids", "unified"):
        d = tmp_path / name / "ctr"
        d.mkdir(parents=True)
        (d / "tasks").write_text("")
        (d / "cgroup.procs").write_text("")
        dirs.append(str(d))
    return Joiner(dirs[:2], dirs[2])


def test_without_clone3_the_child_writes_itself_in(tmp_path, monkeypatch):
    """A plain directory is no cgroup: clone3 refuses it, fork(2) follows, and
    the child writes "0" (itself) to v1 tasks and to cgroup.procs of cgroup2."""
    refused = []
    real = S.SYS.clone_into_cgroup

    def clone(fd):
        try:
            return real(fd)
        except OSError as e:
            refused.append(e.errno)
            raise
    monkeypatch.setattr(S.SYS, "clone_into_cgroup", clone)
    j = _fake_cgroupfs(tmp_path)
    msgs, code = _run(_report, j)
    assert code == 0, msgs
    assert len(refused) == 1 and refused[0] != 0
    for d in j.v1:
        assert Path(d, "tasks").read_text() == "0"
        assert Path(d, "cgroup.procs").read_text() == ""  # the whole-process file is not used
    assert Path(j.unified, "cgroup.procs").read_text() == "0"
    fds = msgs[0]["fds"]
    assert not any(str(tmp_path) in t for t in fds.values()), fds  # no directory leaked


def test_a_cgroup_the_child_cannot_join_is_its_error(tmp_path):
    j = _fake_cgroupfs(tmp_path)
    os.unlink(os.path.join(j.v1[1], "tasks"))
    msgs, code = _run(_report, j)
    assert code == 1
    assert msgs and "error" in msgs[0], msgs
    assert "tasks" in msgs[0]["error"] and "no such file" in msgs[0]["error"]


def test_no_cgroup_is_a_plain_fork(tmp_path):
    msgs, code = _run(_report, None)
    assert code == 0 and "cgroup" in msgs[0]


def test_the_fake_syscall_layer_never_forks():
    from fakes import FakeSyscalls
    sc = FakeSyscalls()
    with pytest.raises(OSError) as e:
        sc.clone_into_cgroup(7)
    assert e.value.errno == errno.ENOSYS
    assert [c.args for c in sc.named("clone_into_cgroup")] == [(7,)]


# -- as root, on this host's cgroups ---------------------------------------


def _unified_mount() -> str | None:
    for m in UNIFIED_MOUNTS:
        if os.path.exists(os.path.join(m, "cgroup.procs")) and \
                os.path.exists(os.path.join(m, "cgroup.controllers")):
            return m
    return None


@pytest.fixture
def host_cgroup():
    """(v1 pids dir or None, cgroup2 dir): fresh, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes cgroups on the host")
    mount = _unified_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted here")
    name = f"hako-test-born-{uuid.uuid4().hex[:8]}"
    made = [os.path.join(mount, name)]
    if os.path.exists(os.path.join(V1_PIDS, "tasks")):
        made.append(os.path.join(V1_PIDS, name))
    for d in made:
        os.mkdir(d)
    try:
        yield (made[1] if len(made) > 1 else None), made[0]
    finally:
        for d in made:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the child's exit is still being accounted


def _relative(cgroup_dir: str, mount: str) -> str:
    return "/" + os.path.relpath(cgroup_dir, mount)


def test_born_inside_the_cgroup2_dir_and_in_v1_by_itself(host_cgroup, monkeypatch):
    v1, unified = host_cgroup
    calls = []
    real = S.SYS.clone_into_cgroup
    monkeypatch.setattr(S.SYS, "clone_into_cgroup",
                        lambda fd: calls.append(fd) or real(fd))
    j = Joiner([v1] if v1 else [], unified)
    msgs, code = _run(_report, j)
    assert code == 0, msgs
    assert len(calls) == 1  # clone3 was the way, not fork-and-write
    lines = msgs[0]["cgroup"].splitlines()
    assert f"0::{_relative(unified, _unified_mount())}" in lines
    if v1:
        assert any(line.split(":")[1] == "pids" and line.endswith(_relative(v1, V1_PIDS))
                   for line in lines), lines
    fds = msgs[0]["fds"]
    assert not any("cgroup" in t for t in fds.values()), fds  # the O_PATH fd is gone


def test_a_cloned_child_is_a_sound_process(host_cgroup):
    """What os.fork would have set up, clone3 did too: glibc's cached tid,
    CPython's thread state, so the child can fork and start threads."""
    _, unified = host_cgroup

    def body(chan: Channel) -> None:
        import threading
        from runtime import ctlite
        slot = ctlite.c_int.from_address(S._FORKER.tid_slot()).value
        got = []
        t = threading.Thread(target=lambda: got.append(threading.get_native_id()))
        t.start()
        t.join(10)
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, st = os.waitpid(pid, 0)
        chan.send(slot=slot, pid=os.getpid(), thread=bool(got) and got[0] != os.getpid(),
                  grandchild=os.waitstatus_to_exitcode(st))

    msgs, code = _run(body, Joiner([], unified))
    assert code == 0, msgs
    m = msgs[0]
    assert m["slot"] == m["pid"]
    assert m["thread"] is True and m["grandchild"] == 7


def test_a_v1_hierarchy_it_cannot_join_after_a_clone_is_its_error(host_cgroup):
    _, unified = host_cgroup
    msgs, code = _run(_report, Joiner(["/sys/fs/cgroup/pids/hako-test-no-such-dir"], unified))
    assert code == 1
    assert "hako-test-no-such-dir/tasks" in msgs[0]["error"]
