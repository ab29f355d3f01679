"""runtime/cgroups/teardown.py: the quick removal ``delete`` tries first.

It must only ever succeed where the driver's own destroy would have had
nothing else to do, and leave every other case untouched to the driver."""

from __future__ import annotations

from runtime.cgroups.teardown import remove_empty


def test_empty_v2_cgroup_is_removed(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    assert remove_empty({"driver": "v2", "path": str(d)}) is True
    assert not d.exists()


def test_already_gone_counts_as_removed(tmp_path):
    assert remove_empty({"driver": "v2", "path": str(tmp_path / "never")}) is True


def test_v1_every_hierarchy_and_the_unified_one(tmp_path):
    dirs = {c: tmp_path / c / "ctr" for c in ("cpu", "memory", "pids")}
    for d in dirs.values():
        d.mkdir(parents=True)
    uni = tmp_path / "unified" / "ctr"
    uni.mkdir(parents=True)
    shared = {"cpu": str(dirs["cpu"]), "cpuacct": str(dirs["cpu"]),  # co-mounted: one dir
              "memory": str(dirs["memory"]), "pids": str(dirs["pids"])}
    assert remove_empty({"driver": "hybrid", "paths": shared,
                         "unified": [str(tmp_path / "unified"), str(uni)]}) is True
    assert not any(d.exists() for d in (*dirs.values(), uni))


def test_busy_cgroup_is_left_to_the_driver(tmp_path):
    """A sub-cgroup (or, on a cgroupfs, a process) makes rmdir fail: not done,
    and nothing below is touched."""
    d = tmp_path / "c"
    (d / "sub").mkdir(parents=True)
    assert remove_empty({"driver": "v2", "path": str(d)}) is False
    assert (d / "sub").is_dir()


def test_other_drivers_and_odd_records_are_left_to_the_driver(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for record in ({"driver": "systemd", "inner": "v2", "path": str(d)}, {"driver": "v2"},
                   {"driver": "v2", "path": "relative/path"}, {}, {"driver": "v3"}):
        assert remove_empty(record) is False
    assert d.is_dir()
