"""cgroup v1 driver (also the hybrid driver: v1 controllers plus the unified tree).

One directory per hierarchy, the same relative path in each (runc's fs
driver). On a hybrid host the container also gets the same path in the
cgroup2 hierarchy (runc does this too), so cgroup2-aware tools -- and the
kernel's cgroup.kill -- see its processes there; a limit whose controller is
bound to the unified hierarchy only (hugetlb on these hosts) is set there.
"""

from __future__ import annotations

import errno
import os

from runtime.cgroups import fsutil
from runtime.cgroups.base import FREEZE_TIMEOUT, Manager, needed_controllers, nz, warn
from runtime.cgroups.quick import hierarchy_dirs
from runtime.cgroups.v2 import V2_NAME, V2Dir, controllers_of
from runtime.errors import HakoError

# The order runc's fs driver applies subsystems in.
ORDER = ("cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb",
         "net_cls", "net_prio", "perf_event", "freezer", "rdma", "misc")


class V1Manager(Manager):
    driver = "v1"

    def __init__(self, cid: str, paths: dict[str, str], *, unified: tuple[str, str] | None = None,
                 rootless: bool = False, resources: dict | None = None,
                 dev_paths: list[str] | None = None) -> None:
        """``paths``: {controller: directory} for every mounted hierarchy
        (co-mounted controllers share a directory); ``unified``: (cgroup2
        mount point, directory) on a hybrid host."""
        super().__init__(cid, rootless=rootless, resources=resources, dev_paths=dev_paths)
        self.paths = dict(paths)
        self.unified = V2Dir(*unified) if unified else None
        if unified:
            self.driver = "hybrid"

    def dirs(self) -> list[str]:
        return hierarchy_dirs(self.paths, self.unified.path if self.unified is not None else None)

    def _primary(self) -> str | None:
        for c in ("pids", "freezer", "memory", "devices", "cpu", "cpuacct", "blkio", "cpuset"):
            if c in self.paths:
                return self.paths[c]
        return next(iter(self.paths.values()), None)

    # -- lifecycle ---------------------------------------------------------------
    def create(self) -> None:
        made: list[str] = []
        try:
            for d in self.dirs():
                if d == self.paths.get("cpuset"):
                    continue
                made += fsutil.mkdir_p(d)
            if "cpuset" in self.paths:
                made += self._cpuset_create(self.paths["cpuset"])
        except BaseException:
            for d in reversed(made):
                fsutil.rmdir_tree(d)
            raise

    def _cpuset_create(self, path: str) -> list[str]:
        """A new cpuset cgroup has empty cpus/mems and refuses tasks: copy the
        parent's into every level we create (runc's cpusetEnsureParent)."""
        made = fsutil.mkdir_p(path)
        chain = []
        p = path
        while p not in ("/", "") and os.path.exists(os.path.join(os.path.dirname(p),
                                                                 "cpuset.cpus")):
            chain.append(p)
            p = os.path.dirname(p)
        for d in reversed(chain):
            parent = os.path.dirname(d)
            for f in ("cpuset.cpus", "cpuset.mems"):
                mine = (fsutil.read_or(d, f, "") or "").strip()
                if not mine:
                    value = (fsutil.read_or(parent, f, "") or "").strip()
                    fsutil.write(d, f, value)
        return made

    def enter(self, pid: int) -> None:
        for d in self.dirs():
            fsutil.write_pid(d, pid)

    def pids(self) -> list[int]:
        p = self._primary()
        out: list[int] = []
        if p is None:
            return self.unified.pids() if self.unified else []
        for dirpath, _dirs, _files in os.walk(p):
            try:
                out.extend(fsutil.read_pids(dirpath))
            except OSError:
                continue
        return out

    # -- freezer -----------------------------------------------------------------
    def has_freezer(self) -> bool:
        return "freezer" in self.paths

    def _freezer(self, verb: str) -> str:
        if "freezer" not in self.paths:
            raise HakoError(f"cannot {verb}: the freezer cgroup controller is not mounted on "
                            "this host")
        return self.paths["freezer"]

    def freeze(self) -> None:
        """FROZEN, read back until the kernel says FROZEN. A v1 freezer can
        stay FREEZING while tasks keep forking, so (as runc) retry, thawing
        briefly now and then; on failure leave it THAWED, never half-frozen."""
        import time
        path = self._freezer("pause")
        deadline = time.monotonic() + FREEZE_TIMEOUT
        ok = False
        try:
            i = 0
            while time.monotonic() < deadline:
                if i % 50 == 49:
                    fsutil.write(path, "freezer.state", "THAWED")
                    time.sleep(0.01)
                fsutil.write(path, "freezer.state", "FROZEN", what="pause")
                if i % 25 == 24:
                    time.sleep(0.001)
                state = fsutil.read(path, "freezer.state").strip()
                if state == "FROZEN":
                    ok = True
                    return
                if state != "FREEZING":
                    raise HakoError(f"pause: unexpected freezer state {state!r} in {path}")
                i += 1
            raise HakoError(f"pause: {path} did not freeze within {FREEZE_TIMEOUT:g}s")
        finally:
            if not ok:
                try:
                    fsutil.write(path, "freezer.state", "THAWED")
                except HakoError:
                    pass

    def thaw(self) -> None:
        path = self._freezer("resume")
        fsutil.write(path, "freezer.state", "THAWED", what="resume")

    def is_frozen(self) -> bool:
        """FROZEN because of *this* cgroup (freezer.self_freezing), not a parent."""
        path = self.paths.get("freezer")
        if path is None:
            return False
        import time
        for _ in range(1000):
            state = fsutil.read_or(path, "freezer.state")
            if state is None:
                return False
            state = state.strip()
            if state == "FREEZING":
                time.sleep(0.001)
                continue
            if state != "FROZEN":
                return False
            self_freezing = fsutil.read_or(path, "freezer.self_freezing")
            return self_freezing is None or self_freezing.strip() == "1"
        return False

    def _cgroup_kill(self) -> bool:
        return self.unified is not None and self.unified.kill()

    # -- resources -----------------------------------------------------------------
    def _unified_only(self) -> set[str]:
        """Controllers a hybrid host binds to the unified hierarchy only."""
        if self.unified is None:
            return set()
        return controllers_of(self.unified.mount) - {V2_NAME.get(c, c) for c in self.paths}

    def apply(self, resources: dict, *, skip_devices: bool = False) -> None:
        res = resources or {}
        # check every controller first: nothing is written for a config that
        # cannot be honoured
        via_unified: set[str] = set()
        uni_only = self._unified_only()
        for field, ctrl in needed_controllers(res):
            if ctrl in self.paths:
                continue
            if V2_NAME.get(ctrl) in uni_only:
                via_unified.add(V2_NAME[ctrl])
                continue
            raise HakoError(f"linux.resources.{field}: the {ctrl} cgroup controller is not "
                            "mounted on this host")
        if res.get("unified"):
            if self.unified is None:
                raise HakoError("linux.resources.unified: cgroup v2 key/values cannot be used "
                                "on a cgroup v1 host")
            for key in res["unified"]:
                ctrl = key.partition(".")[0]
                if ctrl in uni_only:
                    via_unified.add(ctrl)
        if via_unified:
            assert self.unified is not None
            self.unified.enable(via_unified)
            self.unified.require(res, only=via_unified)
        if not skip_devices and not self.rootless:
            if "devices" not in self.paths:
                raise HakoError("the devices cgroup controller is not mounted: refusing to run "
                                "a container without device access control")
        for ctrl in ORDER:
            path = self.paths.get(ctrl)
            if path is None:
                continue
            if ctrl == "devices":
                if not skip_devices:
                    from runtime.cgroups import devices
                    devices.apply_v1(path, devices.rules_for(res, self.dev_paths))
            else:
                setter = getattr(self, "_set_" + ctrl, None)
                if setter is not None:
                    setter(path, res)
        if "hugetlb" in via_unified and res.get("hugepageLimits"):
            assert self.unified is not None
            self.unified.set_hugetlb(res["hugepageLimits"])
        if res.get("unified"):
            assert self.unified is not None
            self.unified.set_unified(res["unified"], allowed=uni_only)
        self.resources = res

    def _set_memory(self, p: str, res: dict) -> None:
        mem = res.get("memory") or {}
        limit = mem.get("limit") or 0
        swap = mem.get("swap") or 0
        if mem.get("checkBeforeUpdate") and (limit > 0 or swap > 0):
            from runtime.cgroups.v2 import _check_usage
            _check_usage(p, "memory.usage_in_bytes", limit, swap)
        # unlimited memory and no swap given: unlimited swap too
        memsw = os.path.join(p, "memory.memsw.limit_in_bytes")
        if limit == -1 and swap == 0 and os.path.exists(memsw):
            swap = -1
        if limit and swap:
            # the kernel wants memory <= memory+swap at every step: raise the
            # one that grows first
            cur = fsutil.read_uint(p, "memory.limit_in_bytes")
            if swap == -1 or cur < swap:
                self._write_swap(p, swap)
                self._write_limit(p, limit)
                limit = swap = 0
        if limit:
            self._write_limit(p, limit)
        if swap:
            self._write_swap(p, swap)
        if nz(mem.get("kernel")):
            self._kmem(p, "memory.kmem.limit_in_bytes", mem["kernel"], "kernel")
        if nz(mem.get("kernelTCP")):
            self._kmem(p, "memory.kmem.tcp.limit_in_bytes", mem["kernelTCP"], "kernelTCP")
        if nz(mem.get("reservation")):
            fsutil.write(p, "memory.soft_limit_in_bytes", mem["reservation"],
                         what="linux.resources.memory.reservation")
        if mem.get("disableOOMKiller"):
            fsutil.write(p, "memory.oom_control", "1",
                         what="linux.resources.memory.disableOOMKiller")
        sw = mem.get("swappiness")
        if sw is not None and sw != -1:
            if not 0 <= sw <= 100:
                raise HakoError(f"linux.resources.memory.swappiness: invalid value {sw} "
                                "(0 to 100)")
            fsutil.write(p, "memory.swappiness", sw, what="linux.resources.memory.swappiness")
        uh = mem.get("useHierarchy")
        if uh is not None:
            cur = (fsutil.read_or(p, "memory.use_hierarchy", "") or "").strip()
            if cur != ("1" if uh else "0"):
                try:
                    fsutil.write(p, "memory.use_hierarchy", "1" if uh else "0")
                except fsutil.CgroupFileError as e:
                    raise HakoError("linux.resources.memory.useHierarchy: this kernel does not "
                                    f"allow {str(uh).lower()} ({e.args[0]})") from None

    def _write_limit(self, p: str, value: int) -> None:
        try:
            fsutil.write(p, "memory.limit_in_bytes", value, what="linux.resources.memory.limit")
        except fsutil.CgroupFileError as e:
            if e.errno != errno.EBUSY:
                raise
            usage = fsutil.read_or(p, "memory.usage_in_bytes", "?").strip()
            peak = fsutil.read_or(p, "memory.max_usage_in_bytes", "?").strip()
            raise HakoError(f"linux.resources.memory.limit: unable to set memory limit to "
                            f"{value} (current usage: {usage}, peak usage: {peak})") from None

    def _write_swap(self, p: str, value: int) -> None:
        fsutil.write(p, "memory.memsw.limit_in_bytes", value, what="linux.resources.memory.swap")

    def _kmem(self, p: str, name: str, value: int, field: str) -> None:
        """Kernel memory limits: gone from recent kernels (runc ignores them);
        set where the kernel still honours them, else say they are not enforced."""
        if not os.path.exists(os.path.join(p, name)):
            warn(f"linux.resources.memory.{field}: this kernel has no {name}; not enforced")
            return
        fsutil.write(p, name, value, what=f"linux.resources.memory.{field}")
        got = fsutil.read_uint(p, name)
        if value > 0 and got > value:
            warn(f"linux.resources.memory.{field}: this kernel ignores {name}; not enforced")

    def _set_cpu(self, p: str, res: dict) -> None:
        cpu = res.get("cpu") or {}
        # real-time bandwidth first: a SCHED_RR task needs it before it may enter
        self._rt(p, cpu)
        if nz(cpu.get("shares")):
            fsutil.write(p, "cpu.shares", cpu["shares"], what="linux.resources.cpu.shares")
            got = fsutil.read_uint(p, "cpu.shares")
            if cpu["shares"] > got:
                raise HakoError(f"linux.resources.cpu.shares: the maximum allowed cpu-shares "
                                f"is {got}")
            if cpu["shares"] < got:
                raise HakoError(f"linux.resources.cpu.shares: the minimum allowed cpu-shares "
                                f"is {got}")
        period = cpu.get("period") or 0
        pending = None
        if period:
            try:
                fsutil.write(p, "cpu.cfs_period_us", period, what="linux.resources.cpu.period")
            except fsutil.CgroupFileError as e:
                # a shorter period can exceed the parent's quota until the
                # quota is lowered: retry after it (runc)
                if e.errno != errno.EINVAL:
                    raise
                pending = period
        if nz(cpu.get("quota")):
            fsutil.write(p, "cpu.cfs_quota_us", cpu["quota"], what="linux.resources.cpu.quota")
            if pending:
                fsutil.write(p, "cpu.cfs_period_us", pending, what="linux.resources.cpu.period")
        elif pending:
            fsutil.write(p, "cpu.cfs_period_us", pending, what="linux.resources.cpu.period")
        if cpu.get("burst") is not None:
            fsutil.write(p, "cpu.cfs_burst_us", cpu["burst"], what="linux.resources.cpu.burst")
        if cpu.get("idle") is not None:
            fsutil.write(p, "cpu.idle", cpu["idle"], what="linux.resources.cpu.idle")

    def _rt(self, p: str, cpu: dict) -> None:
        if nz(cpu.get("realtimePeriod")):
            fsutil.write(p, "cpu.rt_period_us", cpu["realtimePeriod"],
                         what="linux.resources.cpu.realtimePeriod")
        if nz(cpu.get("realtimeRuntime")):
            fsutil.write(p, "cpu.rt_runtime_us", cpu["realtimeRuntime"],
                         what="linux.resources.cpu.realtimeRuntime")

    def _set_cpuset(self, p: str, res: dict) -> None:
        cpu = res.get("cpu") or {}
        if cpu.get("cpus"):
            fsutil.write(p, "cpuset.cpus", cpu["cpus"], what="linux.resources.cpu.cpus")
        if cpu.get("mems"):
            fsutil.write(p, "cpuset.mems", cpu["mems"], what="linux.resources.cpu.mems")

    def _set_pids(self, p: str, res: dict) -> None:
        limit = (res.get("pids") or {}).get("limit")
        if nz(limit):
            fsutil.write(p, "pids.max", "max" if limit < 0 else limit,
                         what="linux.resources.pids.limit")

    def _set_blkio(self, p: str, res: dict) -> None:
        blk = res.get("blockIO") or {}
        what = "linux.resources.blockIO"

        def write_alias(name: str, alias: str, value: str, field: str) -> None:
            try:
                fsutil.write(p, name, value, what=f"{what}.{field}")
            except fsutil.CgroupFileError as e:
                if e.errno != errno.ENOENT:
                    raise
                try:
                    fsutil.write(p, alias, value, what=f"{what}.{field}")
                except fsutil.CgroupFileError as e2:
                    if e2.errno != errno.ENOENT:
                        raise
                    raise HakoError(f"{what}.{field}: this kernel has neither {name} nor "
                                    f"{alias} in {p} (no CFQ/BFQ I/O scheduler); "
                                    "cannot set a block I/O weight") from None

        if nz(blk.get("weight")):
            write_alias("blkio.weight", "blkio.bfq.weight", str(blk["weight"]), "weight")
        if nz(blk.get("leafWeight")):
            fsutil.write(p, "blkio.leaf_weight", blk["leafWeight"], what=what + ".leafWeight")
        for wd in blk.get("weightDevice") or []:
            dev = f"{wd['major']}:{wd['minor']}"
            if wd.get("weight") is not None:
                write_alias("blkio.weight_device", "blkio.bfq.weight_device",
                            f"{dev} {wd['weight']}", "weightDevice")
            if wd.get("leafWeight") is not None:
                fsutil.write(p, "blkio.leaf_weight_device", f"{dev} {wd['leafWeight']}",
                             what=what + ".weightDevice")
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for td in blk.get(key) or []:
                fsutil.write(p, "blkio.throttle." + name,
                             f"{td['major']}:{td['minor']} {td['rate']}", what=f"{what}.{key}")

    def _set_hugetlb(self, p: str, res: dict) -> None:
        for i, lim in enumerate(res.get("hugepageLimits") or []):
            size = lim.get("pageSize") or lim.get("pagesize") or ""
            what = f"linux.resources.hugepageLimits[{i}]"
            name = f"hugetlb.{size}.limit_in_bytes"
            if not os.path.exists(os.path.join(p, name)):
                raise HakoError(f"{what}: page size {size!r} is not supported here (no {name})")
            fsutil.write(p, name, int(lim.get("limit") or 0), what=what)
            rsvd = f"hugetlb.{size}.rsvd.limit_in_bytes"
            if os.path.exists(os.path.join(p, rsvd)):
                fsutil.write(p, rsvd, int(lim.get("limit") or 0), what=what)

    def _set_net_cls(self, p: str, res: dict) -> None:
        cid = (res.get("network") or {}).get("classID")
        if cid is not None:
            fsutil.write(p, "net_cls.classid", cid, what="linux.resources.network.classID")

    def _set_net_prio(self, p: str, res: dict) -> None:
        for prio in (res.get("network") or {}).get("priorities") or []:
            fsutil.write(p, "net_prio.ifpriomap", f"{prio['name']} {prio['priority']}",
                         what="linux.resources.network.priorities")

    def _set_rdma(self, p: str, res: dict) -> None:
        from runtime.cgroups.v2 import rdma_lines
        for line in rdma_lines(res.get("rdma") or {}):
            fsutil.write(p, "rdma.max", line, what="linux.resources.rdma")

    # -- stats -------------------------------------------------------------------
    def oom_kill_count(self) -> int:
        p = self.paths.get("memory")
        if p is None:
            return 0
        return fsutil.flat_keyed(fsutil.read_or(p, "memory.oom_control", "") or "").get(
            "oom_kill", 0)

    def stats(self) -> dict:
        from runtime.cgroups import stats
        st = stats.new()
        sizes = stats.hugepage_sizes()
        if "cpuset" in self.paths:
            stats.cpuset(self.paths["cpuset"], st, v2=False)
        if "memory" in self.paths:
            stats.v1_memory(self.paths["memory"], st)
        if "cpu" in self.paths:
            stats.cpu_throttling(self.paths["cpu"], st, v2=False)
        if "cpuacct" in self.paths:
            stats.v1_cpuacct(self.paths["cpuacct"], st)
        if "pids" in self.paths:
            stats.pids(self.paths["pids"], st)
        if "blkio" in self.paths:
            stats.v1_blkio(self.paths["blkio"], st)
        if "hugetlb" in self.paths:
            stats.hugetlb(self.paths["hugetlb"], st, v2=False, sizes=sizes)
        elif self.unified is not None and "hugetlb" in controllers_of(self.unified.path):
            stats.hugetlb(self.unified.path, st, v2=True, sizes=sizes)
        return stats.to_runc(st)

    def to_state(self) -> dict:
        d = {"driver": self.driver, "id": self.cid, "paths": self.paths,
             "rootless": self.rootless, "resources": self.resources,
             "dev_paths": self.dev_paths}
        if self.unified is not None:
            d["unified"] = [self.unified.mount, self.unified.path]
        return d

