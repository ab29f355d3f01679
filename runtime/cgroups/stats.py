"""Statistics in the shape of ``runc events --stats`` (runc's types.Stats).

Collectors fill a plain nested dict; ``to_runc`` then drops what Go's
``omitempty`` would drop, so the JSON an engine parses from hako looks like
runc's (containerd's shim and docker stats read these fields by name).
"""

from __future__ import annotations

import os

from runtime.cgroups import fsutil

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NS = 1_000_000_000


def new() -> dict:
    entry = {"limit": 0, "usage": 0, "max": 0, "failcnt": 0}
    return {
        "cpu": {"usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                          "kernel": 0, "user": 0},
                "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0}},
        "cpuset": {"cpus": [], "cpu_exclusive": 0, "mems": [], "mem_hardwall": 0,
                   "mem_exclusive": 0, "memory_migrate": 0, "memory_spread_page": 0,
                   "memory_spread_slab": 0, "memory_pressure": 0, "sched_load_balance": 0,
                   "sched_relax_domain_level": 0},
        "memory": {"cache": 0, "usage": dict(entry), "swap": dict(entry),
                   "kernel": dict(entry), "kernelTCP": dict(entry), "raw": {}},
        "pids": {"current": 0, "limit": 0},
        "blkio": {},
        "hugetlb": {},
    }


def _drop_zero(d: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in d.items() if not (k in keys and not v)}


def to_runc(st: dict) -> dict:
    """Go's omitempty, field by field, as in runc's types/events.go."""
    cpu = st["cpu"]
    mem = st["memory"]
    out = {
        "cpu": {
            "usage": _drop_zero(cpu["usage"], ("total", "percpu", "percpu_kernel", "percpu_user")),
            "throttling": _drop_zero(cpu["throttling"],
                                     ("periods", "throttledPeriods", "throttledTime")),
        },
        "cpuset": _drop_zero(st["cpuset"], ("cpus", "mems")),
        "memory": _drop_zero({
            "cache": mem["cache"],
            **{k: _drop_zero(mem[k], ("usage", "max"))
               for k in ("usage", "swap", "kernel", "kernelTCP")},
            "raw": mem["raw"],
        }, ("cache", "raw")),
        "pids": _drop_zero(st["pids"], ("current", "limit")),
        "blkio": {k: [_drop_zero(e, ("major", "minor", "op", "value")) for e in v]
                  for k, v in st["blkio"].items() if v},
        "hugetlb": {k: _drop_zero(v, ("usage", "max")) for k, v in st["hugetlb"].items()},
        "intel_rdt": {},
        "network_interfaces": None,
    }
    return out


def _uint(dirpath: str, name: str) -> int:
    try:
        return fsutil.read_uint(dirpath, name)
    except (OSError, ValueError):
        return 0


def cpu_list(text: str) -> list[int]:
    """"0-3,5" -> [0, 1, 2, 3, 5]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def hugepage_sizes(sysfs: str = "/sys/kernel/mm/hugepages") -> list[str]:
    """Page sizes as cgroup file names spell them: 2MB, 1GB, 64KB."""
    out = []
    try:
        names = os.listdir(sysfs)
    except OSError:
        return out
    for n in sorted(names):
        if not (n.startswith("hugepages-") and n.endswith("kB")):
            continue
        try:
            kb = int(n[len("hugepages-"):-2])
        except ValueError:
            continue
        if kb >= 1 << 20:
            out.append(f"{kb >> 20}GB")
        elif kb >= 1 << 10:
            out.append(f"{kb >> 10}MB")
        else:
            out.append(f"{kb}KB")
    return out


# ---------------------------------------------------------------------- v1
def v1_cpuacct(path: str, st: dict) -> None:
    u = st["cpu"]["usage"]
    u["total"] = _uint(path, "cpuacct.usage")
    text = fsutil.read_or(path, "cpuacct.stat", "") or ""
    kv = fsutil.flat_keyed(text)
    u["user"] = kv.get("user", 0) * NS // CLOCK_TICKS
    u["kernel"] = kv.get("system", 0) * NS // CLOCK_TICKS
    per = fsutil.read_or(path, "cpuacct.usage_percpu", "") or ""
    u["percpu"] = [int(x) for x in per.split()]
    allt = fsutil.read_or(path, "cpuacct.usage_all", "") or ""
    kern, user = [], []
    for line in allt.splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            user.append(int(f[1]))
            kern.append(int(f[2]))
    u["percpu_kernel"], u["percpu_user"] = kern, user


def cpu_throttling(path: str, st: dict, *, v2: bool) -> None:
    kv = fsutil.flat_keyed(fsutil.read_or(path, "cpu.stat", "") or "")
    t = st["cpu"]["throttling"]
    t["periods"] = kv.get("nr_periods", 0)
    t["throttledPeriods"] = kv.get("nr_throttled", 0)
    t["throttledTime"] = kv.get("throttled_usec", 0) * 1000 if v2 else kv.get("throttled_time", 0)
    if v2:
        u = st["cpu"]["usage"]
        u["total"] = kv.get("usage_usec", 0) * 1000
        u["user"] = kv.get("user_usec", 0) * 1000
        u["kernel"] = kv.get("system_usec", 0) * 1000


def cpuset(path: str, st: dict, *, v2: bool) -> None:
    c = st["cpuset"]
    cpus = fsutil.read_or(path, "cpuset.cpus.effective" if v2 else "cpuset.cpus", "") or ""
    mems = fsutil.read_or(path, "cpuset.mems.effective" if v2 else "cpuset.mems", "") or ""
    try:
        c["cpus"], c["mems"] = cpu_list(cpus), cpu_list(mems)
    except ValueError:
        pass
    if v2:
        return
    for key, name in (("cpu_exclusive", "cpu_exclusive"), ("mem_hardwall", "mem_hardwall"),
                      ("mem_exclusive", "mem_exclusive"), ("memory_migrate", "memory_migrate"),
                      ("memory_spread_page", "memory_spread_page"),
                      ("memory_spread_slab", "memory_spread_slab"),
                      ("memory_pressure", "memory_pressure"),
                      ("sched_load_balance", "sched_load_balance")):
        c[key] = _uint(path, f"cpuset.{name}")
    try:
        c["sched_relax_domain_level"] = int(
            fsutil.read(path, "cpuset.sched_relax_domain_level").strip())
    except (OSError, ValueError):
        pass


def v1_memory(path: str, st: dict) -> None:
    m = st["memory"]
    m["raw"] = fsutil.flat_keyed(fsutil.read_or(path, "memory.stat", "") or "")
    m["cache"] = m["raw"].get("cache", 0)
    for key, prefix in (("usage", "memory"), ("swap", "memory.memsw"),
                        ("kernel", "memory.kmem"), ("kernelTCP", "memory.kmem.tcp")):
        if not os.path.exists(os.path.join(path, prefix + ".usage_in_bytes")):
            continue
        m[key] = {"limit": _uint(path, prefix + ".limit_in_bytes"),
                  "usage": _uint(path, prefix + ".usage_in_bytes"),
                  "max": _uint(path, prefix + ".max_usage_in_bytes"),
                  "failcnt": _uint(path, prefix + ".failcnt")}


def pids(path: str, st: dict) -> None:
    st["pids"]["current"] = _uint(path, "pids.current")
    text = (fsutil.read_or(path, "pids.max", "") or "").strip()
    st["pids"]["limit"] = int(text) if text.isdigit() else 0


_BLKIO_GROUPS = (
    # (file, stats key) groups in runc's order of preference
    (("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.sectors_recursive", "sectorsRecursive"),
     ("blkio.io_service_time_recursive", "ioServiceTimeRecursive"),
     ("blkio.io_wait_time_recursive", "ioWaitTimeRecursive"),
     ("blkio.io_merged_recursive", "ioMergedRecursive"),
     ("blkio.io_queued_recursive", "ioQueueRecursive"),
     ("blkio.time_recursive", "ioTimeRecursive"),
     ("blkio.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.throttle.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.throttle.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.throttle.io_serviced", "ioServicedRecursive"),
     ("blkio.throttle.io_service_bytes", "ioServiceBytesRecursive")),
)


def _blkio_entries(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        f = line.replace(":", " ").split()
        if len(f) < 3:
            continue  # "Total N"
        try:
            major, minor = int(f[0]), int(f[1])
            if len(f) == 4:
                out.append({"major": major, "minor": minor, "op": f[2], "value": int(f[3])})
            else:
                out.append({"major": major, "minor": minor, "op": "", "value": int(f[2])})
        except ValueError:
            continue
    return out


def v1_blkio(path: str, st: dict) -> None:
    for group in _BLKIO_GROUPS:
        found = {}
        for i, (name, key) in enumerate(group):
            entries = _blkio_entries(fsutil.read_or(path, name, "") or "")
            if not entries and i == 0:
                break
            found[key] = entries
        else:
            st["blkio"] = found
            return


def hugetlb(path: str, st: dict, *, v2: bool, sizes: list[str]) -> None:
    for size in sizes:
        if v2:
            if not os.path.exists(os.path.join(path, f"hugetlb.{size}.current")):
                continue
            events = fsutil.flat_keyed(fsutil.read_or(path, f"hugetlb.{size}.events", "") or "")
            st["hugetlb"][size] = {"usage": _uint(path, f"hugetlb.{size}.current"),
                                   "max": 0, "failcnt": events.get("max", 0)}
        else:
            if not os.path.exists(os.path.join(path, f"hugetlb.{size}.usage_in_bytes")):
                continue
            st["hugetlb"][size] = {"usage": _uint(path, f"hugetlb.{size}.usage_in_bytes"),
                                   "max": _uint(path, f"hugetlb.{size}.max_usage_in_bytes"),
                                   "failcnt": _uint(path, f"hugetlb.{size}.failcnt")}


# ---------------------------------------------------------------------- v2
def v2_memory(path: str, st: dict) -> None:
    m = st["memory"]
    m["raw"] = fsutil.flat_keyed(fsutil.read_or(path, "memory.stat", "") or "")
    m["cache"] = m["raw"].get("file", 0)
    if not os.path.exists(os.path.join(path, "memory.current")):
        return
    usage = {"limit": _uint(path, "memory.max"), "usage": _uint(path, "memory.current"),
             "max": _uint(path, "memory.peak"), "failcnt": 0}
    m["usage"] = usage
    if os.path.exists(os.path.join(path, "memory.swap.current")):
        swap_limit = _uint(path, "memory.swap.max")
        # v1 reports swap as memory+swap: add memory, as runc does
        m["swap"] = {"limit": swap_limit if swap_limit == 2**64 - 1
                     else swap_limit + usage["limit"],
                     "usage": _uint(path, "memory.swap.current") + usage["usage"],
                     "max": 0, "failcnt": 0}


def v2_io(path: str, st: dict) -> None:
    text = fsutil.read_or(path, "io.stat", "") or ""
    sb, sv = [], []
    for line in text.splitlines():
        f = line.split()
        if not f or ":" not in f[0]:
            continue
        try:
            major, minor = (int(x) for x in f[0].split(":", 1))
        except ValueError:
            continue
        for item in f[1:]:
            k, _, v = item.partition("=")
            op, table = {"rbytes": ("Read", sb), "wbytes": ("Write", sb),
                         "rios": ("Read", sv), "wios": ("Write", sv)}.get(k, (None, None))
            if table is None:
                continue
            table.append({"major": major, "minor": minor, "op": op, "value": int(v)})
    st["blkio"] = {"ioServiceBytesRecursive": sb, "ioServicedRecursive": sv}
