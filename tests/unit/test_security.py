"""runtime.security through the recording fake and a fake filesystem root:
which calls are made with which arguments, and every error naming its field."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, strategies as st

from fakes import FakeSyscalls
from runtime import security
from runtime.errors import HakoError


def proc(**fields) -> dict:
    return {"process": fields}


# -- personality ---------------------------------------------------------------------
@pytest.mark.parametrize("cfg,persona", [
    ({"domain": "LINUX"}, 0x0),
    ({"domain": "LINUX32"}, 0x8),
    ({"domain": "LINUX", "flags": []}, 0x0),
    ({"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE", "UNAME26"]}, 0x8 | 0x40000 | 0x20000),
])
def test_personality(cfg, persona):
    sc = FakeSyscalls()
    security.apply_process_attrs(proc(personality=cfg), sc)
    assert [c.args for c in sc.named("personality")] == [(persona,)]


@pytest.mark.parametrize("cfg,message", [
    ({"domain": "LINUX64"}, 'process.personality.domain: unknown domain "LINUX64"'),
    ({}, "process.personality.domain: must be a string, not null"),
    ({"domain": "LINUX", "flags": ["NOPE"]}, 'process.personality.flags[0]: unknown personality '
                                              'flag "NOPE"'),
    ("LINUX", "process.personality: must be an object"),
])
def test_personality_errors(cfg, message):
    with pytest.raises(HakoError, match=message.replace("[", r"\[").replace("]", r"\]")):
        security.check_process_attrs(proc(personality=cfg))


def test_personality_failure_names_the_field():
    sc = FakeSyscalls(fail={"personality": OSError(errno.EINVAL, "personality: Invalid argument")})
    with pytest.raises(HakoError, match=r"process.personality: personality\(0x8\): "):
        security.apply_process_attrs(proc(personality={"domain": "LINUX32"}), sc)


# -- scheduler --------------------------------------------------------------------------
def test_scheduler_fifo():
    sc = FakeSyscalls()
    security.apply_process_attrs(proc(scheduler={"policy": "SCHED_FIFO", "priority": 10,
                                                 "flags": ["SCHED_FLAG_RESET_ON_FORK"]}), sc)
    (call,) = sc.named("sched_setattr")
    assert call.args == (1,)
    assert call.kwargs == {"flags": 1, "nice": 0, "priority": 10, "runtime": 0, "deadline": 0,
                           "period": 0}


def test_scheduler_deadline_and_batch():
    sc = FakeSyscalls()
    security.apply_process_attrs(proc(scheduler={
        "policy": "SCHED_DEADLINE", "runtime": 10_000_000, "deadline": 30_000_000,
        "period": 30_000_000}), sc)
    security.apply_process_attrs(proc(scheduler={"policy": "SCHED_BATCH", "nice": 7}), sc)
    a, b = sc.named("sched_setattr")
    assert a.args == (6,) and a.kwargs["runtime"] == 10_000_000 and a.kwargs["period"] == 30_000_000
    assert b.args == (3,) and b.kwargs["nice"] == 7


@pytest.mark.parametrize("cfg,message", [
    ({}, "process.scheduler.policy: missing"),
    ({"policy": "SCHED_FOO"}, 'process.scheduler.policy: unknown policy "SCHED_FOO"'),
    ({"policy": "SCHED_ISO"}, "process.scheduler.policy: SCHED_ISO is not implemented by Linux"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice: 20 is out of range"),
    ({"policy": "SCHED_OTHER", "priority": 5},
     "process.scheduler.priority: only SCHED_FIFO and SCHED_RR take a priority"),
    ({"policy": "SCHED_RR"}, "process.scheduler.priority: SCHED_RR needs a priority from 1 to 99"),
    ({"policy": "SCHED_FIFO", "priority": 100}, "process.scheduler.priority: 100 is out of range"),
    ({"policy": "SCHED_OTHER", "runtime": 5},
     "process.scheduler: runtime, deadline and period only apply to SCHED_DEADLINE"),
    ({"policy": "SCHED_DEADLINE", "runtime": 5},
     "process.scheduler: SCHED_DEADLINE needs runtime and deadline"),
    ({"policy": "SCHED_DEADLINE", "runtime": 50, "deadline": 10},
     "process.scheduler: SCHED_DEADLINE needs runtime <= deadline <= period"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]},
     'process.scheduler.flags[0]: unknown scheduler flag "SCHED_FLAG_X"'),
    ({"policy": "SCHED_OTHER", "nice": "5"}, 'process.scheduler.nice: must be an integer'),
])
def test_scheduler_errors(cfg, message):
    with pytest.raises(HakoError) as exc:
        security.check_process_attrs(proc(scheduler=cfg))
    assert message in str(exc.value)


@pytest.mark.parametrize("cfg,hint", [
    ({"policy": "SCHED_FIFO", "priority": 1}, "SCHED_FIFO needs CAP_SYS_NICE in the host's user "
                                               "namespace (or a matching RLIMIT_RTPRIO)"),
    ({"policy": "SCHED_DEADLINE", "runtime": 1000000, "deadline": 2000000},
     "SCHED_DEADLINE needs CAP_SYS_NICE"),
    ({"policy": "SCHED_OTHER", "nice": -5}, "a negative nice value needs CAP_SYS_NICE"),
])
def test_scheduler_eperm_is_explained(cfg, hint):
    sc = FakeSyscalls(fail={"sched_setattr": OSError(errno.EPERM, "Operation not permitted")})
    with pytest.raises(HakoError) as exc:
        security.apply_process_attrs(proc(scheduler=cfg), sc)
    msg = str(exc.value)
    assert msg.startswith(f"process.scheduler: sched_setattr({cfg['policy']}): "
                          f"Operation not permitted")
    assert hint in msg


# -- ioPriority -----------------------------------------------------------------------
@pytest.mark.parametrize("cfg,value", [
    ({"class": "IOPRIO_CLASS_RT", "priority": 0}, 1 << 13),
    ({"class": "IOPRIO_CLASS_BE", "priority": 7}, (2 << 13) | 7),
    ({"class": "IOPRIO_CLASS_IDLE"}, 3 << 13),
])
def test_ioprio(cfg, value):
    sc = FakeSyscalls()
    security.apply_process_attrs(proc(ioPriority=cfg), sc)
    assert [c.args for c in sc.named("ioprio_set")] == [(1, 0, value)]


@pytest.mark.parametrize("cfg,message", [
    ({"class": "IOPRIO_CLASS_NONE"}, 'process.ioPriority.class: unknown class "IOPRIO_CLASS_NONE"'),
    ({"class": "IOPRIO_CLASS_BE", "priority": 8}, "process.ioPriority.priority: 8 is out of range"),
    ({"priority": 1}, "process.ioPriority.class: must be a string"),
])
def test_ioprio_errors(cfg, message):
    with pytest.raises(HakoError) as exc:
        security.check_process_attrs(proc(ioPriority=cfg))
    assert message in str(exc.value)


def test_ioprio_eperm_is_explained():
    sc = FakeSyscalls(fail={"ioprio_set": OSError(errno.EPERM, "Operation not permitted")})
    with pytest.raises(HakoError, match="process.ioPriority: ioprio_set: Operation not permitted "
                                        r"\(the real-time class needs CAP_SYS_ADMIN"):
        security.apply_process_attrs(proc(ioPriority={"class": "IOPRIO_CLASS_RT"}), sc)


# -- CPU affinity ---------------------------------------------------------------------
@pytest.mark.parametrize("text,cpus", [
    ("0", {0}), ("0-3,7", {0, 1, 2, 3, 7}), (" 1 , 3-4 ", {1, 3, 4}), ("0-8:4", {0, 4, 8}),
    ("", set()), ("5-5", {5}),
])
def test_cpu_lists(text, cpus):
    assert security.parse_cpus(text, "x") == cpus


@pytest.mark.parametrize("text", ["a", "1-", "-1", "3-1", "1,,2", ",", "1:2", "0-4:0", "1.5",
                                  "٣", "9999999"])
def test_bad_cpu_lists(text):
    with pytest.raises(HakoError, match="^x: "):
        security.parse_cpus(text, "x")


@given(st.text(max_size=12))
def test_cpu_list_parser_never_crashes(text):
    try:
        cpus = security.parse_cpus(text, "x")
    except HakoError:
        return
    assert all(0 <= c < 8192 for c in cpus)


def test_affinity_initial_and_final():
    sc = FakeSyscalls()
    spec = proc(execCPUAffinity={"initial": "0-1", "final": "1"})
    security.apply_initial_affinity(spec, sc)
    security.apply_process_attrs(spec, sc)
    assert [c.args for c in sc.named("sched_setaffinity")] == [(0, {0, 1}), (0, {1})]


def test_affinity_einval_names_field_and_allowed_cpus():
    sc = FakeSyscalls(fail={"sched_setaffinity": OSError(errno.EINVAL, "Invalid argument")})
    with pytest.raises(HakoError, match=r"process.execCPUAffinity.final: sched_setaffinity: "
                                        r"Invalid argument \(none of these CPUs .* allowed: "):
        security.apply_process_attrs(proc(execCPUAffinity={"final": "4000"}), sc)


def test_order_of_process_attrs():
    sc = FakeSyscalls()
    security.apply_process_attrs(proc(
        personality={"domain": "LINUX"}, scheduler={"policy": "SCHED_BATCH"},
        ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 4},
        execCPUAffinity={"final": "0"}), sc)
    assert [c.name for c in sc.calls] == ["ioprio_set", "sched_setattr", "sched_setaffinity",
                                          "personality"]


def test_nothing_configured_nothing_called():
    sc = FakeSyscalls()
    security.apply_initial_affinity({}, sc)
    security.apply_process_attrs({"process": {"args": ["sh"]}}, sc)
    assert sc.calls == []


# -- LSMs through a fake root ------------------------------------------------------------
def make_root(tmp_path, apparmor=False, apparmor_dir=True, selinux=False, enabled=b"Y\n"):
    root = tmp_path / "root"
    attr = root / "proc/thread-self/attr"
    attr.mkdir(parents=True)
    (attr / "exec").write_text("")
    if apparmor:
        (root / "sys/kernel/security/apparmor").mkdir(parents=True)
        params = root / "sys/module/apparmor/parameters"
        params.mkdir(parents=True)
        (params / "enabled").write_bytes(enabled)
        if apparmor_dir:
            (attr / "apparmor").mkdir()
            (attr / "apparmor/exec").write_text("")
    if selinux:
        (root / "sys/fs/selinux").mkdir(parents=True)
        (root / "sys/fs/selinux/enforce").write_text("1")
    return str(root)


def test_no_lsm_refuses_only_non_empty_values(tmp_path):
    root = make_root(tmp_path)
    security.lsm_check(proc(apparmorProfile="", selinuxLabel=""), root)
    security.lsm_check({}, root)
    with pytest.raises(HakoError, match="process.apparmorProfile: AppArmor is not enabled on this "
                                        "host"):
        security.lsm_check(proc(apparmorProfile="docker-default"), root)
    with pytest.raises(HakoError, match="process.selinuxLabel: SELinux is not enabled on this host"):
        security.lsm_check(proc(selinuxLabel="system_u:system_r:container_t:s0"), root)
    with pytest.raises(HakoError, match="linux.mountLabel: SELinux is not enabled"):
        security.lsm_check({"linux": {"mountLabel": "system_u:object_r:container_file_t:s0"}},
                           root)


def test_apparmor_module_disabled_counts_as_absent(tmp_path):
    root = make_root(tmp_path, apparmor=True, enabled=b"N\n")
    assert not security.apparmor_enabled(root)


def test_apparmor_prefers_its_own_attr_dir(tmp_path):
    root = make_root(tmp_path, apparmor=True)
    assert security.lsm_exec_paths(root) == {
        "apparmor": os.path.join(root, "proc/thread-self/attr/apparmor/exec")}
    security.lsm_apply(proc(apparmorProfile="docker-default"), root)
    with open(os.path.join(root, "proc/thread-self/attr/apparmor/exec")) as f:
        assert f.read() == "exec docker-default"
    with open(os.path.join(root, "proc/thread-self/attr/exec")) as f:
        assert f.read() == ""


def test_apparmor_falls_back_to_the_shared_attr(tmp_path):
    root = make_root(tmp_path, apparmor=True, apparmor_dir=False)
    security.lsm_apply(proc(apparmorProfile="unconfined"), root)
    with open(os.path.join(root, "proc/thread-self/attr/exec")) as f:
        assert f.read() == "exec unconfined"


def test_selinux_label_goes_to_attr_exec(tmp_path):
    root = make_root(tmp_path, selinux=True)
    label = "system_u:system_r:container_t:s0:c1,c2"
    security.lsm_check(proc(selinuxLabel=label), root)
    security.lsm_apply(proc(selinuxLabel=label), root)
    with open(os.path.join(root, "proc/thread-self/attr/exec")) as f:
        assert f.read() == label


def test_lsm_apply_without_proc_says_so(tmp_path):
    root = make_root(tmp_path, selinux=True)
    os.unlink(os.path.join(root, "proc/thread-self/attr/exec"))
    with pytest.raises(HakoError, match=r"process.selinuxLabel: writing .*attr/exec: No such file "
                                        r"or directory \(is /proc mounted in the container\?\)"):
        security.lsm_apply(proc(selinuxLabel="x_u:x_r:x_t:s0"), root)


def test_lsm_apply_nothing_asked_touches_nothing(tmp_path):
    security.lsm_apply(proc(apparmorProfile=""), str(tmp_path / "missing"))


def test_lsm_values_must_be_strings(tmp_path):
    with pytest.raises(HakoError, match="process.apparmorProfile: must be a string"):
        security.lsm_check(proc(apparmorProfile=["x"]), make_root(tmp_path))


def test_this_host_has_no_lsm():
    """This project's hosts (Debian, no AppArmor/SELinux) refuse both clearly."""
    if security.apparmor_enabled() or security.selinux_enabled():
        pytest.skip("this host has an LSM")
    with pytest.raises(HakoError, match="AppArmor is not enabled"):
        security.lsm_check(proc(apparmorProfile="p"))


# -- sysctl -----------------------------------------------------------------------------
def sysctl_spec(values: dict, *ns: str, **extra) -> dict:
    return {"linux": {"sysctl": values, "namespaces": [{"type": t} for t in ns]}, **extra}


@pytest.mark.parametrize("key,ns", [
    ("kernel.msgmax", "ipc"), ("kernel.msgmnb", "ipc"), ("kernel.msgmni", "ipc"),
    ("kernel.sem", "ipc"), ("kernel.shmall", "ipc"), ("kernel.shmmax", "ipc"),
    ("kernel.shmmni", "ipc"), ("kernel.shm_rmid_forced", "ipc"), ("fs.mqueue.msg_max", "ipc"),
    ("kernel/shmmax", "ipc"), ("net.ipv4.ip_forward", "network"),
    ("net/ipv4/conf/eth0.100/rp_filter", "network"), ("net.core.somaxconn", "network"),
    ("kernel.domainname", "uts"), ("kernel.hostname", "uts"),
])
def test_namespaced_sysctls_allowed_with_their_namespace(key, ns):
    security.check_sysctl(sysctl_spec({key: "1"}, ns, "mount"))
    with pytest.raises(HakoError) as exc:
        security.check_sysctl(sysctl_spec({key: "1"}, "mount"))
    assert str(exc.value).startswith(f'linux.sysctl["{key}"]: needs ')
    assert "shares the host's" in str(exc.value)


@pytest.mark.parametrize("key", ["vm.swappiness", "kernel.pid_max", "fs.file-max",
                                 "kernel.ns_last_pid", "user.max_user_namespaces",
                                 "kernel.randomize_va_space", "dev.tty.ldisc_autoload"])
def test_other_sysctls_are_refused(key):
    with pytest.raises(HakoError) as exc:
        security.check_sysctl(sysctl_spec({key: "1"}, "ipc", "network", "uts", "mount", "pid",
                                          "user"))
    assert str(exc.value) == (f'linux.sysctl["{key}"]: not namespaced, refusing to set it from '
                              f'a container')


def test_hostname_sysctl_conflicts_with_the_field():
    with pytest.raises(HakoError, match=r'linux.sysctl\["kernel.hostname"\]: conflicts with the '
                                        r"config's 'hostname' field"):
        security.check_sysctl(sysctl_spec({"kernel.hostname": "a"}, "uts", hostname="b"))


@pytest.mark.parametrize("key", ["", "net..x", "net/../../etc", "..", "net.ipv4.", "a\0b"])
def test_malformed_sysctl_names(key):
    with pytest.raises(HakoError, match="not a sysctl name"):
        security.check_sysctl(sysctl_spec({key: "1"}, "network"))


def test_sysctl_values_must_be_strings():
    with pytest.raises(HakoError, match=r'linux.sysctl\["net.ipv4.ip_forward"\]: must be a '
                                        r"string"):
        security.check_sysctl(sysctl_spec({"net.ipv4.ip_forward": 1}, "network"))


def test_joining_the_hosts_own_namespace_is_not_a_namespace_of_its_own(tmp_path):
    spec = {"linux": {"sysctl": {"net.ipv4.ip_forward": "1"},
                      "namespaces": [{"type": "network", "path": "/proc/self/ns/net"}]}}
    with pytest.raises(HakoError, match="shares the host's"):
        security.check_sysctl(spec)
    # an explicit set from the caller wins
    security.check_sysctl(spec, namespaces={"network"})


def test_joining_another_namespace_counts(tmp_path):
    # a path that is not the host's namespace (it cannot be joined, but that is
    # the namespace code's error to give, later)
    other = tmp_path / "netns"
    other.write_text("")
    spec = {"linux": {"sysctl": {"net.ipv4.ip_forward": "1"},
                      "namespaces": [{"type": "network", "path": str(other)}]}}
    security.check_sysctl(spec)


@pytest.mark.parametrize("key,path", [
    ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
    ("net/ipv4/conf/eth0.100/rp_filter", "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
    ("kernel.shmmax", "/proc/sys/kernel/shmmax"),
])
def test_sysctl_path(key, path):
    assert security.sysctl_path(key) == path
