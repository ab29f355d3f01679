"""A fake cgroupfs in a temporary directory, laid out like a v1, v2 or hybrid host.

``FakeCgroupfs(tmp, mode)`` builds the mount points and their root files, a
mountinfo text and a /proc/self/cgroup text for ``paths.Host``, and -- via
``install(monkeypatch)`` -- replaces runtime.cgroups.fsutil's mkdir/rmdir with
a "kernel" that fills a new cgroup directory with its controller's files and
lets rmdir remove them, so the drivers run unchanged against it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime.cgroups import devices, fsutil, paths

BIG = "9223372036854771712"

V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0",
            "cpu.idle": "0",
            "cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 1500\n"},
    "cpuacct": {"cpuacct.usage": "123456789", "cpuacct.stat": "user 10\nsystem 5\n",
                "cpuacct.usage_percpu": "100 200 \n",
                "cpuacct.usage_all": "cpu user system\n0 60 40\n1 150 50\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpu_exclusive": "0",
               "cpuset.mem_hardwall": "0", "cpuset.mem_exclusive": "0",
               "cpuset.memory_migrate": "0", "cpuset.memory_spread_page": "0",
               "cpuset.memory_spread_slab": "0", "cpuset.memory_pressure": "0",
               "cpuset.sched_load_balance": "1", "cpuset.sched_relax_domain_level": "-1"},
    "memory": {"memory.limit_in_bytes": BIG, "memory.memsw.limit_in_bytes": BIG,
               "memory.soft_limit_in_bytes": BIG, "memory.swappiness": "60",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
               "memory.use_hierarchy": "1", "memory.usage_in_bytes": "4096",
               "memory.max_usage_in_bytes": "8192", "memory.failcnt": "0",
               "memory.memsw.usage_in_bytes": "4096", "memory.memsw.max_usage_in_bytes": "8192",
               "memory.memsw.failcnt": "0", "memory.kmem.limit_in_bytes": BIG,
               "memory.kmem.usage_in_bytes": "0", "memory.kmem.max_usage_in_bytes": "0",
               "memory.kmem.failcnt": "0", "memory.kmem.tcp.limit_in_bytes": BIG,
               "memory.kmem.tcp.usage_in_bytes": "0", "memory.kmem.tcp.max_usage_in_bytes": "0",
               "memory.kmem.tcp.failcnt": "0", "cgroup.event_control": "",
               "memory.stat": "cache 100\nrss 200\ntotal_rss 200\n"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
              "blkio.throttle.io_serviced": "8:0 Read 3\n8:0 Write 4\nTotal 7\n",
              "blkio.throttle.io_service_bytes": "8:0 Read 300\n8:0 Write 400\nTotal 700\n"},
    "pids": {"pids.max": "max", "pids.current": "1"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": BIG, "hugetlb.2MB.usage_in_bytes": "0",
                "hugetlb.2MB.max_usage_in_bytes": "0", "hugetlb.2MB.failcnt": "0"},
    "net_cls": {"net_cls.classid": "0"},
    "net_prio": {"net_prio.ifpriomap": ""},
    "name=systemd": {},
}

V2_FILES: dict[str, dict[str, str]] = {
    "": {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
         "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.type": "domain", "cgroup.kill": "",
         "cgroup.threads": ""},
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.low": "0",
               "memory.high": "max",
               "memory.current": "4096", "memory.peak": "8192", "memory.swap.current": "0",
               "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
               "memory.stat": "anon 100\nfile 50\n"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0",
            "cpu.idle": "0",
            "cpu.stat": "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 0\n"
                        "nr_throttled 0\nthrottled_usec 0\n"},
    "io": {"io.weight": "default 100", "io.max": "", "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 "
                                                             "wios=2 dbytes=0 dios=0\n"},
    "pids": {"pids.max": "max", "pids.current": "1"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.effective": "0-1",
               "cpuset.mems.effective": "0"},
    "hugetlb": {"hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0",
                "hugetlb.2MB.events": "max 0\n"},
}


class FakeCgroupfs:
    def __init__(self, base: Path, mode: str, *, v1: tuple[str, ...] | None = None,
                 v2_controllers: tuple[str, ...] = ("cpuset", "cpu", "io", "memory", "hugetlb",
                                                    "pids"),
                 self_cgroup: str = "/", comount_cpu: bool = False) -> None:
        self.root = base / "cgroup"
        self.mode = mode
        self.v2_controllers = v2_controllers
        lines = []
        mid = 100
        self.mounts: dict[str, Path] = {}  # controller -> mount point
        if mode in ("v1", "hybrid"):
            self.root.mkdir(parents=True)
            names = v1 or ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio",
                           "pids", "name=systemd")
            groups: list[tuple[str, ...]] = []
            if comount_cpu and "cpu" in names and "cpuacct" in names:
                groups.append(("cpu", "cpuacct"))
                names = tuple(n for n in names if n not in ("cpu", "cpuacct"))
            groups += [(n,) for n in names]
            for g in groups:
                dirname = "systemd" if g == ("name=systemd",) else ",".join(g)
                mp = self.root / dirname
                mp.mkdir()
                for c in g:
                    self.mounts[c] = mp
                    self._fill_v1(mp, g)
                lines.append(f"{mid} 30 0:{mid} / {mp} rw,relatime - cgroup cgroup "
                             f"rw,{','.join(g)}")
                mid += 1
            if mode == "hybrid":
                mp = self.root / "unified"
                mp.mkdir()
                self.mounts[""] = mp
                self._fill_v2(mp, root=True)
                lines.append(f"{mid} 30 0:{mid} / {mp} rw,relatime - cgroup2 cgroup2 rw")
        elif mode == "v2":
            self.root.mkdir(parents=True)
            self.mounts[""] = self.root
            self._fill_v2(self.root, root=True)
            lines.append(f"{mid} 30 0:{mid} / {self.root} rw,relatime - cgroup2 cgroup2 rw")
        else:
            self.root.mkdir(parents=True)
        lines.insert(0, f"30 1 0:29 / {self.root} rw - tmpfs tmpfs rw,mode=755")
        self.mountinfo = "\n".join(lines) + "\n"
        cg = []
        for i, c in enumerate(sorted(k for k in self.mounts if k)):
            cg.append(f"{i + 1}:{c}:{self_cgroup}")
        cg.append(f"0::{self_cgroup}")
        self.self_cgroup = "\n".join(cg) + "\n"
        if self_cgroup != "/":
            for c, mp in self.mounts.items():
                d = mp
                for part in self_cgroup.strip("/").split("/"):
                    d = d / part
                    if not d.exists():
                        d.mkdir()
                        self._populate(d)

    def host(self, *, systemd_booted: bool = False) -> paths.Host:
        return paths.Host.detect(str(self.root), mountinfo=self.mountinfo,
                                 self_cgroup=self.self_cgroup, systemd_booted=systemd_booted)

    # -- the fake kernel -----------------------------------------------------------
    def _fill_v1(self, d: Path, ctrls: tuple[str, ...]) -> None:
        (d / "cgroup.procs").write_text("")
        (d / "tasks").write_text("")
        for c in ctrls:
            for name, value in V1_FILES.get(c, {}).items():
                (d / name).write_text(value)
        if "cpuset" in ctrls and d.parent == self.root:
            (d / "cpuset.cpus").write_text("0-1\n")
            (d / "cpuset.mems").write_text("0\n")

    def _fill_v2(self, d: Path, *, root: bool = False) -> None:
        for name, value in V2_FILES[""].items():
            (d / name).write_text(value)
        (d / "cgroup.controllers").write_text(" ".join(self.v2_controllers) + "\n")
        if root:
            for n in ("cgroup.freeze", "cgroup.events", "cgroup.type", "cgroup.kill"):
                (d / n).unlink()
            return
        for c in self.v2_controllers:
            for name, value in V2_FILES.get(c, {}).items():
                (d / name).write_text(value)

    def _populate(self, d: Path) -> None:
        for c, mp in self.mounts.items():
            if d == mp or mp not in d.parents:
                continue
            if c == "":
                self._fill_v2(d)
            else:
                ctrls = tuple(k for k, m in self.mounts.items() if m == mp and k)
                self._fill_v1(d, ctrls)
            return

    def mkdir(self, path, mode=0o777) -> None:
        os.mkdir(path, mode)
        self._populate(Path(path))

    def rmdir(self, path) -> None:
        p = Path(path)
        if any(e.is_dir() for e in p.iterdir()):
            raise OSError(39, "Directory not empty", str(path))
        if (p / "cgroup.procs").exists() and (p / "cgroup.procs").read_text().strip():
            raise OSError(16, "Device or resource busy", str(path))
        shutil.rmtree(p)

    def install(self, monkeypatch) -> "FakeCgroupfs":
        monkeypatch.setattr(fsutil, "_mkdir", self.mkdir)
        monkeypatch.setattr(fsutil, "_rmdir", self.rmdir)
        monkeypatch.setattr(devices, "VERIFY", False)
        return self
