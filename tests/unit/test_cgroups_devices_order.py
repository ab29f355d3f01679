"""linux.resources.devices in the listed order (issue 13, part 5), without root:
v1 through the fake cgroupfs' write log, v2 through the eBPF program generator
and its interpreter.

runtime-spec config-linux.md: "The runtime MUST apply entries in the listed
order" -- each entry acts on what the earlier ones left (a later one overrides),
and hako writes the exceptions in the order the entries name them, the config's
before the defaults, as crun does and as the OCI validation suite's
linux_cgroups_devices checks in devices.list. runc 1.1 writes them sorted by
device number instead (its devices.list starts with the defaults' "b *:* m",
"c *:* m"): the same access, not the listed order. The real v1 cgroup (root,
this hybrid host) is tested in tests/test_devices_order.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cgroupfs_fake import FakeCgroupfs  # noqa: E402
from runtime.cgroups import create_manager, devices, ebpf, fsutil  # noqa: E402
from runtime.cgroups.devices import DEFAULT_ALLOWED, WILDCARD, Emulator, Rule  # noqa: E402
from devices_cases import DENY_ALL, KMSG, SEQUENCES, SUITE  # noqa: E402

DEFAULTS = [Rule(t, mj, mn, p, True).cgroup_string() for _, t, mj, mn, p in DEFAULT_ALLOWED]


def _v1_writes(tmp_path, monkeypatch, entries: list) -> list[tuple[str, str]]:
    fs = FakeCgroupfs(tmp_path, "v1").install(monkeypatch)
    log: list = []
    monkeypatch.setattr(fsutil, "WRITE_LOG", log)
    m = create_manager({"linux": {"cgroupsPath": "/c1"}}, "c1", rootless=False, systemd=False,
                       host=fs.host())
    m.create()
    m.apply({"devices": entries})
    return [(Path(p).name, v) for p, v in log if "/devices/" in p]


def test_v1_writes_the_config_entries_in_order_then_the_defaults(tmp_path, monkeypatch):
    writes = _v1_writes(tmp_path, monkeypatch, SUITE)
    assert writes == ([("devices.deny", "a *:* rwm"), ("devices.allow", "c 10:229 rwm"),
                       ("devices.allow", "b 8:20 rw"), ("devices.allow", "b 10:200 r")]
                      + [("devices.allow", d) for d in DEFAULTS])


def test_an_exception_keeps_the_place_of_the_entry_that_first_named_it():
    emu = Emulator.build(devices.rules_for({"devices": [
        DENY_ALL, {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "r"},
        {"allow": True, **KMSG, "access": "w"}]}))
    order = [Rule(*key, perms, True).cgroup_string() for key, perms in emu.ordered()]
    # /dev/tty (c 5:0) is also a default: merged into the config's earlier entry
    assert order[:2] == ["c 5:0 rwm", "c 1:11 w"]
    assert order[2:] == [d for d in DEFAULTS if d != "c 5:0 rwm"]


@pytest.mark.parametrize("name,entries,allowed", SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_later_entries_override_earlier_ones_v1_and_v2(name, entries, allowed):
    rules = devices.rules_for({"devices": entries})
    emu = Emulator.build(rules)
    prog = ebpf.program(rules)
    for access in "rwm":
        want = access in allowed
        assert emu.allows("c", 1, 11, access) == want, (name, access)
        bits = {"m": ebpf.ACC_MKNOD, "r": ebpf.ACC_READ, "w": ebpf.ACC_WRITE}[access]
        assert bool(ebpf.evaluate(prog, ebpf.DEV_CHAR, bits, 1, 11)) == want, (name, access)
    # the defaults stay usable whatever the config says (runc and crun alike)
    assert emu.allows("c", 1, 3, "rw") and ebpf.evaluate(prog, ebpf.DEV_CHAR, 6, 1, 3)


def test_a_config_cannot_deny_a_default_device():
    rules = devices.rules_for({"devices": [DENY_ALL, {"allow": False, "type": "c", "major": 1,
                                                      "minor": 3, "access": "rwm"}]})
    assert Emulator.build(rules).allows("c", 1, 3, "rw")


def test_v2_blocks_follow_the_listed_order():
    prog = ebpf.program(devices.rules_for({"devices": SUITE}))
    # each block starts with "if type != T goto next"; the majors come after
    majors = [ins[4] for ins in prog if ins[0] == 0x55 and ins[1] == 4]
    assert majors[:3] == [10, 8, 10]


rule_st = st.builds(
    Rule, st.sampled_from(["a", "b", "c"]), st.sampled_from([WILDCARD, 1, 5, 136]),
    st.sampled_from([WILDCARD, 0, 3, 9]),
    st.sets(st.sampled_from("rwm"), min_size=1).map(lambda s: "".join(c for c in "rwm" if c in s)),
    st.booleans())


@settings(max_examples=300)
@given(st.lists(rule_st, max_size=10))
def test_a_fresh_cgroup_lists_the_exceptions_in_rule_order(rules):
    """Replaying the writes on a new cgroup (allow-all, as the kernel creates it
    under the root) leaves the kernel's list in the order the emulator built."""
    try:
        target = Emulator.build(rules)
    except Exception:  # a hole in a wildcard: refused, tested elsewhere
        return
    state = Emulator(True)
    for r in state.transition(target):
        state.apply(r, strict=False)
    assert state == target and list(state.rules) == list(target.rules)
