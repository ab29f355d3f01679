"""Host layout detection and cgroupsPath rules, on fake v1 / v2 / hybrid roots."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cgroupfs_fake import FakeCgroupfs  # noqa: E402
from runtime.cgroups import create_manager, manager_from_state, paths  # noqa: E402
from runtime.errors import HakoError  # noqa: E402


@pytest.fixture
def warnings(monkeypatch):
    got: list[str] = []
    from runtime import log
    monkeypatch.setattr(log, "warn", got.append)
    return got


@pytest.mark.parametrize("mode", ["v1", "v2", "hybrid", "none"])
def test_detect_modes(tmp_path, mode):
    fs = FakeCgroupfs(tmp_path, mode)
    h = fs.host()
    assert h.mode == mode
    if mode in ("v1", "hybrid"):
        assert set(h.v1) >= {"cpu", "memory", "devices", "freezer", "name=systemd"}
    if mode in ("v2", "hybrid"):
        assert h.unified is not None
    if mode == "v2":
        assert h.unified.mountpoint == str(fs.root) and h.v1 == {}


def test_comounted_controllers_share_a_directory(tmp_path):
    fs = FakeCgroupfs(tmp_path, "v1", comount_cpu=True)
    h = fs.host()
    assert h.v1["cpu"] is h.v1["cpuacct"]
    m = create_manager({}, "c1", rootless=False, systemd=False, host=h)
    assert m.paths["cpu"] == m.paths["cpuacct"] == f"{fs.root}/cpu,cpuacct/c1"
    assert len(m.dirs()) == len(set(m.dirs()))


def test_mounts_outside_the_root_are_ignored(tmp_path):
    fs = FakeCgroupfs(tmp_path, "v1")
    text = fs.mountinfo + "99 1 0:99 / /elsewhere/memory rw - cgroup cgroup rw,memory\n"
    h = paths.Host.detect(str(fs.root), mountinfo=text, self_cgroup=fs.self_cgroup)
    assert h.v1["memory"].mountpoint == f"{fs.root}/memory"


def test_mountinfo_octal_escapes():
    ms = paths.parse_mountinfo(r"1 0 0:1 / /sys/fs/cg\040x rw - cgroup2 cgroup2 rw" + "\n")
    assert ms[0].mountpoint == "/sys/fs/cg x"


def test_proc_cgroup_parse():
    got = paths.parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/c\n1:name=systemd:/s\n0::/u\n")
    assert got == {"memory": "/a/b", "cpu": "/c", "cpuacct": "/c", "name=systemd": "/s", "": "/u"}


@pytest.mark.parametrize("raw,want", [
    ("/a/b", "/a/b"), ("a/b", "a/b"), ("/a/../../b", "/b"), ("../../x", "x"),
    ("a/./b/", "a/b"), ("//x//y", "/x/y"), ("", ""), ("..", "."), ("/", "/"),
])
def test_clean_path(raw, want):
    assert paths.clean_path(raw) == want


@pytest.mark.parametrize("raw", ["/", "..", ".", "/../.."])
def test_root_cgroup_path_is_refused(raw):
    with pytest.raises(HakoError, match="cgroupsPath"):
        paths.inner_path({"linux": {"cgroupsPath": raw}}, "x")


@pytest.mark.parametrize("mode", ["v1", "hybrid"])
def test_v1_paths_absolute_relative_default(tmp_path, mode):
    fs = FakeCgroupfs(tmp_path, mode, self_cgroup="/outer/me")
    h = fs.host()
    m = create_manager({"linux": {"cgroupsPath": "/abs/c"}}, "id1", rootless=False,
                       systemd=False, host=h)
    assert m.paths["memory"] == f"{fs.root}/memory/abs/c"
    assert m.paths["name=systemd"] == f"{fs.root}/systemd/abs/c"
    m = create_manager({"linux": {"cgroupsPath": "rel/c"}}, "id1", rootless=False,
                       systemd=False, host=h)
    assert m.paths["memory"] == f"{fs.root}/memory/outer/me/rel/c"
    m = create_manager({}, "id1", rootless=False, systemd=False, host=h)
    assert m.paths["pids"] == f"{fs.root}/pids/outer/me/id1"
    if mode == "hybrid":
        # runc's hybrid rule: the v1 rule (below our own cgroup) for the unified tree too
        assert m.unified.path == f"{fs.root}/unified/outer/me/id1"
        assert m.driver == "hybrid"
    else:
        assert m.unified is None and m.driver == "v1"


def test_v2_paths(tmp_path):
    fs = FakeCgroupfs(tmp_path, "v2", self_cgroup="/user.slice/sess.scope")
    h = fs.host()
    m = create_manager({"linux": {"cgroupsPath": "/x/y"}}, "c", rootless=False, systemd=False,
                       host=h)
    assert m.path == f"{fs.root}/x/y" and m.driver == "v2"
    # relative: below the *parent* of our own cgroup (it has processes)
    m = create_manager({}, "c", rootless=False, systemd=False, host=h)
    assert m.path == f"{fs.root}/user.slice/c"


def test_mount_root_of_a_nested_hierarchy(tmp_path):
    fs = FakeCgroupfs(tmp_path, "v1")
    text = fs.mountinfo.replace(f"/ {fs.root}/memory ", f"/docker/abc {fs.root}/memory ")
    cg = fs.self_cgroup.replace(":memory:/", ":memory:/docker/abc/inner")
    h = paths.Host.detect(str(fs.root), mountinfo=text, self_cgroup=cg)
    assert h.own("memory") == "/inner"
    assert h.v1_dir("memory", "c") == f"{fs.root}/memory/inner/c"


def test_systemd_needs_systemd(tmp_path):
    h = FakeCgroupfs(tmp_path, "v2").host(systemd_booted=False)
    with pytest.raises(HakoError, match="systemd is not running"):
        create_manager({"linux": {"cgroupsPath": "system.slice:hako:c"}}, "c", rootless=False,
                       systemd=True, host=h)
    with pytest.raises(HakoError, match="slice:prefix:name"):
        create_manager({"linux": {"cgroupsPath": "/not/systemd"}}, "c", rootless=False,
                       systemd=True, host=h)


def test_systemd_present_is_a_clear_error_not_a_fallback(tmp_path, monkeypatch):
    from runtime.cgroups import sdbus  # systemd "booted" but no bus: no cgroupfs fallback
    monkeypatch.setattr(sdbus, "_addresses", lambda user: [str(tmp_path / "no-bus")])
    h = FakeCgroupfs(tmp_path, "v2").host(systemd_booted=True)
    with pytest.raises(HakoError, match="cannot reach systemd over D-Bus"):
        create_manager({}, "c", rootless=False, systemd=True, host=h)


def test_colons_without_systemd_are_a_plain_name(tmp_path):
    fs = FakeCgroupfs(tmp_path, "v1")
    m = create_manager({"linux": {"cgroupsPath": "system.slice:hako:c"}}, "c", rootless=False,
                       systemd=False, host=fs.host())
    assert m.paths["memory"].endswith("/memory/system.slice:hako:c")


@pytest.mark.parametrize("mode", ["v1", "hybrid"])
def test_rootless_v1_warns_once_and_runs_without(tmp_path, mode, warnings):
    h = FakeCgroupfs(tmp_path, mode).host()
    spec = {"linux": {"resources": {"memory": {"limit": 1 << 20}}}}
    assert create_manager(spec, "c", rootless=True, systemd=False, host=h) is None
    assert len(warnings) == 1
    assert "without a cgroup" in warnings[0] and "NOT enforced" in warnings[0]


def test_rootless_v2_without_delegation(tmp_path, warnings, monkeypatch):
    fs = FakeCgroupfs(tmp_path, "v2", self_cgroup="/user.slice/s.scope")
    monkeypatch.setattr("os.access", lambda p, m: False)
    assert create_manager({}, "c", rootless=True, systemd=False, host=fs.host()) is None
    assert not warnings  # nothing asked for is lost: a debug line only
    spec = {"linux": {"resources": {"pids": {"limit": 5}}}}
    assert create_manager(spec, "c", rootless=True, systemd=False, host=fs.host()) is None
    assert len(warnings) == 1 and "delegated" in warnings[0]
    assert "NOT enforced" in warnings[0]


def test_rootless_v2_with_delegation(tmp_path, warnings):
    # the temp dir is ours: writable, like a delegated subtree
    fs = FakeCgroupfs(tmp_path, "v2", self_cgroup="/user.slice/s.scope")
    m = create_manager({}, "c", rootless=True, systemd=False, host=fs.host())
    assert m is not None and m.rootless and not warnings


def test_no_cgroupfs(tmp_path, warnings):
    h = FakeCgroupfs(tmp_path, "none").host()
    with pytest.raises(HakoError, match="no cgroup filesystem"):
        create_manager({}, "c", rootless=False, systemd=False, host=h)
    assert create_manager({}, "c", rootless=True, systemd=False, host=h) is None


@pytest.mark.parametrize("mode", ["v1", "v2", "hybrid"])
def test_state_round_trip(tmp_path, mode):
    import json
    fs = FakeCgroupfs(tmp_path, mode)
    spec = {"linux": {"cgroupsPath": "/a", "devices": [{"path": "/dev/null", "type": "c",
                                                        "major": 1, "minor": 3}]}}
    m = create_manager(spec, "c", rootless=False, systemd=False, host=fs.host())
    d = json.loads(json.dumps(m.to_state()))
    m2 = manager_from_state(d)
    assert type(m2) is type(m) and m2.dirs() == m.dirs() and m2.driver == m.driver
    assert m2.dev_paths == ["/dev/null"] and m2.cid == "c"
    with pytest.raises(HakoError, match="unknown cgroup driver"):
        manager_from_state({"driver": "v3"})


def test_real_host_detection_is_cheap_and_sane():
    h = paths.Host.detect()
    assert h.mode in ("v1", "v2", "hybrid", "none")
