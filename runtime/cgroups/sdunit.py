"""The systemd driver's pure half: unit names, slice paths and unit properties.

No D-Bus here (``sdbus`` talks to systemd): everything below is a function of
the config, so the unit tests need no bus. The rules are runc's
(libcontainer/cgroups/systemd/common.go, v1.go, v2.go and specconv):

* ``linux.cgroupsPath`` is ``slice:prefix:name``; empty means ``:runc:<id>``;
* an empty slice is ``system.slice`` (``user.slice`` for a rootless container
  on cgroup v2); ``-`` is the root slice (``-.slice``);
* the unit is ``prefix-name.scope`` (``name.scope`` without a prefix); a name
  ending in ``.slice`` would be a slice unit, which hako does not create;
* ``a-b-c.slice`` lives at ``/a.slice/a-b.slice/a-b-c.slice`` (systemd's
  nesting of dashed slice names).

Property values are D-Bus variants as jeepney takes them: ``(signature, value)``.
"""

from __future__ import annotations

from runtime.errors import HakoError

UINT64_MAX = (1 << 64) - 1
DEFAULT_PREFIX = "runc"


class Unit:
    """Where a container's scope goes: slice, unit name, slice's cgroup path."""

    __slots__ = ("slice", "name", "slice_path")

    def __init__(self, slice_: str, name: str, slice_path: str) -> None:
        self.slice = slice_
        self.name = name
        self.slice_path = slice_path

    @property
    def cgroup(self) -> str:
        """The scope's cgroup below the manager's root cgroup."""
        return self.slice_path.rstrip("/") + "/" + self.name

    def __repr__(self) -> str:
        return f"Unit({self.slice!r}, {self.name!r}, {self.slice_path!r})"


def parse_path(raw: str, cid: str, *, rootless: bool, v2: bool) -> Unit:
    """``linux.cgroupsPath`` in systemd form -> Unit (runc's defaults)."""
    if not raw:
        slice_, prefix, name = "", DEFAULT_PREFIX, cid
    else:
        parts = raw.split(":")
        if len(parts) != 3:
            raise HakoError('linux.cgroupsPath: expected "slice:prefix:name" with '
                            f"--systemd-cgroup, got {raw!r}")
        slice_, prefix, name = parts
    if not name:
        name = cid
    if name.endswith(".slice"):
        raise HakoError(f"linux.cgroupsPath: {raw!r}: a container in a slice unit of its own "
                        f"({name}) is not supported by hako; use slice:prefix:name for a scope")
    for what, v in (("prefix", prefix), ("name", name)):
        if "/" in v:
            raise HakoError(f"linux.cgroupsPath: {raw!r}: the {what} may not contain '/'")
    if not slice_:
        slice_ = "user.slice" if (rootless and v2) else "system.slice"
    elif slice_ == "-":
        slice_ = "-.slice"
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    _check_unit_name(unit, raw)
    return Unit(slice_, unit, expand_slice(slice_))


def _check_unit_name(unit: str, raw: str) -> None:
    """systemd's unit_name_is_valid for what we build: at most 255 bytes of
    ASCII letters, digits and ``:-_.\\@``."""
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@")
    if len(unit) > 255 or any(c not in ok for c in unit):
        raise HakoError(f"linux.cgroupsPath: {raw!r} gives the unit name {unit!r}, which "
                        "systemd does not accept (letters, digits and :-_.\\@ only, at most "
                        "255 characters)")


def expand_slice(slice_: str) -> str:
    """``a-b-c.slice`` -> ``/a.slice/a-b.slice/a-b-c.slice``; ``-.slice`` -> ``/``."""
    suffix = ".slice"
    if not slice_.endswith(suffix) or len(slice_) == len(suffix):
        raise HakoError(f"linux.cgroupsPath: invalid slice name {slice_!r} (must end in .slice)")
    if slice_ == "-.slice":
        return "/"
    if "/" in slice_:
        raise HakoError(f"linux.cgroupsPath: invalid slice name {slice_!r} (no '/': nest "
                        "slices with dashes, e.g. a-b.slice)")
    base = slice_[:-len(suffix)]
    out = ""
    prefix = ""
    for part in base.split("-"):
        if not part:
            raise HakoError(f"linux.cgroupsPath: invalid slice name {slice_!r} (empty part "
                            "between dashes)")
        prefix = f"{prefix}-{part}" if prefix else part
        out += f"/{prefix}{suffix}"
    return out


# ----------------------------------------------------------------- properties
def cpuset_bits(text: str, field: str) -> bytes:
    """"0-3,7" -> systemd's AllowedCPUs bitmask (byte i, bit j = CPU 8i+j)."""
    nums: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise HakoError(f"linux.resources.{field}: invalid list {text!r}") from None
        if a < 0 or b < a or b > 8191:
            raise HakoError(f"linux.resources.{field}: invalid range {part!r}")
        nums.update(range(a, b + 1))
    if not nums:
        return b""
    out = bytearray(max(nums) // 8 + 1)
    for n in nums:
        out[n // 8] |= 1 << (n % 8)
    return bytes(out)


def _u64(v: int) -> int:
    """OCI -1 (unlimited) -> systemd's infinity."""
    return UINT64_MAX if v < 0 else v


def cpu_quota_per_sec(quota: int, period: int) -> int:
    """CPUQuotaPerSecUSec from cfs quota/period, rounded up to 10 ms as runc
    does (systemd keeps it as a whole percentage of a CPU)."""
    if quota <= 0:
        return UINT64_MAX
    if period <= 0:
        period = 100000
    v = quota * 1000000 // period
    if v % 10000:
        v = (v // 10000 + 1) * 10000
    return v


def device_properties(res: dict, dev_paths: list[str], proc_devices: str | None = None
                      ) -> list[tuple[str, tuple[str, object]]]:
    """DevicePolicy + DeviceAllow for the folded device rules. systemd can
    only express "deny all, then allow": an allow-by-default rule set becomes
    DevicePolicy=auto (hako's own devices writer enforces its deny entries)."""
    from runtime.cgroups import devices
    emu = devices.Emulator.build(devices.rules_for(res, dev_paths))
    if emu.default_allow:
        return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
    groups = None
    allow: list[tuple[str, str]] = []
    for (t, major, minor), perms in emu.ordered():
        kind = "char" if t == "c" else "block"
        if major == devices.WILDCARD:
            path = f"{kind}-*"
        elif minor == devices.WILDCARD:
            if groups is None:
                groups = _device_groups(proc_devices)
            name = groups.get((kind, major))
            if name is None:
                continue  # no such driver on this kernel: nothing to allow
            path = f"{kind}-{name}"
        else:
            path = f"/dev/{kind}/{major}:{minor}"
        allow.append((path, perms))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", allow))]


def _device_groups(text: str | None) -> dict[tuple[str, int], str]:
    """/proc/devices: {("char"|"block", major): driver name}."""
    if text is None:
        try:
            with open("/proc/devices") as f:
                text = f.read()
        except OSError:
            return {}
    out: dict[tuple[str, int], str] = {}
    kind = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Character"):
            kind = "char"
        elif line.startswith("Block"):
            kind = "block"
        elif kind and line:
            num, _, name = line.partition(" ")
            if num.isdigit() and name:
                out.setdefault((kind, int(num)), name.strip())
    return out


def resource_properties(res: dict, *, v2: bool) -> list[tuple[str, tuple[str, object]]]:
    """The limits systemd has properties for (runc's genV1/genV2 sets). The
    rest (swappiness, hugetlb, blkio devices, rdma, ...) are written to the
    scope's cgroup files by the v1/v2 writers, as runc does."""
    from runtime.cgroups import convert
    props: list[tuple[str, tuple[str, object]]] = []
    mem = res.get("memory") or {}
    cpu = res.get("cpu") or {}
    limit = mem.get("limit") or 0
    if v2:
        if limit:
            props.append(("MemoryMax", ("t", _u64(limit))))
        if mem.get("reservation"):
            props.append(("MemoryLow", ("t", _u64(mem["reservation"]))))
        swap = convert.memory_swap_to_v2(mem.get("swap") or 0, limit)
        if swap:
            props.append(("MemorySwapMax", ("t", _u64(swap))))
        if cpu.get("shares"):
            props.append(("CPUWeight", ("t", convert.cpu_shares_to_weight(cpu["shares"]))))
        if cpu.get("cpus"):
            props.append(("AllowedCPUs", ("ay", cpuset_bits(cpu["cpus"], "cpu.cpus"))))
        if cpu.get("mems"):
            props.append(("AllowedMemoryNodes", ("ay", cpuset_bits(cpu["mems"], "cpu.mems"))))
    else:
        if limit:
            props.append(("MemoryLimit", ("t", _u64(limit))))
        if cpu.get("shares"):
            props.append(("CPUShares", ("t", int(cpu["shares"]))))
        weight = (res.get("blockIO") or {}).get("weight")
        if weight:
            props.append(("BlockIOWeight", ("t", int(weight))))
    quota = cpu.get("quota") or 0
    period = cpu.get("period") or 0
    if quota or period:
        props.append(("CPUQuotaPerSecUSec", ("t", cpu_quota_per_sec(quota, period))))
        if period:
            props.append(("CPUQuotaPeriodUSec", ("t", int(period))))
    pids = (res.get("pids") or {}).get("limit") or 0
    if pids:
        props.append(("TasksMax", ("t", _u64(pids))))
    return props


def scope_properties(unit: Unit, cid: str, pid: int, res: dict, dev_paths: list[str], *,
                     v2: bool, devices: bool) -> list[tuple[str, tuple[str, object]]]:
    """Everything StartTransientUnit gets for a new container scope."""
    props: list[tuple[str, tuple[str, object]]] = [
        ("Description", ("s", f"hako container {cid}")),
        ("Slice", ("s", unit.slice)),
        ("Delegate", ("b", True)),
        ("PIDs", ("au", [pid])),
        ("DefaultDependencies", ("b", False)),
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
        (("IOAccounting" if v2 else "BlockIOAccounting"), ("b", True)),
    ]
    if devices:
        props += device_properties(res, dev_paths)
    props += resource_properties(res, v2=v2)
    return props
