"""Terminals, exec and ps: what an engine needs to attach and look inside."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import termios
import time

import pytest

import support


def running(rt, args=("sleep", "1000"), runtime="hako", **kw) -> str:
    cid = rt.new_id()
    call = rt.hako if runtime == "hako" else rt.runc
    r = call("run", "-d", "--bundle", rt.bundle(list(args), **kw), cid)
    assert r.returncode == 0, r.stderr
    return cid


class ConsoleReceiver:
    """What conmon / containerd's shim do with --console-socket."""

    def __init__(self, rt) -> None:
        self.path = rt.dir / "console.sock"
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(self.path))
        os.chmod(self.path, 0o777)
        self.srv.listen(1)
        self.srv.settimeout(20)

    def receive(self) -> tuple[str, int]:
        conn, _ = self.srv.accept()
        with conn:
            conn.settimeout(20)
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        assert len(fds) == 1
        return msg.decode(), fds[0]

    def close(self) -> None:
        self.srv.close()


def read_until(fd: int, needle: bytes, timeout: float = 15) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {needle!r} in {out!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


# ---------------------------------------------------------------- terminals
def test_console_socket_gets_the_master(rt):
    recv = ConsoleReceiver(rt)
    cid = rt.new_id()
    bundle = rt.bundle(["sh"], terminal=True,
                       patch={"process": {"consoleSize": {"height": 30, "width": 100}}})
    p = rt.popen(rt.hako_argv("create", "--bundle", bundle, "--console-socket", recv.path, cid))
    name, master = recv.receive()
    try:
        assert p.wait(timeout=20) == 0
        assert name.startswith("/dev/pts/")
        assert rt.hako("start", cid).returncode == 0
        os.write(master, b"tty; stty size; echo $((40+2)); id -u\n")
        out = read_until(master, b"42")
        assert b"/dev/pts/0" in out and b"30 100" in out
        os.write(master, b"exit 4\n")
        support.wait_until(lambda: json.loads(rt.hako("state", cid).stdout)["status"] == "stopped")
    finally:
        os.close(master)
        recv.close()


def _drive_under_pty(argv: list[str], script: bytes, expect: bytes, env: dict):
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    try:
        before = termios.tcgetattr(fd)
        time.sleep(0.3)
        os.write(fd, script)
        out = read_until(fd, expect)
        deadline = time.monotonic() + 20
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"hako did not exit; output {out!r}")
            try:
                r, _, _ = select.select([fd], [], [], 0.05)
                if r:
                    out += os.read(fd, 4096)
            except OSError:
                pass
        after = termios.tcgetattr(fd)
        return out, os.waitstatus_to_exitcode(status), before, after
    finally:
        os.close(fd)


def test_foreground_run_with_a_terminal(rt):
    bundle = rt.bundle(["sh"], terminal=True)
    argv = rt.user.prefix() + rt.hako_argv("run", "--bundle", bundle, rt.new_id())
    out, code, before, after = _drive_under_pty(
        [str(a) for a in argv], b"tty; echo $((6*7)); exit 5\n", b"42", rt._env(None))
    assert code == 5
    assert b"/dev/pts/0" in out
    assert before == after, "hako left the terminal in another mode"


def test_terminal_without_console_socket_on_create(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["sh"], terminal=True), cid)
    assert r.returncode != 0 and "--console-socket" in r.stderr
    assert not (rt.state_dir / cid).exists()


@pytest.mark.parametrize("what", ["missing", "not-a-socket"])
def test_bad_console_socket(rt, what):
    cid = rt.new_id()
    path = rt.dir / "nosock"
    if what == "not-a-socket":
        path.write_text("")
    r = rt.hako("create", "--bundle", rt.bundle(["sh"], terminal=True),
                "--console-socket", path, cid)
    assert r.returncode != 0 and "--console-socket" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()


# --------------------------------------------------------------------- exec
EXEC_CASES = {
    "plain": ([], ["sh", "-c", "echo hi; hostname; echo $$ > /dev/null"]),
    "env": (["-e", "FOO=bar", "-e", "PATH=/bin"], ["sh", "-c", "echo $FOO:$PATH"]),
    "cwd": (["--cwd", "/tmp"], ["pwd"]),
    "caps": (["--cap", "CAP_SYS_ADMIN"], ["grep", "-E", "^Cap(Eff|Bnd|Prm)", "/proc/self/status"]),
    "no-new-privs": (["--no-new-privs"], ["grep", "NoNewPrivs", "/proc/self/status"]),
    "status": ([], ["sh", "-c", "exit 7"]),
}


@pytest.mark.parametrize("case", sorted(EXEC_CASES))
def test_exec_matches_runc(rt, case):
    flags, cmd = EXEC_CASES[case]
    ours, theirs = running(rt, hostname="exechost"), running(rt, runtime="runc", hostname="exechost")
    a = rt.hako("exec", *flags, ours, *cmd)
    b = rt.runc("exec", *flags, theirs, *cmd)
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout), (a.stderr, b.stderr)


def test_exec_user(rt):
    cid = running(rt)
    uid = "0:0" if rt.rootless else "1000:1001"
    r = rt.hako("exec", "-u", uid, cid, "sh", "-c", "id -u; id -g")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == uid.split(":")


def test_exec_joins_every_namespace(rt):
    cid = running(rt)
    pid = json.loads(rt.hako("state", cid).stdout)["pid"]
    r = rt.hako("exec", cid, "sh", "-c", "for n in ipc mnt net pid uts user cgroup; do "
                "readlink /proc/self/ns/$n; done")
    assert r.returncode == 0, r.stderr
    init = [os.readlink(f"/proc/{pid}/ns/{n}")
            for n in ("ipc", "mnt", "net", "pid", "uts", "user", "cgroup")]
    assert r.stdout.split() == init


def test_exec_detach_and_pid_file(rt):
    cid = running(rt)
    pid_file = rt.dir / "exec.pid"
    r = rt.hako("exec", "-d", "--pid-file", pid_file, cid, "sleep", "100")
    assert r.returncode == 0, r.stderr
    pid = int(pid_file.read_text())
    init = json.loads(rt.hako("state", cid).stdout)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    assert pid in json.loads(rt.hako("ps", "--format", "json", cid).stdout)


def test_exec_process_file(rt):
    cid = running(rt)
    proc = {"args": ["sh", "-c", "echo $A; pwd"], "env": ["A=from-file", "PATH=/bin"],
            "cwd": "/etc", "user": {"uid": 0, "gid": 0}}
    f = rt.dir / "process.json"
    f.write_text(json.dumps(proc))
    r = rt.hako("exec", "--process", f, cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from-file", "/etc"]
    f.write_text(json.dumps({**proc, "cwd": "relative"}))
    r = rt.hako("exec", "--process", f, cid)
    assert r.returncode != 0 and "process.cwd" in r.stderr


def test_exec_tty_foreground(rt):
    cid = running(rt)
    argv = rt.user.prefix() + rt.hako_argv("exec", "-t", cid, "sh")
    out, code, before, after = _drive_under_pty(
        [str(a) for a in argv], b"tty; echo $((5*5)); exit 3\n", b"25", rt._env(None))
    assert code == 3 and b"/dev/pts/" in out
    assert before == after


def test_exec_tty_detached_console_socket(rt):
    cid = running(rt)
    recv = ConsoleReceiver(rt)
    p = rt.popen(rt.hako_argv("exec", "-t", "-d", "--console-socket", recv.path, cid, "sh"))
    name, master = recv.receive()
    try:
        assert p.wait(timeout=20) == 0
        os.write(master, b"echo $((3*3))x\n")
        assert b"9x" in read_until(master, b"9x")
    finally:
        os.close(master)
        recv.close()


def test_exec_errors(rt):
    cid = running(rt)
    r = rt.hako("exec", cid, "no-such-cmd")
    assert r.returncode != 0 and "executable file not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = rt.hako("exec", "-t", "-d", cid, "sh")
    assert r.returncode != 0 and "--console-socket" in r.stderr
    assert rt.hako("kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: json.loads(rt.hako("state", cid).stdout)["status"] == "stopped")
    r = rt.hako("exec", cid, "true")
    assert r.returncode != 0 and "stopped" in r.stderr
    r = rt.hako("exec", "nonexistent-container", "true")
    assert r.returncode != 0 and "does not exist" in r.stderr


# ----------------------------------------------------------------------- ps
def test_ps_json_and_table_like_runc(rt):
    """runc's ps reads the cgroup, which rootless runc has none of on cgroup v1
    (it fails there); hako falls back to the pid namespace, so rootless is
    checked against the root-mode shape only."""
    ours = running(rt, ["sh", "-c", "sleep 1000 & sleep 1000"])

    def pids(call, cid):
        return support.wait_until(lambda: (p := json.loads(call("ps", "--format", "json", cid).stdout))
                                  and len(p) == 2 and p, what="two processes")
    a = pids(rt.hako, ours)
    init = json.loads(rt.hako("state", ours).stdout)["pid"]
    assert init in a
    ta = rt.hako("ps", ours).stdout.splitlines()
    assert len(ta) == 3 and ta[0].split()[:3] == ["UID", "PID", "PPID"]
    assert rt.hako("ps", ours, "--", "-o", "pid,comm").stdout.splitlines()[0].split() == ["PID", "COMMAND"]
    if rt.mode == "root":
        theirs = running(rt, ["sh", "-c", "sleep 1000 & sleep 1000"], runtime="runc")
        b = pids(rt.runc, theirs)
        assert len(b) == 2
        assert ta[0] == rt.runc("ps", theirs).stdout.splitlines()[0]


def test_list_header_like_runc(rt):
    running(rt)
    running(rt, runtime="runc")
    assert rt.hako("list").stdout.splitlines()[0].split() == \
        rt.runc("list").stdout.splitlines()[0].split()
