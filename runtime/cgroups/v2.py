"""cgroup v2 (unified) driver, also used for the unified half of a hybrid host.

One directory holds everything. Controllers must be enabled top-down in each
ancestor's ``cgroup.subtree_control`` before their files appear in the
container's directory; runc enables every available one along the path, and
so does hako on a v2 host. On a hybrid host only the controllers a limit
needs are enabled (usually none: all of them are bound to v1 hierarchies),
so hako's footprint on the host's unified tree stays a bare directory.
"""

from __future__ import annotations

import errno
import os
import time

from runtime.cgroups import fsutil
from runtime.cgroups.base import FREEZE_TIMEOUT, Manager, needed_controllers, nz, warn
from runtime.errors import HakoError

#: v1 controller names -> v2 controller names
V2_NAME = {"memory": "memory", "cpu": "cpu", "cpuset": "cpuset", "pids": "pids",
           "blkio": "io", "hugetlb": "hugetlb", "rdma": "rdma"}
DOMAIN_CONTROLLERS = {"memory", "io", "hugetlb", "cpuset", "rdma"}


def controllers_of(path: str) -> set[str]:
    return set((fsutil.read_or(path, "cgroup.controllers", "") or "").split())


class V2Dir:
    """A cgroup directory in a cgroup2 hierarchy mounted at ``mount``."""

    def __init__(self, mount: str, path: str) -> None:
        self.mount = mount.rstrip("/") or "/"
        self.path = path

    def ancestors(self) -> list[str]:
        """From the mount point down to the parent of ``path``."""
        rel = os.path.relpath(self.path, self.mount)
        out = [self.mount]
        cur = self.mount
        for part in rel.split("/")[:-1]:
            cur = os.path.join(cur, part)
            out.append(cur)
        return out

    def create(self) -> list[str]:
        if not self.path.startswith(self.mount + "/"):
            raise HakoError(f"invalid cgroup path {self.path}: not below {self.mount}")
        return fsutil.mkdir_p(self.path)

    def enable(self, wanted: set[str] | None) -> None:
        """Enable controllers in every ancestor: all available ones (None) or
        the given set. Failures are left for the setters to report, naming
        the file that is missing (as runc)."""
        for anc in self.ancestors():
            avail = controllers_of(anc)
            want = avail if wanted is None else (avail & wanted)
            have = set((fsutil.read_or(anc, "cgroup.subtree_control", "") or "").split())
            todo = sorted(want - have)
            if not todo:
                continue
            try:
                fsutil.write(anc, "cgroup.subtree_control", " ".join("+" + c for c in todo))
            except HakoError:
                for c in todo:
                    try:
                        fsutil.write(anc, "cgroup.subtree_control", "+" + c)
                    except HakoError:
                        pass

    def check_type(self, res: dict) -> None:
        """A cgroup made under a populated one is "domain invalid": only
        thread-aware controllers work there (runc's CreateCgroupPath)."""
        t = (fsutil.read_or(self.path, "cgroup.type", "") or "").strip()
        domain = {V2_NAME[c] for _, c in needed_controllers(res) if c in V2_NAME} \
            & DOMAIN_CONTROLLERS
        if t == "domain invalid":
            if domain:
                raise HakoError(f"cannot use cgroup {self.path} for {', '.join(sorted(domain))} "
                                "limits: it is in an invalid state (its parent has processes)")
            try:
                fsutil.write(self.path, "cgroup.type", "threaded")
            except HakoError:
                pass
        elif t in ("threaded", "domain threaded") and domain:
            raise HakoError(f"cannot use cgroup {self.path} for {', '.join(sorted(domain))} "
                            f"limits: it is in {t} mode")

    # -- processes, freezer, kill ----------------------------------------------
    def pids(self) -> list[int]:
        out: list[int] = []
        for dirpath, _dirs, _files in os.walk(self.path):
            try:
                out.extend(fsutil.read_pids(dirpath))
            except OSError:
                continue
        return out

    def has_freeze(self) -> bool:
        return os.path.exists(os.path.join(self.path, "cgroup.freeze"))

    def freeze(self) -> None:
        """cgroup.freeze = 1, then wait for "frozen 1" in cgroup.events (the
        kernel raises POLLPRI on it when the state flips); thaw again and fail
        if that does not happen in time."""
        fsutil.write(self.path, "cgroup.freeze", "1", what="pause")
        try:
            self._wait_events("frozen", "1", FREEZE_TIMEOUT)
        except BaseException:
            try:
                fsutil.write(self.path, "cgroup.freeze", "0")
            except HakoError:
                pass
            raise

    def thaw(self) -> None:
        fsutil.write(self.path, "cgroup.freeze", "0", what="resume")

    def is_frozen(self) -> bool:
        v = fsutil.read_or(self.path, "cgroup.freeze")
        return v is not None and v.strip() == "1"

    def _wait_events(self, key: str, want: str, timeout: float) -> None:
        import select
        path = os.path.join(self.path, "cgroup.events")
        deadline = time.monotonic() + timeout
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            while True:
                os.lseek(fd, 0, os.SEEK_SET)
                kv = dict(line.split(None, 1) for line in os.read(fd, 4096).decode().splitlines()
                          if " " in line)
                if kv.get(key, "").strip() == want:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HakoError(f"timed out after {timeout:g}s waiting for {path}: "
                                    f"{key} {want}")
                poller.poll(min(left, 0.1) * 1000)
        finally:
            os.close(fd)

    def kill(self) -> bool:
        try:
            fsutil.write(self.path, "cgroup.kill", "1")
            return True
        except fsutil.CgroupFileError as e:
            if e.errno == errno.ENOENT and not os.path.isdir(self.path):
                return True  # nothing left to kill
            return False

    # -- resources ---------------------------------------------------------------
    def require(self, res: dict, *, only: set[str] | None = None) -> None:
        """Fail clearly when a limit needs a controller this cgroup lacks."""
        have = controllers_of(self.path)
        for field, v1name in needed_controllers(res):
            name = V2_NAME.get(v1name)
            if name is None:
                raise HakoError(f"linux.resources.{field}: the {v1name} controller exists only "
                                "on cgroup v1; this host uses cgroup v2")
            if only is not None and name not in only:
                continue
            if name not in have:
                raise HakoError(f"linux.resources.{field}: the {name} cgroup controller is not "
                                f"available in {self.path} (cgroup.controllers: "
                                f"{' '.join(sorted(have)) or 'none'})")
        for key in sorted(res.get("unified") or {}):
            ctrl, dot, _ = key.partition(".")
            if only is not None and ctrl not in only:
                continue
            if dot and "/" not in key and ctrl != "cgroup" and ctrl not in have:
                raise HakoError(f"linux.resources.unified: {key!r} cannot be set: the {ctrl} "
                                f"controller is not available in {self.path}")

    def set_unified(self, unified: dict, *, allowed: set[str] | None = None) -> None:
        have = controllers_of(self.path)
        for key in sorted(unified):
            value = unified[key]
            if "/" in key:
                raise HakoError(f"linux.resources.unified: {key!r} must be a file name (no "
                                "slashes)")
            ctrl, dot, _ = key.partition(".")
            if not dot:
                raise HakoError(f"linux.resources.unified: {key!r} must be CONTROLLER.PARAMETER")
            if allowed is not None and ctrl != "cgroup" and ctrl not in allowed:
                raise HakoError(f"linux.resources.unified: {key!r}: the {ctrl} controller is "
                                "not on this host's unified hierarchy (hybrid host: it is a "
                                "cgroup v1 controller here)")
            try:
                for line in str(value).split("\n") or [""]:
                    fsutil.write(self.path, key, line, what=f"linux.resources.unified[{key}]")
            except fsutil.CgroupFileError as e:
                if e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES) \
                        and ctrl != "cgroup" and ctrl not in have:
                    raise HakoError(f"linux.resources.unified: {key!r} cannot be set: the "
                                    f"{ctrl} controller is not available in {self.path}") from None
                raise

    def set_hugetlb(self, limits: list[dict]) -> None:
        for i, lim in enumerate(limits):
            size = lim.get("pageSize") or lim.get("pagesize") or ""
            what = f"linux.resources.hugepageLimits[{i}]"
            if not os.path.exists(os.path.join(self.path, f"hugetlb.{size}.max")):
                raise HakoError(f"{what}: page size {size!r} is not supported here "
                                f"(no hugetlb.{size}.max in {self.path})")
            fsutil.write(self.path, f"hugetlb.{size}.max", int(lim.get("limit") or 0), what=what)
            if os.path.exists(os.path.join(self.path, f"hugetlb.{size}.rsvd.max")):
                fsutil.write(self.path, f"hugetlb.{size}.rsvd.max", int(lim.get("limit") or 0),
                             what=what)

    def set_all(self, res: dict, *, skip_devices: bool, dev_paths: list[str] = (),
                rootless: bool = False) -> None:
        """runc fs2 Manager.Set order: pids, memory, io, cpu, devices, cpuset,
        hugetlb, unified."""
        p = self.path
        limit = (res.get("pids") or {}).get("limit")
        if nz(limit):
            fsutil.write(p, "pids.max", "max" if limit < 0 else limit,
                         what="linux.resources.pids.limit")
        self._memory(res.get("memory") or {})
        self._io(res.get("blockIO") or {})
        self._cpu(res.get("cpu") or {})
        if not skip_devices:
            self._devices(res, dev_paths)
        cpu = res.get("cpu") or {}
        if cpu.get("cpus"):
            fsutil.write(p, "cpuset.cpus", cpu["cpus"], what="linux.resources.cpu.cpus")
        if cpu.get("mems"):
            fsutil.write(p, "cpuset.mems", cpu["mems"], what="linux.resources.cpu.mems")
        if res.get("hugepageLimits"):
            self.set_hugetlb(res["hugepageLimits"])
        for line in rdma_lines(res.get("rdma") or {}):
            fsutil.write(p, "rdma.max", line, what="linux.resources.rdma")
        if res.get("unified"):
            self.set_unified(res["unified"])

    def _memory(self, mem: dict) -> None:
        from runtime.cgroups import convert
        p = self.path
        limit = mem.get("limit") or 0
        swap = mem.get("swap") or 0
        resv = mem.get("reservation") or 0
        if limit or swap or resv:
            if mem.get("checkBeforeUpdate"):
                _check_usage(p, "memory.current", limit, swap)
            v2swap = convert.memory_swap_to_v2(swap, limit)
            s = convert.num_to_v2(v2swap)
            if not s and v2swap == 0 and swap > 0:
                s = "0"  # memory == memory+swap: no swap at all
            if s:
                try:
                    fsutil.write(p, "memory.swap.max", s, what="linux.resources.memory.swap")
                except fsutil.CgroupFileError as e:
                    # no swap accounting: "max" and "0" are what we have anyway
                    if not (e.errno == errno.ENOENT and s in ("max", "0")):
                        raise
            if convert.num_to_v2(limit):
                fsutil.write(p, "memory.max", convert.num_to_v2(limit),
                             what="linux.resources.memory.limit")
            if convert.num_to_v2(resv):
                fsutil.write(p, "memory.low", convert.num_to_v2(resv),
                             what="linux.resources.memory.reservation")
        if nz(mem.get("kernel")) or nz(mem.get("kernelTCP")):
            warn("linux.resources.memory.kernel/kernelTCP: cgroup v2 has no kernel memory "
                 "limit (kernel memory is part of memory.max); ignored")
        if mem.get("swappiness") is not None:
            warn("linux.resources.memory.swappiness: cgroup v2 has no per-cgroup swappiness; "
                 "ignored")
        if mem.get("disableOOMKiller"):
            warn("linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable the OOM "
                 "killer; ignored")
        if mem.get("useHierarchy") is False:
            raise HakoError("linux.resources.memory.useHierarchy: cgroup v2 is always "
                            "hierarchical; false cannot be honoured")

    def _io(self, blk: dict) -> None:
        from runtime.cgroups import convert
        p = self.path
        what = "linux.resources.blockIO"
        if nz(blk.get("weight")):
            try:
                fsutil.write(p, "io.bfq.weight", blk["weight"], what=what + ".weight")
            except fsutil.CgroupFileError as e:
                if e.errno != errno.ENOENT:
                    raise
                fsutil.write(p, "io.weight", convert.blkio_weight_to_io_weight(blk["weight"]),
                             what=what + ".weight")
        if nz(blk.get("leafWeight")):
            raise HakoError(f"{what}.leafWeight: cgroup v2 has no leaf weight")
        for wd in blk.get("weightDevice") or []:
            if wd.get("weight") is None:
                continue
            dev = f"{wd['major']}:{wd['minor']}"
            if os.path.exists(os.path.join(p, "io.bfq.weight")):
                fsutil.write(p, "io.bfq.weight", f"{dev} {wd['weight']}",
                             what=what + ".weightDevice")
            else:
                fsutil.write(p, "io.weight",
                             f"{dev} {convert.blkio_weight_to_io_weight(wd['weight'])}",
                             what=what + ".weightDevice")
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"),
                          ("throttleWriteIOPSDevice", "wiops")):
            for td in blk.get(key) or []:
                fsutil.write(p, "io.max", f"{td['major']}:{td['minor']} {name}={td['rate']}",
                             what=f"{what}.{key}")

    def _cpu(self, cpu: dict) -> None:
        from runtime.cgroups import convert
        p = self.path
        if nz(cpu.get("realtimeRuntime")) or nz(cpu.get("realtimePeriod")):
            raise HakoError("linux.resources.cpu.realtimeRuntime/realtimePeriod: cgroup v2 has "
                            "no real-time group scheduling")
        if nz(cpu.get("shares")):
            fsutil.write(p, "cpu.weight", convert.cpu_shares_to_weight(cpu["shares"]),
                         what="linux.resources.cpu.shares")
        quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
        if quota or period:
            fsutil.write(p, "cpu.max", f"{quota if quota > 0 else 'max'} {period or 100000}",
                         what="linux.resources.cpu.quota/period")
        if cpu.get("burst") is not None:
            fsutil.write(p, "cpu.max.burst", cpu["burst"], what="linux.resources.cpu.burst")
        if cpu.get("idle") is not None:
            fsutil.write(p, "cpu.idle", cpu["idle"], what="linux.resources.cpu.idle")

    def _devices(self, res: dict, dev_paths: list[str]) -> None:
        from runtime.cgroups import devices, ebpf
        ebpf.apply(self.path, devices.rules_for(res, dev_paths))


def rdma_lines(rdma: dict) -> list[str]:
    """``{"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}`` -> rdma.max lines
    (a missing count is "max"), one per device, as runc's fscommon."""
    out = []
    for dev in sorted(rdma):
        v = rdma[dev] or {}
        h, o = v.get("hcaHandles"), v.get("hcaObjects")
        out.append(f"{dev} hca_handle={'max' if h is None else h} "
                   f"hca_object={'max' if o is None else o}")
    return out


def _check_usage(path: str, usage_file: str, limit: int, swap: int) -> None:
    """memory.checkBeforeUpdate: refuse a limit at or below current usage
    (best effort: no usage file, no check)."""
    try:
        usage = fsutil.read_uint(path, usage_file)
    except (OSError, ValueError):
        return
    if swap > 0 and swap <= usage:
        raise HakoError(f"linux.resources.memory.swap: rejecting memory+swap limit {swap} "
                        f"<= usage {usage}")
    if limit > 0 and limit <= usage:
        raise HakoError(f"linux.resources.memory.limit: rejecting memory limit {limit} "
                        f"<= usage {usage}")


class V2Manager(Manager):
    driver = "v2"

    def __init__(self, cid: str, mount: str, path: str, *, rootless: bool = False,
                 resources: dict | None = None, dev_paths: list[str] | None = None) -> None:
        super().__init__(cid, rootless=rootless, resources=resources, dev_paths=dev_paths)
        self.dir = V2Dir(mount, path)

    @property
    def path(self) -> str:
        return self.dir.path

    def dirs(self) -> list[str]:
        return [self.dir.path]

    def create(self) -> None:
        made = self.dir.create()
        try:
            self.dir.enable(None)
        except BaseException:
            for d in reversed(made):
                fsutil.rmdir_tree(d)
            raise

    def apply(self, resources: dict, *, skip_devices: bool = False) -> None:
        res = resources or {}
        self.dir.check_type(res)
        self.dir.require(res)
        # rootless: device rules are the user namespace's business (runc
        # ignores device errors when rootless)
        self.dir.set_all(res, skip_devices=skip_devices or self.rootless,
                         dev_paths=self.dev_paths)
        self.resources = res

    def enter(self, pid: int) -> None:
        fsutil.write_pid(self.dir.path, pid)

    def pids(self) -> list[int]:
        return self.dir.pids()

    def has_freezer(self) -> bool:
        return self.dir.has_freeze()

    def freeze(self) -> None:
        if not self.dir.has_freeze():
            raise HakoError(f"cannot pause: {self.dir.path}/cgroup.freeze is missing (kernel "
                            "older than 5.2?)")
        self.dir.freeze()

    def thaw(self) -> None:
        if self.dir.has_freeze():
            self.dir.thaw()

    def is_frozen(self) -> bool:
        return self.dir.is_frozen()

    def _cgroup_kill(self) -> bool:
        return self.dir.kill()

    def oom_kill_count(self) -> int:
        return fsutil.flat_keyed(fsutil.read_or(self.dir.path, "memory.events", "") or "").get(
            "oom_kill", 0)

    def stats(self) -> dict:
        from runtime.cgroups import stats
        st = stats.new()
        p = self.dir.path
        stats.pids(p, st)
        stats.v2_memory(p, st)
        stats.v2_io(p, st)
        stats.cpu_throttling(p, st, v2=True)
        stats.cpuset(p, st, v2=True)
        stats.hugetlb(p, st, v2=True, sizes=stats.hugepage_sizes())
        return stats.to_runc(st)

    def to_state(self) -> dict:
        return {"driver": "v2", "id": self.cid, "mount": self.dir.mount, "path": self.dir.path,
                "rootless": self.rootless, "resources": self.resources,
                "dev_paths": self.dev_paths}
