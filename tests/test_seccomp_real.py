"""Seccomp filters really loaded, each in a forked child (no root needed: the
child sets no_new_privs first, as a container with noNewPrivileges does)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import shutil
import signal
import socket
import struct

import pytest

import forked
import seccomp_profiles
from runtime import seccomp
from runtime import syscalls as S

ALLOW = "SCMP_ACT_ALLOW"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def nr(name: str) -> int:
    n = seccomp._lib().seccomp_syscall_resolve_name(name.encode())
    assert n >= 0, name
    return n


def raw(number: int, *args: int) -> int:
    """syscall(2): 0 or the errno (never raises: usable under any filter)."""
    r = _libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if r == -1 else 0


def confined(p: seccomp.Prepared, fn, **kw) -> forked.Result:
    def body(w: int) -> int:
        S.SYS.prctl(S.PR_SET_NO_NEW_PRIVS, 1)
        p.install()
        return fn(w)
    return forked.run(body, **kw)


def mkdir_errno(path: str):
    def fn(w: int) -> int:
        try:
            os.mkdir(path)
        except OSError as e:
            return e.errno
        return 0
    return fn


# -- actions ---------------------------------------------------------------------
@pytest.mark.parametrize("errno_ret,expected", [(None, errno.EPERM), (38, 38), (1, 1)])
def test_errno_action(tmp_path, errno_ret, expected):
    r = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
    if errno_ret is not None:
        r["errnoRet"] = errno_ret
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [r]})
    res = confined(p, mkdir_errno(str(tmp_path / "d")))
    assert res.code == expected, res
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL",
                                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_killing_actions_end_the_child_with_sigsys(tmp_path, action):
    p = seccomp.prepare({"defaultAction": ALLOW,
                         "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action}]})
    res = confined(p, mkdir_errno(str(tmp_path / "d")))
    assert res.signal == signal.SIGSYS, res


def test_default_errno_ret(tmp_path):
    # everything Python needs to exit is allowed; mkdir falls to the default
    # (exit_group stays allowed: glibc's _exit loops forever when it fails)
    p = seccomp.prepare({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EXDEV,
                         "syscalls": [{"names": ["exit_group", "exit"], "action": ALLOW}]})
    assert p.default_action == seccomp.RET_ERRNO | errno.EXDEV
    getppid = nr("getppid")
    res = confined(p, lambda w: raw(getppid))
    assert res.code == errno.EXDEV, res


# -- arguments -----------------------------------------------------------------------
def test_personality_denied_only_for_one_argument():
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [{
        "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
        "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]}]})

    personality = nr("personality")

    def fn(w: int) -> int:
        query = raw(personality, 0xFFFFFFFF)
        linux = raw(personality, 0)
        return 100 * (query == errno.EACCES) + 10 * (linux == 0)
    res = confined(p, fn)
    assert res.code == 110, res


UMASK_CASES = [
    # op, value, valueTwo, {umask argument: denied?}
    ("SCMP_CMP_EQ", 0o27, 0, {0o27: True, 0o22: False}),
    ("SCMP_CMP_NE", 0o22, 0, {0o22: False, 0o77: True}),
    ("SCMP_CMP_LT", 0o22, 0, {0o21: True, 0o22: False, 0o23: False}),
    ("SCMP_CMP_LE", 0o22, 0, {0o21: True, 0o22: True, 0o23: False}),
    ("SCMP_CMP_GT", 0o22, 0, {0o21: False, 0o22: False, 0o23: True}),
    ("SCMP_CMP_GE", 0o22, 0, {0o21: False, 0o22: True, 0o23: True}),
    ("SCMP_CMP_MASKED_EQ", 0o070, 0o020, {0o022: True, 0o027: True, 0o077: False, 0o007: False}),
]


@pytest.mark.parametrize("op,value,value_two,cases", UMASK_CASES,
                         ids=[c[0] for c in UMASK_CASES])
def test_argument_operators(op, value, value_two, cases):
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [{
        "names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
        "args": [{"index": 0, "value": value, "valueTwo": value_two, "op": op}]}]})

    umask = nr("umask")

    def fn(w: int) -> int:
        got = {str(m): raw(umask, m) == errno.EDOM for m in cases}
        os.write(w, json.dumps(got).encode())
        return 0
    res = confined(p, fn)
    assert res.code == 0, res
    assert json.loads(res.output) == {str(m): d for m, d in cases.items()}


def test_two_conditions_on_one_argument_match_either():
    # runc-compatible: one rule per condition when an index repeats
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [{
        "names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
        "args": [{"index": 0, "value": 0o70, "op": "SCMP_CMP_GE"},
                 {"index": 0, "value": 0o10, "op": "SCMP_CMP_LE"}]}]})

    umask = nr("umask")

    def fn(w: int) -> int:
        got = [raw(umask, m) == errno.EDOM for m in (0o5, 0o22, 0o75)]
        os.write(w, json.dumps(got).encode())
        return 0
    res = confined(p, fn)
    assert json.loads(res.output) == [True, False, True], res


def test_conditions_on_two_arguments_must_all_match(tmp_path):
    # openat(dirfd, path, flags): deny creating (O_CREAT in flags) relative to AT_FDCWD
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [{
        "names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS,
        "args": [{"index": 2, "value": os.O_CREAT, "valueTwo": os.O_CREAT,
                  "op": "SCMP_CMP_MASKED_EQ"},
                 {"index": 0, "value": 0xFFFFFF9C, "op": "SCMP_CMP_EQ"}]}]})  # AT_FDCWD
    existing = tmp_path / "existing"
    existing.write_text("x")

    def fn(w: int) -> int:
        out = {}
        try:
            os.close(os.open(str(existing), os.O_RDONLY))
            out["read"] = 0
        except OSError as e:
            out["read"] = e.errno
        try:
            os.close(os.open(str(tmp_path / "new"), os.O_WRONLY | os.O_CREAT))
            out["create"] = 0
        except OSError as e:
            out["create"] = e.errno
        dfd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.close(os.open("new2", os.O_WRONLY | os.O_CREAT, dir_fd=dfd))
            out["create_at_dirfd"] = 0
        except OSError as e:
            out["create_at_dirfd"] = e.errno
        os.write(w, json.dumps(out).encode())
        return 0
    res = confined(p, fn)
    assert json.loads(res.output) == {"read": 0, "create": errno.EROFS, "create_at_dirfd": 0}, res


# -- the -ENOSYS stub ----------------------------------------------------------------
def test_syscalls_newer_than_the_profile_get_enosys():
    allowed = ["exit_group", "exit", "getpid", "rt_sigreturn"]
    top = max(nr(n) for n in allowed)
    below = next(nr(n) for n in ("getppid", "getuid", "getgid", "times", "umask")
                 if nr(n) < top)
    p = seccomp.prepare({"defaultAction": "SCMP_ACT_ERRNO",
                         "syscalls": [{"names": allowed, "action": ALLOW}]})

    def fn(w: int) -> int:
        return 10 * (raw(below) == errno.EPERM) + (raw(top + 1) == errno.ENOSYS)
    res = confined(p, fn)
    assert res.code == 11, res


# -- flags ---------------------------------------------------------------------------
def test_filter_flags_are_loaded(tmp_path):
    p = seccomp.prepare({"defaultAction": ALLOW,
                         "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                   "SECCOMP_FILTER_FLAG_TSYNC"],
                         "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]})

    def fn(w: int) -> int:
        with open("/proc/self/status") as f:
            os.write(w, f.read().encode())
        return mkdir_errno(str(tmp_path / "d"))(w)
    res = confined(p, fn)
    assert res.code == errno.EPERM, res
    assert b"Seccomp:\t2" in res.output


def test_without_no_new_privs_and_cap_sys_admin_the_error_is_clear():
    if os.geteuid() == 0:
        pytest.skip("needs a process without CAP_SYS_ADMIN: run as a user to check")
    p = seccomp.prepare({"defaultAction": ALLOW,
                         "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})

    def body(w: int) -> int:
        try:
            p.install()
        except Exception as e:  # noqa: BLE001
            os.write(w, str(e).encode())
            return 3
        return 0
    res = forked.run(body)
    assert res.code == 3 and b"noNewPrivileges" in res.output, res


# -- NOTIFY with a listener ---------------------------------------------------------
NOTIF_RECV = 0xC0502100  # SECCOMP_IOCTL_NOTIF_RECV: _IOWR('!', 0, struct seccomp_notif)
NOTIF_SEND = 0xC0182101  # SECCOMP_IOCTL_NOTIF_SEND: _IOWR('!', 1, struct seccomp_notif_resp)


def test_notify_hands_fd_and_state_to_the_agent(tmp_path):
    import fcntl
    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(10)
    p = seccomp.prepare({"defaultAction": ALLOW, "listenerPath": path,
                         "listenerMetadata": "hello agent",
                         "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]},
                        state={"ociVersion": "1.3.0", "id": "notify-test", "bundle": str(tmp_path)})
    seen = {}

    def body(w: int) -> int:
        S.SYS.prctl(S.PR_SET_NO_NEW_PRIVS, 1)
        fd = p.install(pid=os.getpid())
        assert fd is not None
        return mkdir_errno(str(tmp_path / "d"))(w)

    def agent(child: int) -> None:
        p.close()  # the parent's copy of the connection
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4))
            seen["state"] = json.loads(msg)
            (_, _, data), = anc
            nfd = struct.unpack("i", data[:4])[0]
        try:
            poller = select.poll()
            poller.register(nfd, select.POLLIN)
            assert poller.poll(10_000), "no notification within 10s"
            req = bytearray(80)
            fcntl.ioctl(nfd, NOTIF_RECV, req)
            nid, npid, _, snr = struct.unpack_from("=QIIi", req)
            seen["pid"], seen["nr"] = npid, snr
            fcntl.ioctl(nfd, NOTIF_SEND, bytearray(struct.pack("=QqiI", nid, 0, -errno.EXDEV, 0)))
        finally:
            os.close(nfd)

    try:
        res = forked.run(body, parent=agent)
    finally:
        srv.close()
    assert res.code == errno.EXDEV, res  # the agent's answer reached the child
    st = seen["state"]
    assert st["fds"] == ["seccompFd"] and st["metadata"] == "hello agent"
    assert st["state"]["id"] == "notify-test" and st["state"]["status"] == "creating"
    assert st["pid"] == st["state"]["pid"] == seen["pid"]
    assert seen["nr"] in (nr("mkdir"), nr("mkdirat"))


# -- the engines' default profiles ---------------------------------------------------
WORKLOAD = ('echo ok; t=$(mktemp -d) && echo data > "$t/f" && cat "$t/f" && mkdir "$t/d" '
            '&& ls "$t" >/dev/null && ln -s f "$t/l" && cat "$t/l" && rm -r "$t" '
            '&& (sleep 0 &) && wait && echo done')


def _shell() -> list[str]:
    bb = shutil.which("busybox")
    return [bb, "sh"] if bb else ["/bin/sh"]


def run_workload(p: seccomp.Prepared) -> forked.Result:
    argv = _shell() + ["-c", WORKLOAD]

    def fn(w: int) -> int:
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.execv(argv[0], argv)
        return 99
    return confined(p, fn)


def probes(p: seccomp.Prepared) -> dict[str, int]:
    calls = {
        "unshare_user": (nr("unshare"), S.CLONE_NEWUSER),
        "keyctl": (nr("keyctl"), 0, 0xFFFFFFFD, 0),  # KEYCTL_GET_KEYRING_ID, session keyring
        "setns": (nr("setns"), -1, 0),
        "userfaultfd": (nr("userfaultfd"), os.O_CLOEXEC),
        "personality_odd": (nr("personality"), 0x0040000),
        "getppid": (nr("getppid"),),
    }

    def fn(w: int) -> int:
        os.write(w, json.dumps({k: raw(*v) for k, v in calls.items()}).encode())
        return 0
    res = confined(p, fn)
    assert res.code == 0, res
    return json.loads(res.output)


def test_podman_default_profile():
    if not os.path.exists(seccomp_profiles.PODMAN_PROFILE):
        pytest.skip("podman's profile is missing (package golang-github-containers-common)")
    p = seccomp.prepare(seccomp_profiles.to_oci(seccomp_profiles.PODMAN_PROFILE))
    res = run_workload(p)
    assert res.code == 0 and res.output.split() == [b"ok", b"data", b"data", b"done"], res
    got = probes(p)
    assert got["getppid"] == 0
    assert got["userfaultfd"] == errno.EPERM  # refused by name (errnoRet 1)
    assert got["personality_odd"] == errno.ENOSYS  # the profile's default errno
    # podman's profile (containers-common 0.50) allows unshare, keyctl and setns to
    # everyone, for nested containers: what stops them in a podman container is
    # the capability set and the user namespace, not seccomp
    assert got["setns"] == errno.EBADF  # reached the kernel
    assert got["unshare_user"] not in (errno.ENOSYS, errno.EPERM) or os.geteuid() != 0
    assert got["keyctl"] != errno.ENOSYS


def test_docker_default_profile():
    path = seccomp_profiles.docker_profile_path()
    if not path:
        pytest.skip("docker's default.json is not installed (docker.io compiles it into "
                    "dockerd; set HAKO_DOCKER_SECCOMP to a copy)")
    p = seccomp.prepare(seccomp_profiles.to_oci(path))
    res = run_workload(p)
    assert res.code == 0 and res.output.split() == [b"ok", b"data", b"data", b"done"], res
    got = probes(p)
    assert got["getppid"] == 0
    assert got["unshare_user"] == errno.EPERM
    assert got["keyctl"] == errno.EPERM
    assert got["setns"] == errno.EPERM
