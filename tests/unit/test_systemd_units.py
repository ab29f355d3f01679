"""The systemd driver without a bus: unit names, slice expansion, properties, state."""

from __future__ import annotations

import pytest

from runtime.cgroups import sdunit
from runtime.cgroups.sdbus import host_uid, _addresses
from runtime.errors import HakoError


@pytest.mark.parametrize("raw,rootless,v2,want", [
    ("", False, False, ("system.slice", "runc-c1.scope", "/system.slice")),
    ("", True, True, ("user.slice", "runc-c1.scope", "/user.slice")),
    ("", True, False, ("system.slice", "runc-c1.scope", "/system.slice")),
    ("machine.slice:libpod:abc", False, True, ("machine.slice", "libpod-abc.scope",
                                               "/machine.slice")),
    (":docker:abc", False, True, ("system.slice", "docker-abc.scope", "/system.slice")),
    ("-:p:n", False, True, ("-.slice", "p-n.scope", "/")),
    ("a-b-c.slice::n", False, True, ("a-b-c.slice", "n.scope", "/a.slice/a-b.slice/a-b-c.slice")),
    ("kubepods-besteffort-pod1a2b.slice:cri-containerd:ff", False, True,
     ("kubepods-besteffort-pod1a2b.slice", "cri-containerd-ff.scope",
      "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice")),
    ("system.slice:p:", False, True, ("system.slice", "p-c1.scope", "/system.slice")),
])
def test_parse_path(raw, rootless, v2, want):
    u = sdunit.parse_path(raw, "c1", rootless=rootless, v2=v2)
    assert (u.slice, u.name, u.slice_path) == want
    assert u.cgroup == (want[2].rstrip("/") + "/" + want[1])


@pytest.mark.parametrize("raw,why", [
    ("/abs/path", "slice:prefix:name"),
    ("a:b", "slice:prefix:name"),
    ("a:b:c:d", "slice:prefix:name"),
    ("x:p:n", "must end in .slice"),
    ("a--b.slice:p:n", "empty part"),
    ("-a.slice:p:n", "empty part"),
    ("a-.slice:p:n", "empty part"),
    ("a/b.slice:p:n", "no '/'"),
    ("system.slice:p:pod.slice", "slice unit"),
    ("system.slice:p/q:n", "may not contain '/'"),
    ("system.slice:p:n m", "does not accept"),
])
def test_bad_paths(raw, why):
    with pytest.raises(HakoError) as e:
        sdunit.parse_path(raw, "c1", rootless=False, v2=True)
    assert why in str(e.value) and "cgroupsPath" in str(e.value)
    assert "\n" not in str(e.value)


def test_cpuset_bits():
    assert sdunit.cpuset_bits("0", "cpu.cpus") == b"\x01"
    assert sdunit.cpuset_bits("0-3,9", "cpu.cpus") == b"\x0f\x02"
    assert sdunit.cpuset_bits("8", "cpu.cpus") == b"\x00\x01"
    with pytest.raises(HakoError, match="cpu.cpus"):
        sdunit.cpuset_bits("3-1", "cpu.cpus")
    with pytest.raises(HakoError, match="cpu.mems"):
        sdunit.cpuset_bits("x", "cpu.mems")


def test_quota_rounds_up_to_10ms_as_runc():
    assert sdunit.cpu_quota_per_sec(50000, 100000) == 500000
    assert sdunit.cpu_quota_per_sec(12345, 100000) == 130000
    assert sdunit.cpu_quota_per_sec(-1, 100000) == sdunit.UINT64_MAX
    assert sdunit.cpu_quota_per_sec(20000, 0) == 200000  # default period


def _props(res, v2):
    return dict(sdunit.resource_properties(res, v2=v2))


def test_v1_properties():
    p = _props({"memory": {"limit": 1 << 26, "swappiness": 5}, "cpu": {"shares": 512,
                "quota": 50000, "period": 100000, "cpus": "0"}, "pids": {"limit": -1},
                "blockIO": {"weight": 300}}, v2=False)
    assert p == {"MemoryLimit": ("t", 1 << 26), "CPUShares": ("t", 512),
                 "BlockIOWeight": ("t", 300), "CPUQuotaPerSecUSec": ("t", 500000),
                 "CPUQuotaPeriodUSec": ("t", 100000), "TasksMax": ("t", sdunit.UINT64_MAX)}


def test_v2_properties():
    p = _props({"memory": {"limit": 1 << 26, "reservation": 1 << 20, "swap": 1 << 27},
                "cpu": {"shares": 1024, "cpus": "0-1", "mems": "0"}, "pids": {"limit": 7}}, v2=True)
    assert p["MemoryMax"] == ("t", 1 << 26)
    assert p["MemoryLow"] == ("t", 1 << 20)
    assert p["MemorySwapMax"] == ("t", (1 << 27) - (1 << 26))  # v2 swap is swap alone
    assert p["CPUWeight"] == ("t", 100)
    assert p["AllowedCPUs"] == ("ay", b"\x03") and p["AllowedMemoryNodes"] == ("ay", b"\x01")
    assert p["TasksMax"] == ("t", 7)
    assert "MemoryLimit" not in p and "CPUShares" not in p
    assert _props({}, v2=True) == {}


PROC_DEVICES = "Character devices:\n  1 mem\n  5 /dev/tty\n136 pts\n 10 misc\n\nBlock devices:\n  8 sd\n"


def test_device_properties_default_rules():
    props = dict(sdunit.device_properties({}, [], proc_devices=PROC_DEVICES))
    assert props["DevicePolicy"] == ("s", "strict")
    allow = dict(props["DeviceAllow"][1])
    assert allow["/dev/char/1:3"] == "rwm"      # /dev/null
    assert allow["char-pts"] == "rwm"           # c 136:* -> the driver's name
    assert allow["/dev/char/5:2"] == "rwm"      # /dev/ptmx
    assert allow["char-*"] == "m"               # mknod of any char device (runc's default)


def test_device_properties_allow_all_is_auto():
    res = {"devices": [{"allow": True, "access": "rwm"}]}
    props = dict(sdunit.device_properties(res, [], proc_devices=PROC_DEVICES))
    assert props["DevicePolicy"] == ("s", "auto") and props["DeviceAllow"] == ("a(ss)", [])


def test_scope_properties():
    u = sdunit.parse_path("machine.slice:libpod:x", "x", rootless=False, v2=True)
    props = dict(sdunit.scope_properties(u, "x", 42, {"pids": {"limit": 3}}, [], v2=True,
                                         devices=False))
    assert props["PIDs"] == ("au", [42]) and props["Delegate"] == ("b", True)
    assert props["Slice"] == ("s", "machine.slice") and props["TasksMax"] == ("t", 3)
    assert "IOAccounting" in props and "DevicePolicy" not in props


def test_state_round_trip():
    from runtime.cgroups import manager_from_state
    from runtime.cgroups.systemd import SystemdManager
    from runtime.cgroups.v1 import V1Manager
    inner = V1Manager("c", {"memory": "/sys/fs/cgroup/memory/system.slice/runc-c.scope"},
                      unified=("/sys/fs/cgroup/unified",
                               "/sys/fs/cgroup/unified/system.slice/runc-c.scope"))
    m = SystemdManager("c", "runc-c.scope", "system.slice", inner, user=False, mode="hybrid",
                       cgroup="/system.slice/runc-c.scope")
    st = m.to_state()
    assert st["driver"] == "systemd" and st["inner"] == "hybrid"
    assert st["paths"]["memory"].endswith("runc-c.scope")  # create's cgroup mount reads it
    m2 = manager_from_state(st)
    assert isinstance(m2, SystemdManager) and isinstance(m2.inner, V1Manager)
    assert m2.unit == "runc-c.scope" and m2.dirs() == m.dirs()
    assert m2.paths == inner.paths  # the OOM notifier looks here


def test_bus_addresses(monkeypatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/x/sock")
    assert _addresses(False) == ["/x/sock", "/run/dbus/system_bus_socket", "/run/systemd/private"]
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/5")
    assert _addresses(True) == ["/run/user/5/bus", "/run/user/5/systemd/private"]
    assert host_uid() >= 0


def test_verbs_without_the_bus_do_not_import_it(tmp_path):
    """state/kill/ps/pause go through the scope's files: rebuilding a systemd
    manager from state.json and using it loads neither jeepney nor the client."""
    import subprocess
    import sys
    from pathlib import Path
    d = tmp_path / "scope"
    d.mkdir()
    (d / "cgroup.procs").write_text("")
    (d / "cgroup.freeze").write_text("0\n")
    import json
    st = {"hako": {"cgroup": {"driver": "systemd", "inner": "v2", "id": "c",
                              "mount": str(tmp_path), "path": str(d), "unit": "runc-c.scope",
                              "slice": "system.slice", "user": False, "mode": "v2",
                              "cgroup": "/scope"}}}
    code = (
        "import sys, json\n"
        "from runtime.cgroups.ops import manager_of, is_paused\n"
        f"st = json.loads({json.dumps(st)!r})\n"
        "m = manager_of(st); is_paused(st); m.pids(); m.kill_all(0); m.exists()\n"
        "print([n for n in ('jeepney', 'runtime.cgroups.sdbus') if n in sys.modules])\n")
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, "
                        f"{str(repo)!r}); exec({code!r})"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
