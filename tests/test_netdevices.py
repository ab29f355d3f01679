"""linux.netDevices through real containers: a host device moved (and
renamed) into the container's network namespace with its address and up,
gone from the host; delete leaves it to the kernel (as the spec and runc
do); every refusal is one line before anything exists, the device untouched.

The device is one end of a veth pair the test makes (this kernel has no
dummy driver), with an address from 198.18.0.0/15 the test assigns; the
fixture always deletes it. Only root can move devices: rootless gets the
clear error.
"""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

import support

ROOT = pytest.mark.parametrize("mode", ["root"], indirect=True)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def on_host(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


class Veth:
    """hako-t-XXXX (the device to move, up, with ``addr``) and its peer hako-p-XXXX."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.name, self.peer = f"hako-t-{tag}", f"hako-p-{tag}"
        self.addr = f"198.18.{int(tag[:2], 16)}.{int(tag[2:], 16) % 250 + 2}/24"

    def make(self) -> None:
        ip("link", "add", self.name, "type", "veth", "peer", "name", self.peer)
        ip("addr", "add", self.addr, "dev", self.name)
        ip("link", "set", self.name, "up")

    def remove(self) -> None:
        for n in (self.name, self.peer):
            if on_host(n):
                ip("link", "del", n, check=False)

    def host_state(self) -> tuple[bool, str]:
        """(up, its addresses) on the host."""
        r = ip("-o", "addr", "show", "dev", self.name)
        flags = int(open(f"/sys/class/net/{self.name}/flags").read(), 16)
        return bool(flags & 1), r.stdout


@pytest.fixture
def veth(mode):
    v = Veth()
    if os.geteuid() != 0:
        yield v  # rootless as a user: nothing can be made, the refusal comes first
        return
    try:
        v.make()
        yield v
    finally:
        v.remove()


def with_devices(devs: dict, namespaces=None):
    def patch(c):
        c["linux"]["netDevices"] = devs
        if namespaces is not None:
            c["linux"]["namespaces"] = namespaces(c["linux"]["namespaces"])
    return patch


@ROOT
@pytest.mark.parametrize("rename", [None, "ctr0"])
def test_device_moves_in_with_its_address_and_up(rt, veth, rename):
    inside = rename or veth.name
    entry = {"name": rename} if rename else {}
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=with_devices({veth.name: entry}))
    r = rt.hako("run", "-d", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert not on_host(veth.name)
    r = rt.hako("exec", cid, "ip", "-o", "addr", "show", "dev", inside)
    assert r.returncode == 0, r.stderr
    assert f"inet {veth.addr}" in r.stdout and "scope global" in r.stdout
    r = rt.hako("exec", cid, "cat", f"/sys/class/net/{inside}/flags")
    assert int(r.stdout, 16) & 1, "the device is not up in the container"
    if rename:
        r = rt.hako("exec", cid, "ls", "/sys/class/net")
        assert veth.name not in r.stdout.split()
    # delete moves nothing back (spec, runc): the namespace goes, and the kernel
    # destroys a virtual device with it (a veth takes its peer along)
    assert rt.hako("delete", "-f", cid).returncode == 0
    support.wait_until(lambda: not on_host(veth.peer), timeout=20,
                       what="the veth to go with the container's namespace")
    assert not on_host(veth.name) and not on_host(rename or veth.name)


@ROOT
def test_the_device_is_in_before_the_first_hook(rt, veth):
    """As runc: moved before prestart, which sees it in the init's namespace."""
    seen = rt.dir / "prestart-net-dev"
    script = ("s=$(cat); pid=$(echo \"$s\" | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'); "
              f"cat /proc/$pid/net/dev > {seen}")

    def patch(c):
        with_devices({veth.name: {"name": "ctr4"}})(c)
        c["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
    cid = rt.new_id()
    r = rt.hako("run", "--bundle", rt.bundle(["true"], patch=patch), cid)
    assert r.returncode == 0, r.stderr
    assert "ctr4:" in seen.read_text()


@ROOT
def test_a_joined_network_namespace_keeps_the_device_after_delete(rt, veth):
    ns = "hako-t-ns-" + secrets.token_hex(3)
    ip("netns", "add", ns)
    try:
        cid = rt.new_id()
        bundle = rt.bundle(["sleep", "1000"], patch=with_devices(
            {veth.name: {"name": "ctr1"}},
            namespaces=lambda nss: [n for n in nss if n["type"] != "network"]
            + [{"type": "network", "path": f"/run/netns/{ns}"}]))
        r = rt.hako("run", "-d", "--bundle", bundle, cid)
        assert r.returncode == 0, r.stderr
        assert rt.hako("delete", "-f", cid).returncode == 0
        r = ip("-n", ns, "-o", "addr", "show", "dev", "ctr1")
        assert f"inet {veth.addr}" in r.stdout
        assert not on_host(veth.name)
    finally:
        ip("netns", "del", ns, check=False)


@ROOT
def test_a_name_taken_in_the_container_fails_and_leaves_the_device(rt, veth):
    """The kernel's EEXIST (the spec's "MUST generate an error"): one line,
    nothing left, the device on the host as it was."""
    ns = "hako-t-ns-" + secrets.token_hex(3)
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "add", "ctr3", "type", "veth", "peer", "name", "ctr3p")
        before = veth.host_state()
        refused(rt, rt.bundle(["true"], patch=with_devices(
            {veth.name: {"name": "ctr3"}},
            namespaces=lambda nss: [n for n in nss if n["type"] != "network"]
            + [{"type": "network", "path": f"/run/netns/{ns}"}])),
            f'linux.netDevices["{veth.name}"]: moving {veth.name}', "File exists")
        assert veth.host_state() == before
    finally:
        ip("netns", "del", ns, check=False)


def refused(rt, bundle, *expect: str):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", bundle, cid)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for e in expect:
        assert e in r.stderr, r.stderr
    assert not (rt.state_dir / cid).exists()


@ROOT
@pytest.mark.parametrize("entry,expect", [
    ({"name": "a/b"}, ".name: 'a/b' contains '/'"),
    ({"name": "x" * 16}, ".name: 'xxxxxxxxxxxxxxxx' is longer than 15 bytes"),
    ({"name": ".."}, ".name: '..' is not a device name"),
    ({"name": "has space"}, ".name: 'has space' contains"),
])
def test_bad_names_are_refused(rt, veth, entry, expect):
    before = veth.host_state()
    refused(rt, rt.bundle(["true"], patch=with_devices({veth.name: entry})),
            f'linux.netDevices["{veth.name}"]{expect}')
    assert veth.host_state() == before


@ROOT
def test_missing_device_and_two_devices_with_one_name_are_refused(rt, veth):
    refused(rt, rt.bundle(["true"], patch=with_devices({"hako-t-none": {}})),
            'linux.netDevices["hako-t-none"]: there is no network device')
    refused(rt, rt.bundle(["true"], patch=with_devices(
        {veth.name: {"name": "c0"}, veth.peer: {"name": "c0"}})), "is also the name of")
    assert on_host(veth.name) and on_host(veth.peer)


@ROOT
@pytest.mark.parametrize("namespaces,expect", [
    (lambda nss: [n for n in nss if n["type"] != "network"], "needs a network namespace"),
    (lambda nss: [n for n in nss if n["type"] != "network"]
     + [{"type": "network", "path": "/proc/self/ns/net"}], "runtime's own network namespace"),
])
def test_no_network_namespace_of_its_own_is_refused(rt, veth, namespaces, expect):
    before = veth.host_state()
    refused(rt, rt.bundle(["true"], patch=with_devices({veth.name: {}}, namespaces)),
            "linux.netDevices", expect)
    assert veth.host_state() == before


@ROOT
def test_a_failed_create_moves_the_device_back(rt, veth):
    """After the move, a createRuntime hook fails: the device is back on the
    host under its name, with its address, up."""
    before = veth.host_state()

    def patch(c):
        with_devices({veth.name: {"name": "ctr2"}})(c)
        c["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=patch), cid)
    assert r.returncode != 0 and "hooks.createRuntime[0]" in r.stderr
    assert not (rt.state_dir / cid).exists()
    assert veth.host_state() == before


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_rootless_is_refused(rt, veth):
    refused(rt, rt.bundle(["true"], patch=with_devices({veth.name: {}})),
            "linux.netDevices: moving host network devices needs root")
    if os.geteuid() == 0:
        assert on_host(veth.name)
