"""The systemd cgroup driver (``--systemd-cgroup``): a transient scope per container.

As runc's libcontainer/cgroups/systemd: the container's processes go into
``prefix-name.scope`` under its slice, made by systemd (StartTransientUnit
with PIDs, Delegate=yes and the limits systemd has properties for, waiting
for the job); every limit is then also written to the scope's cgroup files
by the v1/v2 writers (those systemd has no property for only there), and
``update`` sets the unit's properties again before writing the files.
``delete`` stops the unit (StopUnit, waiting for the job) and clears a
failed state (ResetFailedUnit), so no unit, cgroup or failed unit is left.

Processes, freezer, stats and kill go through the scope's cgroup files (the
inner v1/v2 manager): only create, update and delete talk to systemd.

The scope needs a process when it is started, before the container's init
exists: a "seed" child of hako (SIGKILLed with hako, PR_SET_PDEATHSIG) is
the scope's first process, and is killed as soon as the init has joined.
"""

from __future__ import annotations

import os

from runtime.cgroups.base import Manager
from runtime.errors import HakoError

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"


def _join(root: str, path: str) -> str:
    return "/" + "/".join(p for p in (root.strip("/"), path.strip("/")) if p)


def inner_manager(host, cgroup: str, cid: str, *, rootless: bool, dev_paths: list[str],
                  resources: dict):
    """The v1/v2 manager over the scope's directories (``cgroup`` is the
    scope's absolute cgroup path, the same in every hierarchy)."""
    if host.mode == "v2":
        from runtime.cgroups.v2 import V2Manager
        return V2Manager(cid, host.unified.mountpoint, host.unified_dir(cgroup, hybrid=False),
                         rootless=rootless, resources=resources, dev_paths=dev_paths)
    from runtime.cgroups.v1 import V1Manager
    dirs = {c: host.v1_dir(c, cgroup) for c in host.v1}
    unified = None
    if host.mode == "hybrid":
        unified = (host.unified.mountpoint, host.unified_dir(cgroup, hybrid=True))
    return V1Manager(cid, dirs, unified=unified, rootless=rootless, resources=resources,
                     dev_paths=dev_paths)


def new_manager(spec: dict, cid: str, *, rootless: bool, host) -> "SystemdManager":
    """For create: check that systemd is there and reachable, name the unit,
    ask the manager for its root cgroup. Nothing is created yet."""
    from runtime.cgroups import devices, sdunit
    linux = spec.get("linux") or {}
    # the config first: a bad cgroupsPath is the same error on every host
    unit = sdunit.parse_path(linux.get("cgroupsPath") or "", cid, rootless=rootless,
                             v2=host.mode == "v2")
    if not host.systemd_booted:
        raise HakoError("--systemd-cgroup: systemd is not running on this host "
                        "(no /run/systemd/system); run without --systemd-cgroup to use "
                        "hako's cgroupfs driver")
    if host.mode == "none":
        raise HakoError(f"--systemd-cgroup: no cgroup filesystem is mounted under {host.root}")
    if rootless and host.mode != "v2":
        raise HakoError(f"--systemd-cgroup: a rootless container needs cgroup v2 (systemd "
                        f"delegates cgroups to users only there; this host is {host.mode}); "
                        "run without --systemd-cgroup")
    from runtime.cgroups.sdbus import Bus
    bus = Bus.connect(user=rootless)
    try:
        root = bus.get_property(MANAGER_PATH, MANAGER_IFACE, "ControlGroup") or "/"
    except HakoError:
        bus.close()
        raise
    cgroup = _join(root, unit.cgroup)
    res = linux.get("resources") or {}
    dev_paths = devices.device_paths(spec)
    inner = inner_manager(host, cgroup, cid, rootless=rootless, dev_paths=dev_paths,
                          resources=res)
    m = SystemdManager(cid, unit.name, unit.slice, inner, user=rootless, mode=host.mode,
                       cgroup=cgroup, rootless=rootless, resources=res, dev_paths=dev_paths)
    m._bus = bus
    m._bus_pid = os.getpid()
    return m


class SystemdManager(Manager):
    driver = "systemd"

    def __init__(self, cid: str, unit: str, slice_: str, inner: Manager, *, user: bool,
                 mode: str, cgroup: str, rootless: bool = False,
                 resources: dict | None = None, dev_paths: list[str] | None = None) -> None:
        super().__init__(cid, rootless=rootless, resources=resources, dev_paths=dev_paths)
        self.unit = unit
        self.slice = slice_
        self.inner = inner
        self.user = user
        self.mode = mode
        self.cgroup = cgroup
        self._bus = None
        self._bus_pid = 0
        self._seed = 0
        self._seed_owner = 0
        self._started = False
        self._fresh = False  # started with these limits: the next apply writes files only
        self._foreign = False  # create failed before the unit was ours

    def __getattr__(self, name: str):
        # ``paths`` / ``path`` / ``unified`` of the inner manager (OOM notifier,
        # create's cgroup mount), as if this were a v1/v2 manager
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(inner, name)

    # -- the bus ------------------------------------------------------------------
    def bus(self):
        """The connection; a forked child (stage-1 joining the scope) makes its
        own rather than share the parent's socket."""
        if self._bus is None or self._bus_pid != os.getpid():
            from runtime.cgroups.sdbus import Bus
            self._bus = Bus.connect(user=self.user)
            self._bus_pid = os.getpid()
        return self._bus

    def _v2(self) -> bool:
        return self.mode == "v2"

    # -- lifecycle ------------------------------------------------------------------
    def create(self) -> None:
        from runtime.cgroups import sdunit
        from runtime.cgroups.sdbus import BusError
        self._seed = self._spawn_seed()
        try:
            props = sdunit.scope_properties(
                sdunit.Unit(self.slice, self.unit, ""), self.cid, self._seed, self.resources,
                self.dev_paths, v2=self._v2(), devices=not self.rootless)
            for attempt in (1, 2):
                try:
                    result = self.bus().run_job("StartTransientUnit", "ssa(sv)a(sa(sv))",
                                                (self.unit, "replace", props, []))
                    break
                except BusError as e:
                    if attempt == 2 or not e.name.endswith(".UnitExists") \
                            or self._unit_active():
                        if e.name.endswith(".UnitExists"):
                            raise HakoError(f"--systemd-cgroup: unit {self.unit} already exists "
                                            "(another container with the same "
                                            "linux.cgroupsPath?)") from None
                        raise
                    self._reset_failed()  # a stale failed unit of an old container
            if result != "done":
                raise HakoError(f"--systemd-cgroup: systemd could not start {self.unit} "
                                f"(job {result}); see journalctl -u {self.unit}")
            self._started = True
            self._fresh = True
            # hierarchies systemd does not manage (v1 cpuset, hugetlb, ...) get
            # the same path from us; on v2 the scope is ours below (Delegate)
            if not self._v2():
                self.inner.create()
            # the init is forked from here: it holds no connection to systemd
            # (a rootless stage-1 that needs one for the move opens its own)
            self._bus.close()
            self._bus = None
        except BaseException:
            if not self._started:
                # the unit is not ours (e.g. it exists): create's undo must
                # neither signal its processes nor stop it
                self._foreign = True
                self._kill_seed()
                raise
            try:
                self.destroy()
            except HakoError:
                pass
            raise

    def _spawn_seed(self) -> int:
        """A child that only waits (no fd of its own): the scope's first process."""
        import time
        from runtime.syscalls import PR_SET_PDEATHSIG, SYS
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                SYS.prctl(PR_SET_PDEATHSIG, 9)
                while os.getppid() == parent:
                    time.sleep(3600)  # SIGKILL ends it
            finally:
                os._exit(0)
        self._seed_owner = parent
        return pid

    def _kill_seed(self) -> None:
        if not self._seed:
            return
        try:
            os.kill(self._seed, 9)
        except ProcessLookupError:
            pass
        if os.getpid() == self._seed_owner:
            try:
                os.waitpid(self._seed, 0)
            except ChildProcessError:
                pass
        self._seed = 0

    def _reap_seed(self) -> None:
        """The seed killed by stage-1 (another process): reap it once dead."""
        if self._seed and os.getpid() == self._seed_owner:
            try:
                pid, _ = os.waitpid(self._seed, os.WNOHANG)
            except ChildProcessError:
                pid = self._seed
            if pid:
                self._seed = 0

    def _unit_active(self) -> bool:
        path = self.bus().unit_path(self.unit)
        if path is None:
            return False
        state = self.bus().get_property(path, "org.freedesktop.systemd1.Unit", "ActiveState")
        return state not in ("inactive", "failed")

    def _reset_failed(self) -> None:
        from runtime.cgroups.sdbus import BusError
        try:
            self.bus().call("ResetFailedUnit", "s", (self.unit,))
        except BusError as e:
            if not e.name.endswith((".NoSuchUnit", ".UnitNotFailed")) and \
                    "not failed" not in str(e) and "not loaded" not in str(e):
                raise

    def apply(self, resources: dict, *, skip_devices: bool = False) -> None:
        """At create the unit already has the limits (StartTransientUnit); on
        update they are set on the unit first, then written to the files."""
        res = resources or {}
        if self._fresh:
            self._fresh = False
        else:
            from runtime.cgroups import sdunit
            props = sdunit.resource_properties(res, v2=self._v2())
            if not skip_devices and not self.rootless:
                props = sdunit.device_properties(res, self.dev_paths) + props
            if props:
                self.bus().call("SetUnitProperties", "sba(sv)", (self.unit, True, props))
        self.inner.apply(res, skip_devices=skip_devices)
        self.resources = res

    def enter(self, pid: int) -> None:
        try:
            self.inner.enter(pid)
        except HakoError as e:
            if not self.user or getattr(e, "errno", 0) not in (1, 13):
                raise
            # rootless: our own cgroup belongs to root (a session scope), so
            # the kernel refuses the move; systemd can make it for us
            self.bus().call("AttachProcessesToUnit", "ssau", (self.unit, "", [pid]))
        if self._seed:
            self._kill_seed()

    def destroy(self) -> None:
        """Stop the unit (its cgroups go with it), clear a failed state,
        remove what is left (the hierarchies systemd does not manage)."""
        from runtime.cgroups.sdbus import BusError
        self._kill_seed()
        if self._foreign:
            return
        problems = []
        try:
            bus = self.bus()
            if bus.unit_path(self.unit) is not None:
                try:
                    bus.run_job("StopUnit", "ss", (self.unit, "replace"))
                except BusError as e:
                    if not e.name.endswith(".NoSuchUnit"):
                        problems.append(str(e))
            self._reset_failed()
        except HakoError as e:
            problems.append(str(e))
        try:
            self.inner.destroy()
        except HakoError as e:
            problems.append(str(e))
        if problems:
            raise HakoError("--systemd-cgroup: " + "; ".join(problems))

    # -- through the scope's files --------------------------------------------------
    def dirs(self) -> list[str]:
        return self.inner.dirs()

    def pids(self) -> list[int]:
        if self._foreign:
            return []
        return [p for p in self.inner.pids() if p != self._seed]

    def kill_all(self, sig: int) -> None:
        if not self._foreign:
            super().kill_all(sig)

    def freeze(self) -> None:
        self.inner.freeze()

    def thaw(self) -> None:
        self.inner.thaw()

    def is_frozen(self) -> bool:
        return self.inner.is_frozen()

    def has_freezer(self) -> bool:
        return self.inner.has_freezer()

    def _cgroup_kill(self) -> bool:
        return self.inner._cgroup_kill()

    def stats(self) -> dict:
        return self.inner.stats()

    def oom_kill_count(self) -> int:
        return self.inner.oom_kill_count()

    def to_state(self) -> dict:
        self._reap_seed()
        d = self.inner.to_state()
        d.update({"driver": "systemd", "inner": d["driver"], "unit": self.unit,
                  "slice": self.slice, "user": self.user, "mode": self.mode,
                  "cgroup": self.cgroup})
        return d

    @classmethod
    def from_state(cls, d: dict) -> "SystemdManager":
        from runtime.cgroups import manager_from_state
        inner = manager_from_state(dict(d, driver=d.get("inner")))
        return cls(d.get("id", ""), d["unit"], d.get("slice", ""), inner,
                   user=bool(d.get("user")), mode=d.get("mode", ""), cgroup=d.get("cgroup", ""),
                   rootless=bool(d.get("rootless")), resources=d.get("resources") or {},
                   dev_paths=d.get("dev_paths") or [])
