"""Networking (hooks/network/): slirp4netns and pasta, port forwards, lifetime.

Only loopback and the container's own namespace addresses are used: the host
side is always 127.0.0.1, reached from inside through the gateway 10.0.2.2 only
with host-loopback enabled. Every test runs as root and rootless (the ``rt``
fixture); nothing here does a DNS lookup.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import support

DRIVERS = ["slirp4netns", "pasta"]
GATEWAY = "10.0.2.2"


# ---------------------------------------------------------------- helpers
def free_port(proto: str = "tcp") -> int:
    """A port nobody listens on (tcp and udp alike) on 127.0.0.1."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
    raise AssertionError("no free port")


def net_patch(driver: str | None = "slirp4netns", ports: str | None = None,
              loopback: bool | None = None, python: bool = False, **ann):
    """A bundle patch: networking annotations, a network namespace of its own,
    sysfs (not the host's /sys), and optionally the host's /usr for python3."""
    def patch(c):
        a = c.setdefault("annotations", {})
        if driver is not None:
            a["io.hako.network"] = driver
        if ports is not None:
            a["io.hako.network.ports"] = ports
        if loopback is not None:
            a["io.hako.network.host-loopback"] = "true" if loopback else "false"
        for k, v in ann.items():
            a["io.hako.network." + k] = v
        ns = c["linux"]["namespaces"]
        if not any(n["type"] == "network" for n in ns):
            ns.append({"type": "network"})
        for m in c["mounts"]:
            if m["destination"] == "/sys":
                m.update(type="sysfs", source="sysfs", options=["nosuid", "noexec", "nodev", "ro"])
        if python:
            for d, src in (("/usr", "/usr"), ("/lib", "/usr/lib"), ("/lib64", "/usr/lib64")):
                c["mounts"].append({"destination": d, "type": "bind", "source": src,
                                    "options": ["rbind", "ro"]})
    return patch


def net_state(rt, cid: str) -> dict | None:
    try:
        return json.loads((rt.state_dir / cid / "network.json").read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int, start: int | None = None) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return False
    return start is None or int(rest[19]) == start


def procs_of(st: dict) -> list[tuple[int, int]]:
    return [tuple(st[k]) for k in ("supervisor", "helper") if st.get(k)]


def wait_gone(procs: list[tuple[int, int]], timeout: float = 15.0) -> None:
    support.wait_until(lambda: not any(alive(p, s) for p, s in procs), timeout=timeout,
                       what=f"network processes {procs} to exit")


def wait_helper(rt, cid: str, timeout: float = 20.0) -> dict:
    return support.wait_until(lambda: (st := net_state(rt, cid)) and st.get("helper") and st,
                              timeout=timeout, what="the network helper")


def state_of(rt, cid: str) -> dict:
    r = rt.hako("state", cid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def connect_retry(port: int, timeout: float = 15.0) -> bytes:
    """Connect to 127.0.0.1:port until the server inside answers; its first line."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(5)
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    return data
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"no answer on 127.0.0.1:{port} within {timeout}s ({last})")


class TcpServer:
    """One-line TCP server on 127.0.0.1 that records who connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: list = []
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                c, addr = self.sock.accept()
            except OSError:
                continue
            self.peers.append(addr)
            try:
                c.sendall(b"hello-host-tcp\n")
            finally:
                c.close()

    def close(self) -> None:
        self._stop = True
        self._t.join(5)
        self.sock.close()


class TftpServer:
    """A minimal TFTP read server on 127.0.0.1 (UDP): every file holds one line."""

    def __init__(self, payload: bytes = b"hello-host-udp\n") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.payload = payload
        self.requests: list = []
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                continue
            op = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
            if op == 1:  # RRQ: answer with the whole file as block 1 (< 512 bytes: last)
                self.requests.append(addr)
                self.sock.sendto(struct.pack("!HH", 3, 1) + self.payload, addr)

    def close(self) -> None:
        self._stop = True
        self._t.join(5)
        self.sock.close()


@pytest.fixture
def servers():
    tcp, udp = TcpServer(), TftpServer()
    yield tcp, udp
    tcp.close()
    udp.close()


# ------------------------------------------------- reaching the host (loopback)
@pytest.mark.parametrize("driver", DRIVERS)
def test_container_reaches_host_loopback_tcp_and_udp(rt, servers, driver):
    tcp, udp = servers
    # passt 2023-03 may lose the host's FIN once the container half-closed first
    # (nc </dev/null would then hang): with pasta, nc closes only after the reply
    nc = f"nc {GATEWAY} {tcp.port}"
    client = f"{nc} </dev/null" if driver == "slirp4netns" else f"sleep 1 | {nc}"
    script = (f"{client}; "
              f"tftp -g -r greeting -l /dev/shm/got {GATEWAY} {udp.port} && cat /dev/shm/got")
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", script], patch=net_patch(driver, loopback=True))
    r = rt.hako("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert "hello-host-tcp" in r.stdout and "hello-host-udp" in r.stdout, r.stdout + r.stderr
    assert tcp.peers and tcp.peers[0][0] == "127.0.0.1"
    assert udp.requests


def test_host_loopback_refused_unless_enabled(rt, servers):
    """slirp4netns refuses 10.0.2.2 itself (pasta would send it out: not tested)."""
    tcp, _ = servers
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", f"nc -w 3 {GATEWAY} {tcp.port} </dev/null; echo rc=$?"],
                       patch=net_patch("slirp4netns"))
    r = rt.hako("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert "hello-host-tcp" not in r.stdout
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    assert tcp.peers == []


# ------------------------------------------------------------- port forwards
@pytest.mark.parametrize("driver", DRIVERS)
def test_forward_host_port_to_container_tcp(rt, driver):
    port = free_port()
    cid = rt.new_id()
    bundle = rt.bundle(["nc", "-ll", "-p", "8080", "-e", "echo", "hello-from-container"],
                       patch=net_patch(driver, ports=f"127.0.0.1:{port}:8080"))
    r = rt.hako("run", "-d", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert connect_retry(port) == b"hello-from-container\n"
    assert connect_retry(port) == b"hello-from-container\n"  # -ll: again
    assert rt.hako("delete", "--force", cid).returncode == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_forward_host_port_to_container_udp(rt, driver):
    """UDP replies to a client on the host's loopback: slirp4netns sends them only
    with host-loopback enabled; pasta (2023-03) only without port translation."""
    port = free_port()
    inner = 5353 if driver == "slirp4netns" else port
    server = ("import socket\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              f"s.bind(('0.0.0.0', {inner}))\n"
              "while True:\n"
              "    d, a = s.recvfrom(100)\n"
              "    s.sendto(b'pong:' + d, a)\n")
    cid = rt.new_id()
    bundle = rt.bundle(["/usr/bin/python3", "-I", "-S", "-c", server],
                       patch=net_patch(driver, ports=f"127.0.0.1:{port}:{inner}/udp",
                                       loopback=driver == "slirp4netns", python=True))
    r = rt.hako("run", "-d", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(0.2)
    got = None
    deadline = time.monotonic() + 15
    while got is None and time.monotonic() < deadline:
        u.sendto(b"ping", ("127.0.0.1", port))
        try:
            got = u.recv(100)
        except OSError:
            continue
    u.close()
    assert got == b"pong:ping"
    assert rt.hako("delete", "--force", cid).returncode == 0


def test_forward_to_every_address_by_default(rt):
    """HOSTPORT:CONTAINERPORT binds all addresses; 127.0.0.1 is one of them."""
    port = free_port()
    cid = rt.new_id()
    bundle = rt.bundle(["nc", "-ll", "-p", "80", "-e", "echo", "any"],
                       patch=net_patch("slirp4netns", ports=f"{port}:80"))
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    assert connect_retry(port) == b"any\n"
    assert rt.hako("delete", "--force", cid).returncode == 0


# ------------------------------------------------------------- inside view
@pytest.mark.parametrize("driver", DRIVERS)
def test_interface_route_mtu_and_resolv_conf(rt, driver):
    cid = rt.new_id()
    script = "ip addr show eth0; ip route; ip link show lo; cat /etc/resolv.conf"
    bundle = rt.bundle(["sh", "-c", script], patch=net_patch(driver))
    r = rt.hako("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "inet 10.0.2.100/24" in out, out
    assert "mtu 65520" in out
    assert "default via 10.0.2.2 dev eth0" in out
    assert "LOOPBACK,UP" in out
    assert "nameserver 10.0.2.3" in out
    # the rootfs is not changed (the bind mount target is created empty, as runc does)
    target = bundle / "rootfs" / "etc" / "resolv.conf"
    assert not target.exists() or target.read_text() == ""


def test_mtu_and_dns_annotations(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", "ip link show eth0; cat /etc/resolv.conf"],
                       patch=net_patch("slirp4netns", mtu="1500", dns="192.0.2.53"))
    r = rt.hako("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert "mtu 1500" in r.stdout
    assert "nameserver 192.0.2.53" in r.stdout  # written, never contacted


def test_image_resolv_conf_is_kept(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["cat", "/etc/resolv.conf"], patch=net_patch("slirp4netns"))
    (bundle / "rootfs" / "etc" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    rt.chown(bundle / "rootfs" / "etc" / "resolv.conf")
    r = rt.hako("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "nameserver 192.0.2.1\n"


def test_driver_none_is_loopback_only(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", "ip -o link; ls /sys/class/net"], patch=net_patch("none"))
    r = rt.hako("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert "lo" in r.stdout and "eth0" not in r.stdout
    assert "LOOPBACK,UP" in r.stdout


# ----------------------------------------------------------------- lifetime
@pytest.mark.parametrize("driver", DRIVERS)
def test_no_helper_after_normal_exit(rt, driver):
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1"], patch=net_patch(driver))
    p = rt.popen(rt.hako_argv("run", "--bundle", bundle, cid))
    st = wait_helper(rt, cid)
    procs = procs_of(st)
    assert len(procs) == 2 and all(alive(*x) for x in procs)
    assert p.wait(timeout=30) == 0
    for pid, start in procs:
        assert not alive(pid, start), f"pid {pid} still there after run"
    assert not (rt.state_dir / cid).exists()


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_helper_after_sigkill_of_the_container(rt, driver):
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=net_patch(driver))
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    procs = procs_of(wait_helper(rt, cid))
    assert rt.hako("kill", cid, "KILL").returncode == 0
    wait_gone(procs)  # the supervisor saw the init die: before any delete
    assert rt.hako("delete", cid).returncode == 0
    assert not (rt.state_dir / cid).exists()


@pytest.mark.parametrize("driver", DRIVERS)
def test_delete_force_stops_the_helper(rt, driver):
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=net_patch(driver))
    assert rt.hako("create", "--bundle", bundle, cid).returncode == 0
    procs = procs_of(wait_helper(rt, cid))
    assert rt.hako("delete", "--force", cid).returncode == 0
    for pid, start in procs:
        assert not alive(pid, start)


@pytest.mark.parametrize("driver", DRIVERS)
def test_helper_dies_with_its_supervisor(rt, driver):
    """exit-fd (slirp4netns) or PR_SET_PDEATHSIG (pasta) when the supervisor is killed."""
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=net_patch(driver))
    assert rt.hako("run", "-d", "--bundle", bundle, cid).returncode == 0
    st = wait_helper(rt, cid)
    os.kill(st["supervisor"][0], signal.SIGKILL)
    wait_gone(procs_of(st))
    assert rt.hako("delete", "--force", cid).returncode == 0


@pytest.mark.parametrize("phase", ["createRuntime", "createContainer"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_no_helper_after_sigkill_of_hako_during_create(rt, driver, phase):
    """A hook after ours sleeps; hako is SIGKILLed meanwhile. With createRuntime the
    supervisor waits (no helper yet), with createContainer the helper runs."""
    cid = rt.new_id()
    secs = "600" if phase == "createRuntime" else "3"

    def patch(c):
        net_patch(driver)(c)
        c["hooks"] = {phase: [{"path": "/usr/bin/sleep", "args": ["sleep", secs]}]}
    bundle = rt.bundle(["true"], patch=patch)
    p = rt.popen(rt.hako_argv("create", "--bundle", bundle, cid))
    try:
        if phase == "createRuntime":
            st = support.wait_until(lambda: net_state(rt, cid), timeout=20,
                                    what="the network supervisor")
        else:
            st = wait_helper(rt, cid)
        procs = procs_of(st)
        assert all(alive(*x) for x in procs)
        os.kill(p.pid, signal.SIGKILL)  # hako only: its hooks live on
        p.wait(timeout=10)
        wait_gone(procs, timeout=20)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the sleeping hook (same process group)
        except OSError:
            pass
    # the interrupted create recorded what to take back, cgroup or not (rootless v1)
    record = json.loads((rt.state_dir / cid / "creating.json").read_text())
    assert record["extensions"] == ["network"] and record["bundle"] == str(bundle)
    # delete cleans the directory the interrupted create left
    assert rt.hako("delete", "--force", cid).returncode == 0
    assert not (rt.state_dir / cid).exists()
    # not the network's: an interrupted create (rootful) also leaves the container's
    # cgroup behind, which delete of the stateless directory cannot know about
    support.clean_leftovers([x for x in support.leftover_cgroups(rt.session.token)
                             if x.what.rstrip("/").endswith(cid)])


# ------------------------------------------------------------------- errors
def assert_clean_failure(rt, cid: str, r, *needles: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (rt.state_dir / cid).exists()


def test_bad_port_spec(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=net_patch(ports="abc")), cid)
    assert_clean_failure(rt, cid, r, 'io.hako.network.ports: "abc": expected '
                         "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")


@pytest.mark.parametrize("driver", DRIVERS)
def test_taken_port(rt, driver):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        cid = rt.new_id()
        bundle = rt.bundle(["true"], patch=net_patch(driver, ports=f"127.0.0.1:{port}:80"))
        r = rt.hako("create", "--bundle", bundle, cid)
        assert_clean_failure(rt, cid, r, f"host port {port}/tcp is already in use")
    finally:
        s.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_missing_helper_binary(rt, driver):
    bindir = rt.dir / "bin"  # setpriv (rootless mode) but no helper
    bindir.mkdir()
    (bindir / "setpriv").symlink_to("/usr/bin/setpriv")
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=net_patch(driver)), cid,
                env={"PATH": str(bindir)})
    assert_clean_failure(rt, cid, r, f"{driver} not found in PATH")


def test_no_network_namespace(rt):
    def patch(c):
        net_patch("slirp4netns")(c)
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
        for m in c["mounts"]:  # no netns of our own: sysfs cannot be mounted
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys", options=["rbind", "ro"])
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=patch), cid)
    assert_clean_failure(rt, cid, r, "no network namespace of its own")


def test_unknown_driver(rt):
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=net_patch("vde")), cid)
    assert_clean_failure(rt, cid, r, "unknown driver 'vde'")


def test_port_taken_after_the_check_is_a_clean_failure(rt):
    """The port is taken after hako's check: the helper's own error, one line."""
    port = free_port()
    pidfile = rt.dir / "grabber.pid"
    # a createRuntime hook (after ours) grabs the port before the helper starts
    script = (f"import os, socket, time\n"
              f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
              f"pid = os.fork()\n"
              f"if pid: open({str(pidfile)!r}, 'w').write(str(pid))\n"
              f"else:\n"
              f"    fd = os.open('/dev/null', os.O_RDWR)\n"
              f"    for i in (0, 1, 2): os.dup2(fd, i)\n"
              f"    time.sleep(20)\n")

    def patch(c):
        net_patch("pasta", ports=f"127.0.0.1:{port}:80")(c)
        c["hooks"] = {"createRuntime": [{"path": "/usr/bin/python3",
                                         "args": ["python3", "-c", script]}]}
    cid = rt.new_id()
    try:
        r = rt.hako("create", "--bundle", rt.bundle(["true"], patch=patch), cid)
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert r.returncode != 0
    assert "hooks.createContainer[0]" in r.stderr and str(port) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (rt.state_dir / cid).exists()


# ------------------------------------------------------- hako spec, end to end
def test_spec_flags_then_run_serves_and_reaches_host(rt, servers):
    """The issue's "done when": an ordinary user's `hako run` of a bundle asking for
    slirp4netns with a forward serves the host, and reaches host loopback."""
    tcp, _ = servers
    port = free_port()
    d = rt.dir / "s"
    import shutil
    shutil.copytree(rt.session.rootfs(), d / "rootfs", symlinks=True)
    rt.chown(d)
    flags = ["--rootless"] if rt.rootless else []
    r = rt.hako("spec", *flags, "--bundle", d, "--network", "slirp4netns",
                "-p", f"127.0.0.1:{port}:8080", "--allow-host-loopback", root=None)
    assert r.returncode == 0, r.stderr
    cfg = rt.read_config(d)
    assert cfg["annotations"] == {"io.hako.network": "slirp4netns",
                                  "io.hako.network.ports": f"127.0.0.1:{port}:8080",
                                  "io.hako.network.host-loopback": "true"}
    assert {"type": "network"} in cfg["linux"]["namespaces"]
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sh", "-c", f"nc {GATEWAY} {tcp.port} </dev/null > /dev/shm/h; "
                              "nc -ll -p 8080 -e cat /dev/shm/h"]
    rt.write_config(d, cfg)
    rt.chown(d)
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", d, cid).returncode == 0
    assert connect_retry(port) == b"hello-host-tcp\n"
    assert rt.hako("delete", "--force", cid).returncode == 0


def test_spec_rejects_bad_publish(rt):
    d = rt.dir / "s"
    d.mkdir()
    rt.chown(d)
    r = rt.hako("spec", "--bundle", d, "-p", "1:2:3:4", root=None)
    assert r.returncode != 0 and '--publish: "1:2:3:4"' in r.stderr
    assert not (d / "config.json").exists()
