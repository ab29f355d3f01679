"""runtime.seccomp without loading a filter into the test process: validation,
error messages, the compiled program, the -ENOSYS stub, the install path
through the recording fake (flags, EACCES, the NOTIFY hand-over), and a fuzzer
that feeds prepare() random profiles."""

from __future__ import annotations

import array
import errno
import json
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakes import FakeSyscalls
from runtime import log, seccomp
from runtime.seccomp import libseccomp
from runtime.errors import HakoError

import seccomp_profiles

ALLOW = "SCMP_ACT_ALLOW"


def insns(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]


def rule(names, action="SCMP_ACT_ERRNO", **kw):
    return {"names": names, "action": action, **kw}


# -- what prepare() accepts -------------------------------------------------------
def test_none_is_no_filter_and_loads_no_library(monkeypatch):
    monkeypatch.setattr(libseccomp, "_lib", lambda: pytest.fail("libseccomp loaded"))
    assert seccomp.prepare(None) is None


def test_minimal_profile_compiles():
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"])]})
    assert p.flags == 0 and not p.notify and p.sock is None
    assert len(p.program) % 8 == 0 and 0 < len(p) <= seccomp.BPF_MAXINSNS
    # libseccomp's program starts by checking the architecture: ld [4]
    assert insns(p.program)[0] == (0x20, 0, 0, 4)
    # and returns ERRNO(EPERM) somewhere for mkdir
    assert (0x06, 0, 0, seccomp.RET_ERRNO | errno.EPERM) in insns(p.program)


@pytest.mark.parametrize("action,errno_ret,expected", [
    ("SCMP_ACT_ERRNO", None, seccomp.RET_ERRNO | errno.EPERM),
    ("SCMP_ACT_ERRNO", 38, seccomp.RET_ERRNO | 38),
    ("SCMP_ACT_ERRNO", 0, seccomp.RET_ERRNO),
    ("SCMP_ACT_TRACE", None, seccomp.RET_TRACE | errno.EPERM),
    ("SCMP_ACT_TRACE", 7, seccomp.RET_TRACE | 7),
    ("SCMP_ACT_KILL", None, seccomp.RET_KILL_THREAD),
    ("SCMP_ACT_KILL_THREAD", None, seccomp.RET_KILL_THREAD),
    ("SCMP_ACT_KILL_PROCESS", None, seccomp.RET_KILL_PROCESS),
    ("SCMP_ACT_TRAP", None, seccomp.RET_TRAP),
    ("SCMP_ACT_LOG", None, seccomp.RET_LOG),
])
def test_actions_reach_the_program(action, errno_ret, expected):
    r = rule(["mkdir"], action)
    if errno_ret is not None:
        r["errnoRet"] = errno_ret
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [r]})
    assert (0x06, 0, 0, expected) in insns(p.program)


def test_default_errno_ret_applies_to_the_default_only():
    p = seccomp.prepare({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                         "syscalls": [rule(["mkdir"]), rule(["getpid", "exit_group"], ALLOW)]})
    prog = insns(p.program)
    assert (0x06, 0, 0, seccomp.RET_ERRNO | 38) in prog
    assert (0x06, 0, 0, seccomp.RET_ERRNO | errno.EPERM) in prog  # mkdir: spec default EPERM
    assert p.default_action == seccomp.RET_ERRNO | 38


@pytest.mark.parametrize("profile,message", [
    ({"syscalls": []}, "linux.seccomp.defaultAction: missing"),
    ({"defaultAction": "SCMP_ACT_FOO"}, 'linux.seccomp.defaultAction: unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": ALLOW, "syscalls": [rule(["a"]), rule(["b"]), rule(["c"]),
                                           rule(["mkdir"], "SCMP_ACT_FOO")]},
     'linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": ALLOW, "syscalls": [{"names": ["mkdir"]}]},
     "linux.seccomp.syscalls[0].action: missing"),
    ({"defaultAction": ALLOW, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]},
     'linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_VAX"'),
    ({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]},
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_BOGUS"'),
    ({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], args=[
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 1, "op": "SCMP_CMP_XX"}])]},
     'linux.seccomp.syscalls[0].args[1].op: unknown operator "SCMP_CMP_XX"'),
    ({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], args=[{"index": 6, "value": 1,
                                                                  "op": "SCMP_CMP_EQ"}])]},
     "linux.seccomp.syscalls[0].args[0].index: 6 is out of range"),
    ({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], args=[{"index": 0, "value": -1,
                                                                  "op": "SCMP_CMP_EQ"}])]},
     "linux.seccomp.syscalls[0].args[0].value: -1 is out of range"),
    ({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], args=[{"index": 0, "value": 1,
                                                                  "valueTwo": 2**64,
                                                                  "op": "SCMP_CMP_MASKED_EQ"}])]},
     "linux.seccomp.syscalls[0].args[0].valueTwo: 18446744073709551616 is out of range"),
    ({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], "SCMP_ACT_KILL", errnoRet=1)]},
     "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_KILL takes no errno"),
    ({"defaultAction": ALLOW, "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW takes no errno"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000},
     "linux.seccomp.defaultErrnoRet: 70000 is out of range"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": True},
     "linux.seccomp.defaultErrnoRet: must be an unsigned integer, not true"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
    ({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], "SCMP_ACT_NOTIFY")]},
     "linux.seccomp.listenerPath: SCMP_ACT_NOTIFY needs a listenerPath"),
    ({"defaultAction": ALLOW, "listenerPath": "rel.sock",
      "syscalls": [rule(["mkdir"], "SCMP_ACT_NOTIFY")]},
     "linux.seccomp.listenerPath: 'rel.sock' is not an absolute path"),
    ({"defaultAction": ALLOW, "listenerPath": "/x.sock",
      "syscalls": [rule(["mkdir", "sendmsg"], "SCMP_ACT_NOTIFY")]},
     "linux.seccomp.syscalls[0]: SCMP_ACT_NOTIFY cannot be used for sendmsg"),
    ({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to a filter with SCMP_ACT_NOTIFY"),
    ({"defaultAction": ALLOW, "syscalls": [rule([""])]},
     "linux.seccomp.syscalls[0].names[0]: '' is not a syscall name"),
    ({"defaultAction": ALLOW, "syscalls": {"names": ["mkdir"]}},
     "linux.seccomp.syscalls: must be an array"),
    ([], "linux.seccomp: must be an object"),
])
def test_errors_name_the_json_path(profile, message):
    with pytest.raises(HakoError) as exc:
        seccomp.prepare(profile)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_syscalls_are_skipped_with_a_debug_line(monkeypatch):
    lines = []
    monkeypatch.setattr(log, "debug", lines.append)
    p = seccomp.prepare({"defaultAction": ALLOW,
                         "syscalls": [rule(["mkdir", "no_such_syscall_x"])]})
    assert p is not None
    assert any('"no_such_syscall_x"' in ln and "syscalls[0]" in ln for ln in lines)


def test_missing_libseccomp_is_a_clear_error_only_with_a_config(monkeypatch):
    import ctypes
    real = ctypes.CDLL

    def no_seccomp(name, *a, **kw):
        if name and "seccomp" in str(name):
            raise OSError("libseccomp.so.2: cannot open shared object file")
        return real(name, *a, **kw)

    monkeypatch.setattr(libseccomp, "_lib_cache", [])
    monkeypatch.setattr(ctypes, "CDLL", no_seccomp)
    assert seccomp.prepare(None) is None
    with pytest.raises(HakoError, match="libseccomp .* is not installed.*libseccomp2"):
        seccomp.prepare({"defaultAction": ALLOW})


def test_rules_equal_to_the_default_are_dropped():
    base = seccomp.prepare({"defaultAction": ALLOW})
    same = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], ALLOW)]})
    assert same.program == base.program


def test_repeated_argument_index_becomes_separate_rules():
    # libseccomp refuses two conditions on one argument in a rule; runc splits them
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [rule(["umask"], args=[
        {"index": 0, "value": 0o70, "op": "SCMP_CMP_GE"},
        {"index": 0, "value": 0o10, "op": "SCMP_CMP_LE"}])]})
    prog = insns(p.program)
    assert any(c == 0x35 and k == 0o70 for c, _, _, k in prog)  # jge 0o70
    assert any(c in (0x25, 0x35) and k in (0o10, 0o11) for c, _, _, k in prog)


def test_tsync_is_accepted_and_not_passed_on():
    p = seccomp.prepare({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_TSYNC"]})
    assert p.flags == 0


def test_flags_go_to_the_kernel():
    p = seccomp.prepare({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_LOG",
                                                          "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]})
    assert p.flags == seccomp.FLAG_LOG | seccomp.FLAG_SPEC_ALLOW


def test_kernel_probes():
    assert seccomp.kernel_has_flag(seccomp.FLAG_LOG)
    assert not seccomp.kernel_has_flag(1 << 20)
    assert seccomp.kernel_has_action(seccomp.RET_KILL_PROCESS)
    assert not seccomp.kernel_has_action(0x12340000)


def test_unsupported_kernel_flag_is_a_create_error(monkeypatch):
    monkeypatch.setattr(seccomp, "kernel_has_flag", lambda bit: bit != seccomp.FLAG_LOG)
    with pytest.raises(HakoError, match=r"linux.seccomp.flags: this kernel does not support "
                                        r"SECCOMP_FILTER_FLAG_LOG"):
        seccomp.prepare({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_LOG"]})


def test_unsupported_kernel_action_is_a_create_error(monkeypatch):
    monkeypatch.setattr(seccomp, "kernel_has_action", lambda a: a != seccomp.RET_LOG)
    with pytest.raises(HakoError, match="this kernel does not support SCMP_ACT_LOG"):
        seccomp.prepare({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"], "SCMP_ACT_LOG")]})


def test_architectures():
    p = seccomp.prepare({"defaultAction": ALLOW, "architectures":
                         ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                         "syscalls": [rule(["mkdir"])]})
    archs = {k for c, _, _, k in insns(p.program) if c == 0x15}
    assert {0xC000003E, 0x40000003} <= archs


# -- the -ENOSYS stub -----------------------------------------------------------------
def _stub_len(program: bytes) -> int:
    """Instructions before libseccomp's own filter (which starts with ld [4] too)."""
    code = insns(program)
    for i in range(1, len(code)):
        if code[i] == (0x20, 0, 0, 4):
            return i
    return 0


def test_enosys_stub_for_deny_by_default():
    p = seccomp.prepare({"defaultAction": "SCMP_ACT_ERRNO",
                         "syscalls": [rule(["read", "write", "exit_group"], ALLOW)]})
    n = _stub_len(p.program)
    stub = insns(p.program)[:n]
    assert n > 0
    assert (0x06, 0, 0, seccomp.RET_ERRNO | errno.ENOSYS) in stub
    assert (0x25, 0, 1, 231) in stub  # jgt exit_group (x86_64's highest here)
    # every `ja` lands inside the program and no conditional jump is long
    for i, (c, jt, jf, k) in enumerate(stub):
        if c == 0x05:
            assert i + 1 + k <= n
        else:
            assert jt <= 3 and jf <= 3


@pytest.mark.parametrize("profile", [
    {"defaultAction": ALLOW, "syscalls": [rule(["mkdir"])]},
    {"defaultAction": "SCMP_ACT_LOG", "syscalls": [rule(["mkdir"])]},
    {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
     "syscalls": [rule(["read"], ALLOW)]},
])
def test_no_stub_when_the_default_already_fits(profile):
    assert _stub_len(seccomp.prepare(profile).program) == 0


def test_stub_assembler_x32_branches():
    code = insns(seccomp._enosys_stub({0xC000003E: {"x86_64": 400, "x32": 0x40000200}}))
    # ld arch; jeq x86_64; ja sect; ja filter; sect: ld nr; jset x32 -> skip 3
    assert code[0] == (0x20, 0, 0, 4)
    assert code[1] == (0x15, 0, 1, 0xC000003E)
    i = code.index((0x45, 3, 0, 0x40000000))
    assert code[i + 1] == (0x25, 0, 1, 400) and code[i + 4] == (0x25, 0, 1, 0x40000200)
    end = len(code)
    for j, (c, _, _, k) in enumerate(code):
        if c == 0x05:
            assert j + 1 + k <= end


# -- install through the fake ------------------------------------------------------
def test_install_passes_program_and_flags():
    p = seccomp.prepare({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                         "syscalls": [rule(["mkdir"])]})
    sc = FakeSyscalls()
    assert p.install(sc=sc) is None
    (call,) = sc.named("seccomp_filter")
    assert call.args == (p.program, seccomp.FLAG_LOG)


def test_install_explains_eacces():
    p = seccomp.prepare({"defaultAction": ALLOW, "syscalls": [rule(["mkdir"])]})
    sc = FakeSyscalls(fail={"seccomp_filter": OSError(errno.EACCES, "seccomp: Permission denied")})
    with pytest.raises(HakoError) as exc:
        p.install(sc=sc)
    msg = str(exc.value)
    assert "Permission denied" in msg and "noNewPrivileges" in msg and "CAP_SYS_ADMIN" in msg


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(10)
    yield path, srv
    srv.close()


def notify_profile(path: str, **extra) -> dict:
    return {"defaultAction": ALLOW, "listenerPath": path, "listenerMetadata": "meta-foo",
            "syscalls": [rule(["mkdir"], "SCMP_ACT_NOTIFY")], **extra}


def test_notify_connects_in_prepare_and_sends_state_and_fd(listener):
    path, srv = listener
    state = {"ociVersion": "1.2.0", "id": "c1", "bundle": "/b", "annotations": {"a": "b"}}
    p = seccomp.prepare(notify_profile(path), state=state)
    assert p.notify and p.flags & seccomp.FLAG_NEW_LISTENER
    conn, _ = srv.accept()  # connected during prepare(): before any pivot_root
    with conn:
        sc = FakeSyscalls()
        fd = p.install(pid=4242, sc=sc)
        assert fd is not None and fd > 2
        assert p.sock is None  # closed after sending
        msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4))
        os.close(fd)
        got = json.loads(msg)
        assert got == {"ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": 4242,
                       "metadata": "meta-foo",
                       "state": {"ociVersion": "1.2.0", "id": "c1", "bundle": "/b",
                                 "annotations": {"a": "b"}, "status": "creating",
                                 "pid": 4242}}
        (level, kind, data), = anc
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        received = array.array("i", data[:4])[0]
        try:
            assert os.path.samestat(os.fstat(received), os.stat(os.devnull))
        finally:
            os.close(received)
        assert conn.recv(10) == b""  # the runtime closed its side (one state per connection)
    (call,) = sc.named("seccomp_filter")
    assert call.args[1] & seccomp.FLAG_NEW_LISTENER


def test_notify_with_wait_killable_flag(listener):
    path, srv = listener
    p = seccomp.prepare(notify_profile(path, flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]))
    assert p.flags == seccomp.FLAG_NEW_LISTENER | seccomp.FLAG_WAIT_KILLABLE_RECV
    p.close()


def test_notify_without_agent_fails_at_prepare(tmp_path):
    with pytest.raises(HakoError, match=r"linux.seccomp.listenerPath: connecting to the "
                                        r"seccomp agent at .*nope.sock: No such file"):
        seccomp.prepare(notify_profile(str(tmp_path / "nope.sock")))


def test_listener_path_ignored_without_notify(tmp_path):
    p = seccomp.prepare({"defaultAction": ALLOW, "listenerPath": str(tmp_path / "nope.sock"),
                         "syscalls": [rule(["mkdir"])]})
    assert p.sock is None and not p.notify


# -- the engines' profiles compile ----------------------------------------------------
def test_podman_default_profile_compiles():
    if not os.path.exists(seccomp_profiles.PODMAN_PROFILE):
        pytest.skip(f"{seccomp_profiles.PODMAN_PROFILE} missing "
                    f"(Debian package golang-github-containers-common)")
    oci = seccomp_profiles.to_oci(seccomp_profiles.PODMAN_PROFILE)
    p = seccomp.prepare(oci)
    assert 100 < len(p) <= seccomp.BPF_MAXINSNS


def test_docker_default_profile_compiles():
    path = seccomp_profiles.docker_profile_path()
    if not path:
        pytest.skip("docker's default.json is not installed (set HAKO_DOCKER_SECCOMP)")
    p = seccomp.prepare(seccomp_profiles.to_oci(path))
    assert _stub_len(p.program) > 0  # deny-by-default with EPERM: the stub is there


# -- fuzzing: prepare() raises HakoError and nothing else -----------------------------
def mostly(good, bad):
    """Three draws in four from ``good``: deep enough to reach libseccomp."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 3 else good)


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                 st.text(max_size=6), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
ACTION = mostly(st.sampled_from(sorted(seccomp.ACTIONS)),
                st.one_of(st.sampled_from(["SCMP_ACT_FOO", ""]), JUNK))
NAME = mostly(st.sampled_from(["mkdir", "read", "getpid", "personality", "socketcall", "umask",
                               "clone", "bogus_call"]),
              st.one_of(st.sampled_from(["", "sendmsg", "a\0b"]), JUNK))
ARG = mostly(st.fixed_dictionaries(
    {"index": mostly(st.integers(0, 5), st.one_of(st.integers(-2, 8), JUNK)),
     "op": mostly(st.sampled_from(sorted(seccomp.OPERATORS)),
                  st.one_of(st.just("SCMP_CMP_XX"), JUNK))},
    optional={"value": mostly(st.integers(0, 2**64 - 1), st.one_of(st.integers(-1, 2**65), JUNK)),
              "valueTwo": mostly(st.integers(0, 2**64 - 1),
                                 st.one_of(st.integers(-1, 2**65), JUNK))}), JUNK)
ERRNO = mostly(st.one_of(st.none(), st.integers(0, 4095)), st.one_of(st.integers(-1, 70000), JUNK))
RULE = mostly(st.fixed_dictionaries(
    {"names": mostly(st.lists(NAME, max_size=4), JUNK), "action": ACTION},
    optional={"errnoRet": ERRNO, "args": mostly(st.lists(ARG, max_size=4), JUNK)}), JUNK)
ARCH = mostly(st.sampled_from(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                               "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_LOONGARCH64"]),
              st.one_of(st.just("SCMP_ARCH_VAX"), JUNK))
PROFILE = mostly(st.fixed_dictionaries({"defaultAction": ACTION}, optional={
    "defaultErrnoRet": ERRNO,
    "architectures": mostly(st.lists(ARCH, max_size=3), JUNK),
    "flags": mostly(st.lists(mostly(st.sampled_from(sorted(seccomp.FLAGS)), JUNK), max_size=3),
                    JUNK),
    "listenerPath": st.one_of(st.sampled_from(["/nonexistent/agent.sock", "", "rel", "/a\0b"]),
                              JUNK),
    "listenerMetadata": st.one_of(st.text(max_size=5), JUNK),
    "syscalls": mostly(st.lists(RULE, max_size=6), JUNK),
}), JUNK)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROFILE)
def test_prepare_raises_only_hako_errors(profile):
    try:
        p = seccomp.prepare(profile)
    except HakoError as e:
        assert str(e) and "\n" not in str(e)
        return
    if profile is None:
        assert p is None
        return
    assert len(p.program) % 8 == 0 and 0 < len(p) <= seccomp.BPF_MAXINSNS
    p.close()
