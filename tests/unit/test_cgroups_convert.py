"""v1<->v2 value conversions and the update flag parser (property-based)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.cgroups import convert  # noqa: E402
from runtime.cgroups.ops import parse_duration  # noqa: E402
from runtime.errors import HakoError  # noqa: E402

shares = st.integers(min_value=2, max_value=convert.MAX_SHARES)


# ------------------------------------------------------------------ cpu shares
@pytest.mark.parametrize("shares,weight", [(0, 0), (1, 1), (2, 1), (1024, 100),
                                           (262144, 10000), (10**9, 10000)])
def test_shares_fixed_points(shares, weight):
    assert convert.cpu_shares_to_weight(shares) == weight


@given(shares)
def test_shares_to_weight_in_range(s):
    assert 1 <= convert.cpu_shares_to_weight(s) <= 10000


@given(shares, shares)
def test_shares_to_weight_monotone(a, b):
    if a <= b:
        assert convert.cpu_shares_to_weight(a) <= convert.cpu_shares_to_weight(b)


@given(shares)
def test_linear_formula_matches_runc_1_1(s):
    # runc 1.1 (the one installed here): 1 + ((x - 2) * 9999) / 262142
    assert convert.cpu_shares_to_weight_linear(s) == 1 + ((s - 2) * 9999) // 262142
    assert 1 <= convert.cpu_shares_to_weight_linear(s) <= 10000


# ------------------------------------------------------------------ blkio weight
@pytest.mark.parametrize("w,io", [(0, 0), (10, 1), (1000, 10000), (500, 4950)])
def test_blkio_fixed_points(w, io):
    assert convert.blkio_weight_to_io_weight(w) == io


@given(st.integers(10, 1000), st.integers(10, 1000))
def test_blkio_weight_monotone_in_range(a, b):
    wa, wb = convert.blkio_weight_to_io_weight(a), convert.blkio_weight_to_io_weight(b)
    assert 1 <= wa <= 10000 and 1 <= wb <= 10000
    assert (a <= b) == (wa <= wb) or wa == wb


# ------------------------------------------------------------------ swap
@given(st.integers(1, 2**40), st.integers(0, 2**40))
def test_swap_is_memsw_minus_memory(mem, extra):
    assert convert.memory_swap_to_v2(mem + extra, mem) == extra


@given(st.integers(1, 2**40))
def test_swap_unset_and_unlimited_pass_through(mem):
    assert convert.memory_swap_to_v2(0, mem) == 0
    assert convert.memory_swap_to_v2(-1, mem) == -1
    assert convert.memory_swap_to_v2(5, -1) == 5


def test_swap_special_cases():
    assert convert.memory_swap_to_v2(0, -1) == -1  # unlimited both, like v1
    with pytest.raises(HakoError, match="without a memory limit"):
        convert.memory_swap_to_v2(100, 0)
    with pytest.raises(HakoError, match=">="):
        convert.memory_swap_to_v2(100, 200)
    with pytest.raises(HakoError, match="invalid"):
        convert.memory_swap_to_v2(100, -5)


def test_num_to_v2():
    assert [convert.num_to_v2(v) for v in (0, None, -1, 5)] == ["", "", "max", "5"]


# ------------------------------------------------------------------ RAMInBytes
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@given(st.integers(0, 10**6), st.sampled_from(sorted(UNITS)), st.booleans(), st.booleans(),
       st.booleans())
def test_ram_in_bytes_units(n, unit, upper, b, space):
    text = f"{n}{' ' if space else ''}{unit.upper() if upper else unit}{'B' if b else ''}"
    if space and not unit and not b:
        text = text.rstrip()
    if n * UNITS[unit] >= 2**63:
        with pytest.raises(ValueError, match="too large"):
            convert.ram_in_bytes(text)
    else:
        assert convert.ram_in_bytes(text) == n * UNITS[unit]


@given(st.floats(0, 1000, allow_nan=False).map(lambda f: round(f, 3)))
def test_ram_in_bytes_fractions_truncate(f):
    text = f"{f:.3f}m"
    assert convert.ram_in_bytes(text) == int(float(f"{f:.3f}") * (1 << 20))


@pytest.mark.parametrize("bad", ["", "m", "-5", "1x", "1 2", "1mm", "1.2.3m", "1e5", " 5",
                                 "5iB", "1KiB"])
def test_ram_in_bytes_rejects(bad):
    with pytest.raises(ValueError):
        convert.ram_in_bytes(bad)


def test_memory_flag():
    assert convert.parse_memory_flag("memory", "-1") == -1
    assert convert.parse_memory_flag("memory", "512m") == 512 << 20
    with pytest.raises(HakoError, match="invalid value for memory"):
        convert.parse_memory_flag("memory", "lots")


# ------------------------------------------------------------------ update flags
flag_text = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=12)


@given(st.integers(-(2**63), 2**63 - 1))
def test_int_flag_round_trip(v):
    assert convert.parse_int_flag("cpu-quota", str(v)) == v


@given(st.integers(0, 2**64 - 1))
def test_uint_flag_round_trip(v):
    assert convert.parse_int_flag("cpu-period", str(v), unsigned=True) == v


@given(flag_text)
def test_int_flag_never_crashes(text):
    try:
        v = convert.parse_int_flag("pids-limit", text)
    except HakoError as e:
        assert "invalid value for pids-limit" in str(e) and e.code == 2
    else:
        assert v == int(text)


def test_uint_rejects_sign_and_overflow():
    for bad in ("-1", "+1", str(2**64)):
        with pytest.raises(HakoError):
            convert.parse_int_flag("cpu-period", bad, unsigned=True)


@settings(max_examples=200)
@given(st.fixed_dictionaries({}, optional={
    "memory": st.sampled_from(["1g", "512m", "-1", "100"]),
    "memory-swap": st.sampled_from(["2g", "-1"]),
    "memory-reservation": st.sampled_from(["100m"]),
    "cpu-share": st.integers(2, 262144).map(str),
    "cpu-quota": st.integers(-1, 10**6).map(str),
    "cpu-period": st.integers(1000, 10**6).map(str),
    "cpu-burst": st.integers(0, 10**6).map(str),
    "cpu-rt-period": st.integers(1, 10**6).map(str),
    "cpu-rt-runtime": st.integers(-1, 10**6).map(str),
    "cpuset-cpus": st.sampled_from(["0", "0-1", "1"]),
    "cpuset-mems": st.sampled_from(["0"]),
    "pids-limit": st.integers(-1, 10**5).map(str),
    "blkio-weight": st.integers(10, 1000).map(str),
    "cpu-idle": st.sampled_from(["0", "1"]),
}))
def test_flags_to_resources(opts):
    r = convert.resources_from_flags(opts)
    mem, cpu = r["memory"], r["cpu"]
    if "memory" in opts:
        assert mem["limit"] == (-1 if opts["memory"] == "-1"
                                else convert.ram_in_bytes(opts["memory"]))
    else:
        assert "limit" not in mem
    for flag, key in (("cpu-share", "shares"), ("cpu-quota", "quota"), ("cpu-period", "period"),
                      ("cpu-burst", "burst"), ("cpu-rt-period", "realtimePeriod"),
                      ("cpu-rt-runtime", "realtimeRuntime"), ("cpu-idle", "idle")):
        if flag in opts:
            assert cpu[key] == int(opts[flag])
        else:
            assert key not in cpu
    assert r["pids"]["limit"] == int(opts.get("pids-limit", 0))
    if "blkio-weight" in opts:
        assert r["blockIO"]["weight"] == int(opts["blkio-weight"])
    # merged into nothing, the update is what was asked for
    merged = convert.merge_update({}, r)
    if "memory" in opts and opts["memory"] == "-1" and "memory-swap" not in opts:
        assert merged["memory"]["swap"] == -1


def test_merge_update_keeps_what_was_not_named():
    old = {"memory": {"limit": 100, "swap": 200}, "cpu": {"shares": 512, "cpus": "0"},
           "pids": {"limit": 10}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
           "devices": [{"allow": False, "access": "rwm"}], "unified": {"a.b": "1"}}
    new = convert.resources_from_flags({"cpu-quota": "5000"})
    m = convert.merge_update(old, new)
    assert m["memory"] == {"limit": 100, "swap": 200}
    assert m["cpu"]["shares"] == 512 and m["cpu"]["quota"] == 5000
    assert "cpus" not in m["cpu"]          # runc: cpus/mems taken from the request
    assert m["pids"] == {"limit": 0}       # runc: pids.limit taken from the request
    assert "unified" not in m
    assert m["hugepageLimits"] == old["hugepageLimits"] and m["devices"] == old["devices"]
    assert old["pids"] == {"limit": 10}    # the stored dict is not modified


def test_merge_update_memory_unlimited_sets_swap():
    m = convert.merge_update({"memory": {"limit": 100, "swap": 200}},
                             {"memory": {"limit": -1}})
    assert m["memory"] == {"limit": -1, "swap": -1}
    m = convert.merge_update({}, {"memory": {"limit": -1, "swap": 300}})
    assert m["memory"]["swap"] == 300


# ------------------------------------------------------------------ durations
@pytest.mark.parametrize("text,secs", [("5s", 5), ("100ms", 0.1), ("1m30s", 90), ("1.5h", 5400),
                                       ("0", 0), ("250us", 0.00025), ("-1s", -1)])
def test_parse_duration(text, secs):
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("bad", ["5", "s", "1x", "", "1s2"])
def test_parse_duration_rejects(bad):
    with pytest.raises(HakoError, match="interval"):
        parse_duration(bad)


@given(st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s", "m", "h"]))
def test_parse_duration_units(n, unit):
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * scale)
