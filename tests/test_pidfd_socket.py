"""--pidfd-socket on create, run and exec: what an engine receives, root and rootless.

runc 1.2's protocol (runtime/pidfd_socket.py): one connection, one message,
payload "standard" (the init) or "setns" (an exec'd process), one pidfd in
SCM_RIGHTS. The receiver here plays the engine (runc's contrib pidfd-kill,
containerd's go-runc): it listens, accepts once, checks the fd is a pidfd of
the right process and kills the container through it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess

import pytest

import support

T = 20  # seconds: every wait of these tests ends


class PidfdReceiver:
    """A listening AF_UNIX stream socket the runtime's user may connect to."""

    def __init__(self, rt, listen: bool = True) -> None:
        self.path = rt.dir / "pidfd.sock"
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(self.path))
        os.chmod(self.path, 0o777)
        if listen:
            self.srv.listen(1)
        self.srv.settimeout(T)

    def receive(self) -> tuple[str, int]:
        """The one message: its payload and the fd; then EOF (hako closed its
        end, and no container process kept a copy)."""
        conn, _ = self.srv.accept()
        with conn:
            conn.settimeout(T)
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
            assert len(fds) == 1, f"expected one fd, got {fds}"
            assert conn.recv(1) == b"", "the connection stayed open after the pidfd"
        return msg.decode(), fds[0]

    def close(self) -> None:
        self.srv.close()


def pidfd_target(fd: int) -> int:
    """The pid a pidfd refers to; fails unless ``fd`` is a pidfd."""
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise AssertionError(f"fd {fd} has no Pid: in its fdinfo")


def exited(fd: int) -> bool:
    """A pidfd turns readable when its process has exited."""
    return bool(select.select([fd], [], [], T)[0])


def init_pid(rt, cid: str) -> int:
    r = rt.hako("state", cid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["pid"]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--pidfd-socket" in lines[0], r.stderr
    return lines[0]


# ------------------------------------------------------------- create / run
@pytest.mark.parametrize("verb", ["create", "run-d", "run"])
def test_init_pidfd(rt, verb):
    recv = PidfdReceiver(rt)
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"])
    fd = -1
    try:
        if verb == "run":
            # in the foreground: the pidfd comes before run waits for the init
            p = rt.popen(rt.hako_argv("run", "--bundle", bundle, "--pidfd-socket", recv.path, cid))
            name, fd = recv.receive()
        else:
            args = ["create"] if verb == "create" else ["run", "-d"]
            r = rt.hako(*args, "--bundle", bundle, "--pidfd-socket", recv.path, cid, timeout=T)
            assert r.returncode == 0, r.stderr
            name, fd = recv.receive()  # sent before create/run returned
        assert name == "standard"
        assert pidfd_target(fd) == init_pid(rt, cid)
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        assert exited(fd)
        if verb == "run":
            assert p.wait(timeout=T) == 128 + signal.SIGKILL
            assert not (rt.state_dir / cid).exists()
        else:
            support.wait_until(lambda: support.stopped(rt, cid), what=f"{cid} to stop")
            assert rt.hako("delete", cid, timeout=T).returncode == 0
    finally:
        if fd >= 0:
            os.close(fd)
        recv.close()


# --------------------------------------------------------------------- exec
def _running(rt) -> str:
    cid = rt.new_id()
    r = rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid, timeout=T)
    assert r.returncode == 0, r.stderr
    return cid


def _container_pids(rt, cid: str) -> list[int]:
    r = rt.hako("ps", "--format", "json", cid, timeout=T)
    assert r.returncode == 0, r.stderr
    return sorted(json.loads(r.stdout))


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "foreground"])
def test_exec_pidfd(rt, detach):
    cid = _running(rt)
    init = init_pid(rt, cid)
    recv = PidfdReceiver(rt)
    pid_file = rt.dir / "exec.pid"
    argv = rt.hako_argv("exec", *(["-d"] if detach else []), "--pid-file", pid_file,
                        "--pidfd-socket", recv.path, cid, "sleep", "1000")
    fd = -1
    try:
        p = rt.popen(argv)
        name, fd = recv.receive()
        if detach:
            assert p.wait(timeout=T) == 0
        assert name == "setns"
        pid = pidfd_target(fd)
        assert pid == int(pid_file.read_text()) and pid != init
        assert pid in _container_pids(rt, cid)
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        assert exited(fd)
        if not detach:
            assert p.wait(timeout=T) == 128 + signal.SIGKILL
        # the exec'd process alone: the container goes on
        assert json.loads(rt.hako("state", cid).stdout)["status"] == "running"
        assert _container_pids(rt, cid) == [init]
    finally:
        if fd >= 0:
            os.close(fd)
        recv.close()
    assert rt.hako("delete", "--force", cid, timeout=T).returncode == 0


# ------------------------------------------------------------ failure paths
BAD = ["missing", "not-a-socket", "nobody-listening"]


def _bad_path(rt, what: str):
    """(path, what to close afterwards)"""
    if what == "missing":
        return rt.dir / "no-such.sock", None
    if what == "not-a-socket":
        path = rt.dir / "plain-file"
        path.write_text("")
        return path, None
    recv = PidfdReceiver(rt, listen=False)  # bound, never listening: refused
    return recv.path, recv


def _expected(what: str) -> str:
    return {"missing": "No such file or directory", "not-a-socket": "not a unix socket",
            "nobody-listening": "cannot connect: Connection refused"}[what]


@pytest.mark.parametrize("verb", ["create", "run-d", "run"])
@pytest.mark.parametrize("what", BAD)
def test_bad_pidfd_socket_on_create(rt, verb, what):
    path, recv = _bad_path(rt, what)
    cid = rt.new_id()
    args = {"create": ["create"], "run-d": ["run", "-d"], "run": ["run"]}[verb]
    try:
        r = rt.hako(*args, "--bundle", rt.bundle(["sleep", "1000"]), "--pidfd-socket", path,
                    cid, timeout=T)
    finally:
        if recv is not None:
            recv.close()
    assert _expected(what) in one_line_error(r)
    # nothing made: no state dir (the fixture's teardown also finds any
    # process or cgroup left over, and fails the test)
    assert not (rt.state_dir / cid).exists()
    assert rt.hako("state", cid).returncode != 0


@pytest.mark.parametrize("what", BAD)
def test_bad_pidfd_socket_on_exec(rt, what):
    cid = _running(rt)
    init = init_pid(rt, cid)
    path, recv = _bad_path(rt, what)
    try:
        r = rt.hako("exec", "-d", "--pidfd-socket", path, cid, "sleep", "1000", timeout=T)
    finally:
        if recv is not None:
            recv.close()
    assert _expected(what) in one_line_error(r)
    assert _container_pids(rt, cid) == [init]  # no process started
    assert rt.hako("delete", "--force", cid, timeout=T).returncode == 0


def test_receiver_gone_before_the_pidfd(rt):
    """The engine went away between hako's connect and its send: create fails
    with one line and takes back everything. A createRuntime hook holds hako
    (it runs after the connect, before the send) until the listener is closed."""
    recv = PidfdReceiver(rt)
    gate = rt.dir / "listener-closed"
    hook = {"path": "/bin/sh",
            "args": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.01; done"], "timeout": T}
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch={"hooks": {"createRuntime": [hook]}})
    p = rt.popen(rt.hako_argv("create", "--bundle", bundle, "--pidfd-socket", recv.path, cid),
                 stderr=subprocess.PIPE, text=True)
    try:
        # hako's connection is pending in the backlog: closing the listener resets it
        assert select.select([recv.srv], [], [], T)[0], "hako did not connect"
    finally:
        recv.close()
        gate.write_text("")
    _, err = p.communicate(timeout=T)
    assert p.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--pidfd-socket: sending the pidfd" in lines[0], err
    assert not (rt.state_dir / cid).exists()


# ------------------------------------------------------------- differential
def test_differential_runc(rt):
    """Same payload as runc for the same container, when runc has the flag.
    Debian 12's runc (1.1.x) does not: --pidfd-socket came with runc 1.2, so
    on such a host this is skipped, and only the protocol read from runc's
    source (init_linux.go setupPidfd, utils SendRawFd) is checked above."""
    if not os.access(rt.runc_path, os.X_OK):
        pytest.skip(f"no runc at {rt.runc_path}")
    h = rt.run([rt.runc_path, "create", "--help"], timeout=T)
    if "--pidfd-socket" not in h.stdout + h.stderr:
        pytest.skip(f"{rt.runc_path} has no --pidfd-socket (runc < 1.2): "
                    "no differential check possible here")
    got = {}
    for runtime in ("hako", "runc"):
        recv = PidfdReceiver(rt)
        cid = rt.new_id()
        call = rt.hako if runtime == "hako" else rt.runc
        try:
            r = call("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), "--pidfd-socket",
                     recv.path, cid, timeout=T)
            assert r.returncode == 0, r.stderr
            name, fd = recv.receive()
        finally:
            recv.close()
            recv.path.unlink()
        try:
            pid = json.loads(call("state", cid).stdout)["pid"]
            got[runtime] = (name, pidfd_target(fd) == pid)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            assert exited(fd)
        finally:
            os.close(fd)
        support.wait_until(lambda: support.stopped(rt, cid) if runtime == "hako"
                           else json.loads(call("state", cid).stdout)["status"] == "stopped")
        assert call("delete", cid, timeout=T).returncode == 0
    assert got["hako"] == got["runc"] == ("standard", True)


# -------------------------------------------------------------- cost of it
def test_default_paths_import_nothing_new(rt):
    """Without the option, create and exec import neither the module nor socket."""
    cid = rt.new_id()
    seen = support.imported_by(rt, "create", "--bundle", rt.bundle(["sleep", "1000"]), cid)
    assert rt.hako("start", cid, timeout=T).returncode == 0
    seen |= support.imported_by(rt, "exec", "-d", cid, "true")
    assert not seen & {"runtime.pidfd_socket", "socket", "_socket"}
    assert rt.hako("delete", "--force", cid, timeout=T).returncode == 0
