"""hooks/network/ without containers: annotations, plan(), spec flags, cleanup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hooks import network as net  # noqa: E402
from runtime.errors import HakoError  # noqa: E402


# ------------------------------------------------------------------ ports
@pytest.mark.parametrize("text,want", [
    ("8080:80", ("", 8080, 80, "tcp")),
    ("8080:80/udp", ("", 8080, 80, "udp")),
    ("127.0.0.1:8080:80/tcp", ("127.0.0.1", 8080, 80, "tcp")),
    ("::1:8080:80", ("::1", 8080, 80, "tcp")),
    ("[::1]:53:5353/udp", ("::1", 53, 5353, "udp")),
    (" 1:65535 ", ("", 1, 65535, "tcp")),
])
def test_parse_port(text, want):
    p = net.parse_port(text)
    assert (p.host_ip, p.host_port, p.container_port, p.proto) == want


@pytest.mark.parametrize("text", ["abc", "80", "80:", ":80", "a:1:2", "1:2/sctp", "1:2:3:4",
                                  "[::1]80:1", "٨٠:80", "1:2/"])
def test_bad_port_is_one_clear_line(text):
    with pytest.raises(net.NetworkError) as e:
        net.parse_port(text)
    msg = str(e.value)
    assert msg.startswith(f'io.hako.network.ports: "{text}"') and "\n" not in msg


def test_bad_port_message_exactly():
    with pytest.raises(HakoError, match=r'^io\.hako\.network\.ports: "abc": expected '
                       r'\[HOSTIP:\]HOSTPORT:CONTAINERPORT\[/tcp\|udp\]$'):
        net.parse_ports("abc")


def test_port_range_and_duplicates():
    with pytest.raises(net.NetworkError, match="out of range"):
        net.parse_port("0:80")
    with pytest.raises(net.NetworkError, match="out of range"):
        net.parse_port("80:65536")
    with pytest.raises(net.NetworkError, match="already forwarded"):
        net.parse_ports("8080:80,8080:81")
    assert len(net.parse_ports("8080:80,8080:80/udp")) == 2  # tcp and udp differ
    assert net.parse_ports("") == []


# ------------------------------------------------------------ annotations
def test_annotations_defaults_and_values():
    assert net.parse_annotations({}) is None
    assert net.parse_annotations({"other": "x"}) is None
    o = net.parse_annotations({"io.hako.network.ports": "1:2"})
    assert (o.driver, o.host_loopback, o.mtu, o.resolver) == ("slirp4netns", False, 65520,
                                                             "10.0.2.3")
    o = net.parse_annotations({"io.hako.network": "pasta", "io.hako.network.mtu": "1500",
                               "io.hako.network.host-loopback": "true",
                               "io.hako.network.dns": "192.0.2.53"})
    assert (o.driver, o.mtu, o.host_loopback, o.resolver) == ("pasta", 1500, True, "192.0.2.53")


@pytest.mark.parametrize("ann,match", [
    ({"io.hako.network": "vde"}, "unknown driver"),
    ({"io.hako.network.host-loopback": "yes"}, "expected true or false"),
    ({"io.hako.network.mtu": "67"}, "68 to 65521"),
    ({"io.hako.network": "pasta", "io.hako.network.mtu": "65521"}, "68 to 65520"),
    ({"io.hako.network.dns": "dns.example"}, "not an IP address"),
    ({"io.hako.network.typo": "x"}, "unknown"),
    ({"io.hako.network": "none", "io.hako.network.ports": "1:2"}, "no ports"),
])
def test_annotation_errors(ann, match):
    with pytest.raises(net.NetworkError, match=match):
        net.parse_annotations(ann)


# ------------------------------------------------------------------- plan
def spec_with(tmp_path: Path, ann: dict, *, netns: dict | None = {"type": "network"},
              mounts: list | None = None) -> dict:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    ns = [{"type": "mount"}] + ([netns] if netns else [])
    return {"root": {"path": "rootfs"}, "annotations": ann, "mounts": mounts or [],
            "linux": {"namespaces": ns}}


def test_plan_adds_two_hooks_and_a_resolv_conf_mount(tmp_path):
    spec = spec_with(tmp_path, {"io.hako.network": "slirp4netns"})
    spec["hooks"] = {"createRuntime": [{"path": "/bin/true"}]}
    state = str(tmp_path / "state")
    p = net.plan(spec, state, str(tmp_path))
    p.apply(spec)
    rt, cc = spec["hooks"]["createRuntime"], spec["hooks"]["createContainer"]
    assert len(rt) == 2 and rt[1] == {"path": "/bin/true"}  # ours first
    assert rt[0]["args"][-4:] == ["--phase", "runtime", "--state-dir", state]
    assert cc[0]["args"][-4:] == ["--phase", "container", "--state-dir", state]
    assert os.path.isabs(rt[0]["path"]) and rt[0]["timeout"] > 0
    assert spec["mounts"] == [{"destination": "/etc/resolv.conf", "type": "bind",
                               "source": os.path.join(state, "resolv.conf"),
                               "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
                               "x-hako-mountpoint": "overlay"}]
    assert not os.path.exists(state)  # plan writes nothing
    os.mkdir(state)
    p.prepare()
    assert Path(state, "resolv.conf").read_text().startswith("nameserver 10.0.2.3\n")


def test_plan_resolv_conf_choices(tmp_path):
    state = str(tmp_path / "state")
    ann = {"io.hako.network": "pasta"}
    etc = tmp_path / "rootfs" / "etc"
    # the image names a real resolver: kept
    spec = spec_with(tmp_path, ann)
    (etc / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    assert net.plan(spec, state, str(tmp_path)).mount is None
    # only a loopback resolver (useless behind the NAT): ours
    (etc / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    assert net.plan(spec, state, str(tmp_path)).mount is not None
    # an explicit dns annotation wins over the image
    (etc / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    spec = spec_with(tmp_path, dict(ann, **{"io.hako.network.dns": "192.0.2.9"}))
    p = net.plan(spec, state, str(tmp_path))
    assert p.mount is not None and "nameserver 192.0.2.9" in p.resolv_text
    # the config's own mount is respected ...
    own = {"destination": "/etc/resolv.conf", "type": "bind", "source": str(tmp_path / "r")}
    spec = spec_with(tmp_path, ann, mounts=[own])
    assert net.plan(spec, state, str(tmp_path)).mount is None
    # ... unless it is the host's, which is replaced in place
    host = {"destination": "etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf"}
    spec = spec_with(tmp_path, ann, mounts=[{"destination": "/x"}, host])
    p = net.plan(spec, state, str(tmp_path))
    p.apply(spec)
    assert len(spec["mounts"]) == 2 and spec["mounts"][1]["source"].startswith(state)


def test_plan_none_and_namespace_errors(tmp_path):
    state = str(tmp_path / "s")
    p = net.plan(spec_with(tmp_path, {"io.hako.network": "none"}), state)
    assert p.hooks == {} and p.mount is None
    with pytest.raises(net.NetworkError, match="no network namespace of its own"):
        net.plan(spec_with(tmp_path, {"io.hako.network": "none"}, netns=None), state)
    with pytest.raises(net.NetworkError, match="joins the network namespace /run/netns/x"):
        net.plan(spec_with(tmp_path, {"io.hako.network": "pasta"},
                           netns={"type": "network", "path": "/run/netns/x"}), state)
    assert net.plan({"annotations": {}}, state) is None


def test_plan_missing_helper(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(net.NetworkError, match=r"slirp4netns not found in PATH .*install "
                       r"package slirp4netns"):
        net.plan(spec_with(tmp_path, {"io.hako.network": "slirp4netns"}), str(tmp_path / "s"))


def test_check_tun(tmp_path):
    with pytest.raises(net.NetworkError, match="no tun device"):
        net.check_tun(str(tmp_path / "tun"))
    if os.geteuid() != 0:
        f = tmp_path / "tun"
        f.write_text("")
        f.chmod(0)
        with pytest.raises(net.NetworkError, match="0666"):
            net.check_tun(str(f))


def test_check_ports_free():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        with pytest.raises(net.NetworkError, match=f"host port {port}/tcp is already in use"):
            net.check_ports_free(net.parse_ports(f"127.0.0.1:{port}:80"))
        with pytest.raises(net.NetworkError, match="already in use"):
            net.check_ports_free(net.parse_ports(f"{port}:80"))  # every address
    finally:
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(net.NetworkError, match="/udp is already in use"):
            net.check_ports_free(net.parse_ports(f"127.0.0.1:{u.getsockname()[1]}:53/udp"))
    finally:
        u.close()
    with pytest.raises(net.NetworkError, match="not an address of this host"):
        net.check_ports_free(net.parse_ports("192.0.2.77:8080:80"))  # bind only, no traffic


# ------------------------------------------------------------- hako spec
def test_configure_spec_rootless():
    from runtime.default_spec import default_spec
    spec = default_spec(rootless=True, uid=1000, gid=1000)
    net.configure_spec(spec, None, ["8080:80", "127.0.0.1:53:53/udp"], True)
    assert spec["annotations"] == {"io.hako.network": "slirp4netns",
                                   "io.hako.network.ports": "8080:80,127.0.0.1:53:53/udp",
                                   "io.hako.network.host-loopback": "true"}
    assert {"type": "network"} in spec["linux"]["namespaces"]
    sysfs = [m for m in spec["mounts"] if m["destination"] == "/sys"]
    assert sysfs == [{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                      "options": ["nosuid", "noexec", "nodev", "ro"]}]
    with pytest.raises(net.NetworkError, match=r'^--publish: "x"'):
        net.configure_spec(spec, None, ["x"])
    with pytest.raises(net.NetworkError, match=r"^--network: unknown driver"):
        net.configure_spec(spec, "tap")


# --------------------------------------------------------------- cleanup
def test_cleanup_kills_recorded_processes_and_never_a_reused_pid(tmp_path):
    p = subprocess.Popen(["sleep", "60"])
    q = subprocess.Popen(["sleep", "60"])
    try:
        start = net._start_time(p.pid)
        # q is recorded with a wrong start time: "the pid was reused", never killed
        (tmp_path / "network.json").write_text(json.dumps(
            {"supervisor": [p.pid, start], "helper": [q.pid, net._start_time(q.pid) + 1]}))
        (tmp_path / "resolv.conf").write_text("x")
        (tmp_path / "keep").write_text("x")
        t0 = time.monotonic()
        net.cleanup(str(tmp_path))
        assert time.monotonic() - t0 < 5
        assert p.poll() is not None  # reaped by cleanup (it is our child)
        assert q.poll() is None
        assert sorted(os.listdir(tmp_path)) == ["keep"]
        net.cleanup(str(tmp_path))  # again: nothing to do
    finally:
        for x in (p, q):
            x.kill()
            x.wait()


def test_hook_phases_without_annotations_or_state(tmp_path):
    """The script's own entry: none is a no-op, a bad state a one-line error."""
    script = str(REPO / "hooks" / "network" / "__main__.py")
    run = lambda stdin, *a: subprocess.run(  # noqa: E731
        [sys.executable, "-I", "-S", script, *a], input=stdin, capture_output=True, text=True,
        timeout=30)
    r = run(json.dumps({"id": "x", "pid": 1, "annotations": {"io.hako.network": "none"}}),
            "--state-dir", str(tmp_path))
    assert r.returncode == 0 and r.stderr == ""
    r = run("not json", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("hako-network: the OCI state")
    r = run(json.dumps({"id": "x", "status": "creating", "annotations": {}}),
            "--phase", "container", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "no network supervisor" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = run(json.dumps({"id": "x", "status": "stopped"}), "--state-dir", str(tmp_path))
    assert r.returncode == 0
