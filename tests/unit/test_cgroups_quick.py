"""runtime/cgroups/quick.py: the quick removal ``delete`` tries first, and
what ``exec`` moves its process into.

It must only ever succeed where the driver's own destroy would have had
nothing else to do, and leave every other case untouched to the driver."""

from __future__ import annotations

from runtime.cgroups import quick
from runtime.cgroups.quick import remove_empty


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


def test_exec_joins_every_directory_of_a_cgroupfs_record(tmp_path, monkeypatch):
    from runtime.cgroups import fsutil
    written = []
    monkeypatch.setattr(fsutil, "write_pid", lambda d, pid: written.append((d, pid)))
    record = {"driver": "hybrid", "paths": {"cpu": "/c/cpu", "cpuacct": "/c/cpu", "pids": "/c/p"},
              "unified": ["/u", "/u/x"]}
    j = quick.joiner({"hako": {"cgroup": record}})
    j.enter(42)
    assert written == [("/c/cpu", 42), ("/c/p", 42), ("/u/x", 42)]
    assert quick.joiner({"hako": {}}) is None


def test_exec_leaves_other_drivers_to_their_manager(monkeypatch):
    import runtime.cgroups
    made = []
    monkeypatch.setattr(runtime.cgroups, "manager_from_state", lambda d: made.append(d) or "mgr")
    record = {"driver": "systemd", "inner": "v2", "path": "/sys/fs/cgroup/x.scope"}
    assert quick.joiner({"hako": {"cgroup": record}}) == "mgr"
    assert quick.joiner({"hako": {"cgroup": {"driver": "v2", "path": "relative"}}}) == "mgr"
    assert made == [record, {"driver": "v2", "path": "relative"}]


def test_a_record_splits_into_v1_dirs_and_the_cgroup2_one():
    hybrid = {"driver": "hybrid", "paths": {"cpu": "/c/cpu", "cpuacct": "/c/cpu", "pids": "/c/p"},
              "unified": ["/u", "/u/x"]}
    j = quick.Joiner.from_record(hybrid)
    assert (j.v1, j.unified, j.dirs) == (["/c/cpu", "/c/p"], "/u/x", ["/c/cpu", "/c/p", "/u/x"])
    j = quick.Joiner.from_record({"driver": "v1", "paths": {"pids": "/c/p"}})
    assert (j.v1, j.unified) == (["/c/p"], None)
    j = quick.Joiner.from_record({"driver": "v2", "path": "/g/x"})
    assert (j.v1, j.unified) == ([], "/g/x")
    for other in ({"driver": "systemd", "inner": "v2", "path": "/g/x.scope"}, None, {},
                  {"driver": "v2", "path": "rel"}, {"driver": "v1", "paths": {"pids": "rel"}},
                  {"driver": "hybrid", "paths": {}, "unified": ["/u", "rel"]}):
        assert quick.Joiner.from_record(other) is None
    assert quick.dirs_of(hybrid) == ["/c/cpu", "/c/p", "/u/x"]


def test_the_v1_driver_lists_its_dirs_as_the_record_does():
    from runtime.cgroups.v1 import V1Manager
    m = V1Manager.__new__(V1Manager)
    m.paths = {"cpu": "/c/cpu", "cpuacct": "/c/cpu", "pids": "/c/p"}
    m.unified = None
    assert m.dirs() == quick.hierarchy_dirs(m.paths, None) == ["/c/cpu", "/c/p"]


def test_joining_oneself_writes_tasks_in_v1_and_procs_in_cgroup2(tmp_path, monkeypatch):
    from runtime.cgroups import fsutil
    log: list = []
    monkeypatch.setattr(fsutil, "WRITE_LOG", log)
    dirs = []
    for n in ("a", "b", "u"):
        (tmp_path / n).mkdir()
        for f in ("tasks", "cgroup.procs"):
            (tmp_path / n / f).write_text("")
        dirs.append(str(tmp_path / n))
    j = quick.Joiner(dirs[:2], dirs[2])
    j.enter_self(born_inside=True)  # clone3 put it in the cgroup2 one already
    assert log == [(f"{dirs[0]}/tasks", "0"), (f"{dirs[1]}/tasks", "0")]
    log.clear()
    j.enter_self(born_inside=False)
    assert log == [(f"{dirs[0]}/tasks", "0"), (f"{dirs[1]}/tasks", "0"),
                   (f"{dirs[2]}/cgroup.procs", "0")]


def test_the_cgroup2_dir_is_opened_o_path_and_cloexec(tmp_path):
    import fcntl
    import os
    assert quick.Joiner(["/c"], None).open_unified() == -1
    assert quick.Joiner([], str(tmp_path / "gone")).open_unified() == -1
    fd = quick.Joiner([], str(tmp_path)).open_unified()
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH
        assert os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path)
    finally:
        os.close(fd)
