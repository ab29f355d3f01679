"""config.json fields through real containers: user namespaces with ranges,
devices, domainname, sysctl, process security, seccomp. Compared with runc
where runc agrees with the spec."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import support

PODMAN_SECCOMP = Path("/usr/share/containers/seccomp.json")


def run(rt, args, **kw):
    return rt.hako("run", "--bundle", rt.bundle(args, **kw), rt.new_id())


def both(rt, args, **kw):
    bundle = rt.bundle(args, **kw)
    return (rt.hako("run", "--bundle", bundle, rt.new_id()),
            rt.runc("run", "--bundle", bundle, rt.new_id()))


def subid_range(user: str) -> tuple[int, int]:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, count = line.split(":")
        if name == user:
            return int(start), int(count)
    pytest.skip(f"no /etc/subuid range for {user} (make host-deps adds one)")


# ------------------------------------------------------------ user namespaces
def test_userns_with_ranges(rt):
    """Several ranges: newuidmap/newgidmap rootless, direct writes as root."""
    if rt.rootless:
        start, count = subid_range(rt.user.name)
        uids = [{"containerID": 0, "hostID": rt.uid, "size": 1},
                {"containerID": 1, "hostID": start, "size": min(count, 65536)}]
        gids = [{"containerID": 0, "hostID": rt.gid, "size": 1},
                {"containerID": 1, "hostID": start, "size": min(count, 65536)}]
    else:
        uids = gids = [{"containerID": 0, "hostID": 300000, "size": 65536}]

    def patch(c):
        c["linux"]["uidMappings"] = uids
        c["linux"]["gidMappings"] = gids
        if not any(n["type"] == "user" for n in c["linux"]["namespaces"]):
            c["linux"]["namespaces"].append({"type": "user"})
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [1001]}
        c["mounts"] = [m for m in c["mounts"] if m["type"] not in ("sysfs", "cgroup")]
        c["root"]["readonly"] = False
    bundle = rt.bundle(["sh", "-c", "cat /proc/self/uid_map; id -u; id -g; id -G; "
                        "cat /proc/self/setgroups"], patch=patch)
    if not rt.rootless:
        # container uids are host 300000+: the rootfs must be theirs
        support.busybox.chown_tree(bundle / "rootfs", 300000, 300000)
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    maps = [l.split() for l in lines[:len(uids)]]
    assert maps == [[str(m["containerID"]), str(m["hostID"]), str(m["size"])] for m in uids]
    assert lines[len(uids):len(uids) + 4] == ["1000", "1000", "1000 1001", "allow"]


def test_single_mapping_denies_setgroups(rt):
    if not rt.rootless:
        pytest.skip("a rootless single mapping")
    r = run(rt, ["cat", "/proc/self/setgroups"])
    assert r.stdout.strip() == "deny"
    r = run(rt, ["true"], patch={"process": {"user": {"uid": 0, "gid": 0, "additionalGids": [5]}}})
    assert r.returncode != 0 and "additionalGids" in r.stderr


def test_unmapped_user_is_a_clear_error(rt):
    if not rt.rootless:
        pytest.skip("rootless: only uid 0 is mapped")
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch={"process": {"user": {"uid": 5, "gid": 0}}}), cid)
    assert r.returncode != 0 and "process.user.uid" in r.stderr and "not mapped" in r.stderr
    assert not (rt.state_dir / cid).exists()


# -------------------------------------------------------------------- devices
def test_linux_devices(rt):
    """As root the node is made (mknod); rootless the host's node is bind-mounted,
    so the rootless case uses one the host has."""
    dev = {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
           "uid": 0, "gid": 0}
    if rt.rootless:
        dev = {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o644}
        r = run(rt, ["ls", "-l", "/dev/kmsg"], patch={"linux": {"devices": [dev]}})
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("c") and "1,  11" in r.stdout
        r = run(rt, ["true"], patch={"linux": {"devices": [{**dev, "path": "/dev/nohost"}]}})
        assert r.returncode != 0 and "/dev/nohost" in r.stderr
        return
    res = {"linux": {"devices": [dev]}}
    if not rt.rootless:
        res["linux"]["resources"] = {"devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}
    r = run(rt, ["sh", "-c", "ls -l /dev/mynull; echo hi > /dev/mynull && echo written"], patch=res)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("crw-rw-rw-") and "1,   3" in r.stdout and "written" in r.stdout


def test_domainname_and_sysctl(rt):
    # runc's rootless spec has no network namespace: net.* would be the host's
    sysctl = {"kernel.shmmni": "1234"} if rt.rootless else \
        {"kernel.shmmni": "1234", "net.ipv4.ip_forward": "1"}
    ours, theirs = both(rt, ["sh", "-c", "hostname; cat /proc/sys/kernel/domainname; "
                             "cat /proc/sys/kernel/shmmni; cat /proc/sys/net/ipv4/ip_forward"],
                        hostname="h1",
                        patch={"domainname": "example.test", "linux": {"sysctl": sysctl}})
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.split()[:3] == ["h1", "example.test", "1234"]
    if not rt.rootless:
        assert ours.stdout.split()[3] == "1"
    # runc 1.1 ignores "domainname" (runtime-spec 1.1 added it): hako follows the spec
    theirs_lines = theirs.stdout.split("\n")
    assert theirs_lines[1] == "(none)"
    assert ours.stdout.split("\n")[:1] + ours.stdout.split("\n")[2:] == \
        theirs_lines[:1] + theirs_lines[2:]


def test_host_sysctl_is_refused(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch={"linux": {"sysctl": {"vm.swappiness": "10"}}}), cid)
    assert r.returncode != 0 and "vm.swappiness" in r.stderr
    assert not (rt.state_dir / cid).exists()


# ----------------------------------------------------------- process security
STATUS = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status"


@pytest.mark.parametrize("variant", ["default", "nnp", "fewcaps", "ambient"])
def test_status_lines_match_runc(rt, variant):
    patch = {
        "default": {},
        "nnp": {"process": {"noNewPrivileges": True}},
        "fewcaps": {"process": {"capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"], "inheritable": []}}},
        "ambient": {"process": {"capabilities": {
            "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL", "CAP_CHOWN"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]}}},
    }[variant]
    ours, theirs = both(rt, ["sh", "-c", STATUS], patch=patch)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout


def test_ulimits_and_oom_score_match_runc(rt):
    patch = {"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                                     {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}],
                         "oomScoreAdj": 500}}
    ours, theirs = both(rt, ["sh", "-c", "ulimit -a; cat /proc/self/oom_score_adj"], patch=patch)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    assert "500" in ours.stdout.split()


def test_rlimit_above_hard_limit_names_it(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch={"process": {"rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": 10**7, "hard": 10**7}]}}), cid)
    assert r.returncode != 0 and "RLIMIT_NOFILE" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()


def test_unknown_capability_is_refused(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch={"process": {"capabilities": {
        "bounding": ["CAP_CHOWN", "CAP_FLY"]}}}), cid)
    assert r.returncode != 0 and "CAP_FLY" in r.stderr and "bounding[1]" in r.stderr
    assert not (rt.state_dir / cid).exists()


@pytest.mark.parametrize("field,value", [("apparmorProfile", "docker-default"),
                                         ("selinuxLabel", "system_u:system_r:container_t:s0")])
def test_lsm_labels_without_the_lsm(rt, field, value):
    if field == "apparmorProfile" and Path("/sys/kernel/security/apparmor").is_dir():
        pytest.skip("this host has AppArmor")
    if field == "selinuxLabel" and Path("/sys/fs/selinux").is_dir():
        pytest.skip("this host has SELinux")
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch={"process": {field: value}}), cid)
    assert r.returncode != 0 and field in r.stderr
    assert not (rt.state_dir / cid).exists()


# -------------------------------------------------------------------- seccomp
def seccomp_patch(profile: dict):
    return {"linux": {"seccomp": profile}}


def test_seccomp_errno_and_kill(rt):
    errno_profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    ours, theirs = both(rt, ["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?; grep Seccomp: /proc/self/status"],
                        patch=seccomp_patch(errno_profile))
    assert ours.returncode == 0, ours.stderr
    assert "Permission denied" in ours.stdout and "Seccomp:\t2" in ours.stdout
    assert ours.stdout == theirs.stdout
    kill_profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    r = run(rt, ["mkdir", "/tmp/y"], patch=seccomp_patch(kill_profile))
    assert r.returncode == 128 + 31  # SIGSYS


def test_seccomp_podman_default_profile(rt):
    """podman's profile, resolved for the container as podman would (seccomp_profiles.to_oci)."""
    if not PODMAN_SECCOMP.exists():
        pytest.skip(f"{PODMAN_SECCOMP} not installed (package golang-github-containers-common)")
    from seccomp_profiles import to_oci
    profile = to_oci(str(PODMAN_SECCOMP))
    script = ("echo ok > /tmp/f && cat /tmp/f && ls / >/dev/null && sh -c 'echo child' && "
              "grep Seccomp: /proc/self/status")
    patch = {**seccomp_patch(profile), "root": {"path": "rootfs", "readonly": False}}
    ours, theirs = both(rt, ["sh", "-c", script], patch=patch)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.split() == ["ok", "child", "Seccomp:", "2"]
    assert ours.stdout == theirs.stdout


def test_seccomp_unknown_action_is_refused(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=seccomp_patch(
        {"defaultAction": "SCMP_ACT_ALLOW",
         "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_FOO"}]})), cid)
    assert r.returncode != 0 and "linux.seccomp.syscalls[0].action" in r.stderr
    assert not (rt.state_dir / cid).exists()


def test_exec_inherits_seccomp(rt):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "100"], patch=seccomp_patch(profile)),
                   cid).returncode == 0
    r = rt.hako("exec", cid, "sh", "-c", "mkdir /tmp/z 2>&1; grep Seccomp: /proc/self/status")
    assert "Operation not permitted" in r.stdout and "Seccomp:\t2" in r.stdout


@pytest.mark.parametrize("key,value", [
    ("intelRdt", {"closID": "x", "l3CacheSchema": "L3:0=f"}),
])
def test_unsupported_linux_fields_are_refused_not_ignored(rt, key, value):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch={"linux": {key: value}}), cid)
    assert r.returncode != 0 and f"linux.{key}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()


def test_netdevices_of_a_missing_device_are_refused(rt):
    """linux.netDevices (tests/test_netdevices.py moves real ones): before
    anything exists, one line: no such device as root, root only rootless."""
    cid = rt.new_id()
    patch = {"linux": {"netDevices": {"hako-t-none": {"name": "eth9"}}}}
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=patch), cid)
    why = "needs root" if rt.rootless else "there is no network device 'hako-t-none'"
    assert r.returncode != 0 and 'linux.netDevices' in r.stderr and why in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()


def _numa_node0() -> bool:
    return os.path.isdir("/sys/devices/system/node/node0")


@pytest.mark.parametrize("policy,shown", [
    ({"mode": "MPOL_BIND", "nodes": "0"}, "bind:0"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, "bind=static:0"),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0"}, "interleave:0"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_RELATIVE_NODES"]},
     "prefer=relative:0"),
    ({"mode": "MPOL_LOCAL", "nodes": ""}, "local"),
])
def test_memory_policy_of_the_init_and_of_exec(rt, policy, shown):
    """linux.memoryPolicy: the container's process and an exec'd one run
    under it, as numa_maps shows (the policy of a mapping without its own)."""
    if not _numa_node0() or not os.path.exists("/proc/self/numa_maps"):
        pytest.skip("no NUMA support in this kernel (no node0 or numa_maps)")
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", "head -1 /proc/self/numa_maps; sleep 1000"],
                       patch={"linux": {"memoryPolicy": policy}})
    p = rt.hako("run", "-d", "--bundle", bundle, cid)
    assert p.returncode == 0, p.stderr
    r = rt.hako("exec", cid, "head", "-1", "/proc/self/numa_maps")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == shown, r.stdout
    r = rt.hako("run", "--bundle", rt.bundle(["head", "-1", "/proc/self/numa_maps"],
                                             patch={"linux": {"memoryPolicy": policy}}),
                rt.new_id())
    assert r.returncode == 0 and r.stdout.split()[1] == shown, (r.stdout, r.stderr)


@pytest.mark.parametrize("policy,why", [
    ({"mode": "MPOL_BIND", "nodes": ""}, "linux.memoryPolicy.nodes: MPOL_BIND needs at least one node"),
    ({"mode": "MPOL_DEFAULT", "nodes": "0"}, "linux.memoryPolicy.nodes: MPOL_DEFAULT takes no nodes"),
    ({"mode": "MPOL_BIND", "nodes": "0-x"}, "linux.memoryPolicy.nodes: '0-x' is not a node list"),
    ({"mode": "MPOL_BIND", "nodes": "1023-1024"}, "node 1024 is beyond the kernel's limit"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]},
     "exclude each other"),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]},
     "MPOL_F_NUMA_BALANCING is for MPOL_BIND only"),
    ({"mode": "MPOL_BIND", "nodes": "1000"}, "linux.memoryPolicy: MPOL_BIND on nodes 1000: "),
])
def test_memory_policy_mistakes_are_one_line_and_leave_nothing(rt, policy, why):
    cid = rt.new_id()
    r = rt.hako("run", "--bundle", rt.bundle(["true"], patch={"linux": {"memoryPolicy": policy}}),
                cid)
    assert r.returncode != 0 and why in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (rt.state_dir / cid).exists()
