"""Value conversions between the OCI (cgroup v1 shaped) config and cgroup v2,
and the parsers ``hako update`` needs -- all as runc does them, so a config
means the same thing under hako as under runc.

The functions are pure (no file access) and property-tested with hypothesis.
"""

from __future__ import annotations

import math
import re

from runtime.errors import HakoError

MAX_SHARES = 262144  # kernel MAX_SHARES (1 << 18)


def cpu_shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000]; 0 means unset.

    The current runc / opencontainers/cgroups formula: a quadratic in
    log2(shares) that maps the three fixed points exactly (2 -> 1,
    1024 -> 100 (both defaults), 262144 -> 10000), where the older linear
    formula mapped the default 1024 shares to weight 39.
    """
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= MAX_SHARES:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return int(math.ceil(math.pow(10, exponent)))


def cpu_shares_to_weight_linear(shares: int) -> int:
    """runc <= 1.2's linear formula (kept for reference and comparisons)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000], linear, 0 means unset."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def memory_swap_to_v2(swap: int, memory: int) -> int:
    """OCI ``memory.swap`` is memory+swap (v1 memsw); v2's memory.swap.max is
    swap alone. Returns the v2 value: -1 for "max", 0 for "leave alone"."""
    if memory == -1 and swap == 0:
        return -1  # unlimited memory and no swap given: unlimited both, as v1
    if swap in (-1, 0):
        return swap
    if memory == -1:
        return swap
    if memory == 0:
        raise HakoError("linux.resources.memory.swap: cannot set a swap limit without "
                        "a memory limit on cgroup v2")
    if memory < 0:
        raise HakoError(f"linux.resources.memory.limit: invalid value {memory}")
    if swap < memory:
        raise HakoError("linux.resources.memory: memory+swap limit (swap) must be >= "
                        "the memory limit")
    return swap - memory


def num_to_v2(value: int | None) -> str:
    """runc's numToStr for v2 ``.max/.low/.high`` files: 0 unset, -1 "max"."""
    if not value:
        return ""
    if value == -1:
        return "max"
    return str(value)


# ---------------------------------------------------------------------------
# hako update's flags (runc's update.go)

_RAM_RE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[bB]?$")
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """docker/go-units RAMInBytes as vendored by runc 1.1: ``512m``, ``1.5G``,
    ``100kb``, ``1024`` (bytes); binary multiples, case-insensitive, optional
    ``b``; the float is truncated. ``-1`` is handled by the caller."""
    m = _RAM_RE.match(text)
    if not m:
        raise ValueError(f"invalid size: '{text}'")
    try:
        size = float(m.group(1))
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    if m.group(3):
        size *= _BINARY[m.group(3).lower()]
    if size >= 2**63:
        raise ValueError(f"invalid size: '{text}' (too large)")
    return int(size)


def parse_memory_flag(flag: str, text: str) -> int:
    if text == "-1":
        return -1
    try:
        return ram_in_bytes(text)
    except ValueError as e:
        raise HakoError(f"invalid value for {flag}: {e}", 2) from None


_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_UINT_RE = re.compile(r"^[0-9]+$")


def parse_int_flag(flag: str, text: str, *, unsigned: bool = False, bits: int = 64) -> int:
    """strconv.ParseInt/ParseUint(text, 10, bits) with runc's message."""
    if not (_UINT_RE if unsigned else _INT_RE).match(text):
        raise HakoError(f'invalid value for {flag}: parsing "{text}": invalid syntax', 2)
    v = int(text)
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2**(bits - 1)), 2**(bits - 1) - 1)
    if not lo <= v <= hi:
        raise HakoError(f'invalid value for {flag}: parsing "{text}": value out of range', 2)
    return v


def resources_from_flags(opts: dict) -> dict:
    """The LinuxResources a runc-style ``update`` command line asks for.

    Only flags given appear; the kernel-memory flags are accepted and ignored
    with a warning, as runc does (the caller warns). Returns the resources
    dict in OCI JSON form.
    """
    r: dict = {"memory": {}, "cpu": {}, "blockIO": {}, "pids": {}}
    if opts.get("blkio-weight") is not None:
        v = parse_int_flag("blkio-weight", opts["blkio-weight"])
        if v != 0:
            if not 0 < v <= 65535:
                raise HakoError(f"invalid value for blkio-weight: {v} (10 to 1000)", 2)
            r["blockIO"]["weight"] = v
    for flag, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        if opts.get(flag):
            r["cpu"][key] = opts[flag]
    if opts.get("cpu-idle"):
        r["cpu"]["idle"] = parse_int_flag("cpu-idle", opts["cpu-idle"])
    for flag, key in (("cpu-burst", "burst"), ("cpu-period", "period"),
                      ("cpu-rt-period", "realtimePeriod"), ("cpu-share", "shares")):
        if opts.get(flag):
            r["cpu"][key] = parse_int_flag(flag, opts[flag], unsigned=True)
    for flag, key in (("cpu-quota", "quota"), ("cpu-rt-runtime", "realtimeRuntime")):
        if opts.get(flag):
            r["cpu"][key] = parse_int_flag(flag, opts[flag])
    for flag, key in (("memory", "limit"), ("memory-swap", "swap"),
                      ("memory-reservation", "reservation")):
        if opts.get(flag):
            r["memory"][key] = parse_memory_flag(flag, opts[flag])
    pids = opts.get("pids-limit")
    r["pids"]["limit"] = parse_int_flag("pids-limit", pids) if pids is not None else 0
    return r


def merge_update(old: dict, new: dict) -> dict:
    """runc update's merge of the requested LinuxResources into the stored ones.

    Some values depend on each other (swap on memory, quota on period), so the
    drivers are always given the whole merged set; what the update did not
    name keeps its stored value, except -- as in runc -- cpus/mems, pids.limit
    and ``unified``, which are taken from the request as they are (absent
    means "unset", i.e. not written again). Devices are never updated.
    """
    import copy
    out = copy.deepcopy(old or {})
    mem_new = new.get("memory") or {}
    cpu_new = new.get("cpu") or {}
    blk_new = new.get("blockIO") or {}
    mem = out.setdefault("memory", {})
    cpu = out.setdefault("cpu", {})
    blk = out.setdefault("blockIO", {})
    if blk_new.get("weight") is not None:
        blk["weight"] = blk_new["weight"]
    for key in ("period", "quota", "burst", "shares", "realtimePeriod", "realtimeRuntime",
                "idle"):
        if cpu_new.get(key) is not None:
            cpu[key] = cpu_new[key]
    for key in ("cpus", "mems"):
        if cpu_new.get(key):
            cpu[key] = cpu_new[key]
        else:
            cpu.pop(key, None)
    if mem_new.get("limit") is not None:
        mem["limit"] = mem_new["limit"]
        if mem_new["limit"] == -1 and mem_new.get("swap") is None:
            mem["swap"] = -1
    for key in ("reservation", "swap", "checkBeforeUpdate"):
        if mem_new.get(key) is not None:
            mem[key] = mem_new[key]
    out["pids"] = {"limit": (new.get("pids") or {}).get("limit") or 0}
    if new.get("unified"):
        out["unified"] = dict(new["unified"])
    else:
        out.pop("unified", None)
    return out
