"""What every driver shares: the Manager interface and the resource checks.

A Manager is created once by ``create`` (from the config) and rebuilt by every
later verb from ``state.json`` (``manager_from_state``) without looking at the
host again, so ``state``/``kill``/``delete`` stay cheap.
"""

from __future__ import annotations

import os
import time

from runtime.cgroups import fsutil
from runtime.errors import HakoError

FREEZE_TIMEOUT = 10.0
SIGKILL = 9  # not SIGKILL: importing signal (enum) costs ~5 ms


def nz(v: object) -> bool:
    """runc's "set" for numbers: present and not 0."""
    return v is not None and v != 0


def needed_controllers(res: dict) -> list[tuple[str, str]]:
    """(config field, v1 controller) pairs the resources need, in runc's order."""
    out: list[tuple[str, str]] = []
    mem = res.get("memory") or {}
    if any(nz(mem.get(k)) for k in ("limit", "reservation", "swap", "kernel", "kernelTCP")) \
            or mem.get("swappiness") is not None or mem.get("disableOOMKiller") \
            or mem.get("useHierarchy") is not None:
        out.append(("memory", "memory"))
    cpu = res.get("cpu") or {}
    if any(nz(cpu.get(k)) for k in ("shares", "quota", "period", "burst", "realtimeRuntime",
                                    "realtimePeriod")) or cpu.get("idle") is not None:
        out.append(("cpu", "cpu"))
    if cpu.get("cpus") or cpu.get("mems"):
        out.append(("cpu.cpus/mems", "cpuset"))
    if nz((res.get("pids") or {}).get("limit")):
        out.append(("pids.limit", "pids"))
    blk = res.get("blockIO") or {}
    if nz(blk.get("weight")) or nz(blk.get("leafWeight")) or any(
            blk.get(k) for k in ("weightDevice", "throttleReadBpsDevice",
                                 "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                                 "throttleWriteIOPSDevice")):
        out.append(("blockIO", "blkio"))
    if res.get("hugepageLimits"):
        out.append(("hugepageLimits", "hugetlb"))
    net = res.get("network") or {}
    if net.get("classID") is not None:
        out.append(("network.classID", "net_cls"))
    if net.get("priorities"):
        out.append(("network.priorities", "net_prio"))
    if res.get("rdma"):
        out.append(("rdma", "rdma"))
    return out


def warn(msg: str) -> None:
    from runtime import log
    log.warn(msg)


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Manager:
    """A container's cgroup(s). Subclasses: V1Manager (v1 and hybrid), V2Manager."""

    driver = ""

    def __init__(self, cid: str, *, rootless: bool = False, resources: dict | None = None,
                 dev_paths: list[str] | None = None) -> None:
        self.cid = cid
        self.rootless = rootless
        self.resources: dict = resources or {}
        # linux.devices paths: runc drops a default device rule whose node the
        # config redefines, so the rule set depends on them
        self.dev_paths: list[str] = list(dev_paths or [])

    # -- to be provided -----------------------------------------------------
    def create(self) -> None:
        raise NotImplementedError

    def apply(self, resources: dict, *, skip_devices: bool = False) -> None:
        raise NotImplementedError

    def enter(self, pid: int) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def is_frozen(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def dirs(self) -> list[str]:
        """Every directory this manager owns (for destroy and leftover checks)."""
        raise NotImplementedError

    def oom_kill_count(self) -> int:
        raise NotImplementedError

    def _cgroup_kill(self) -> bool:
        """SIGKILL everything at once through cgroup.kill; False if unavailable."""
        return False

    def has_freezer(self) -> bool:
        return False

    # -- shared -----------------------------------------------------------------
    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.dirs())

    def kill_all(self, sig: int) -> None:
        """Signal every process in the cgroup.

        SIGKILL goes through cgroup.kill where the kernel has it (v2, and the
        unified hierarchy of a hybrid host); otherwise the cgroup is frozen
        while its pids are listed and signalled, so a fork loop cannot outrun
        us (runc's signalAllProcesses), then thawed -- a frozen task only dies
        once thawed, so a paused container is always thawed after SIGKILL.
        """
        if sig == SIGKILL and self._cgroup_kill():
            signal_pids(self.pids(), sig)  # v1 hierarchies of a hybrid host
            if self.has_freezer():
                self._thaw_quietly()
            return
        frozen = False
        if sig == SIGKILL and self.has_freezer():
            try:
                self.freeze()
                frozen = True
            except HakoError:
                frozen = False
        signal_pids(self.pids(), sig)
        if sig == SIGKILL and self.has_freezer():
            self._thaw_quietly()
        elif frozen:
            self._thaw_quietly()

    def _thaw_quietly(self) -> None:
        try:
            self.thaw()
        except HakoError:
            pass

    def wait_empty(self, timeout: float = 5.0) -> bool:
        """Wait until no process is left (after kill_all); True when empty."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self.pids():
                    return True
            except OSError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def destroy(self) -> None:
        """Remove every cgroup directory (sub-cgroups first). Killing what is
        left inside is the caller's job (kill_all + wait_empty)."""
        problems = []
        for d in self.dirs():
            why = fsutil.rmdir_tree(d)
            if why:
                problems.append(why)
        if problems:
            raise HakoError("cannot remove cgroup: " + "; ".join(problems))

    def to_state(self) -> dict:
        raise NotImplementedError
