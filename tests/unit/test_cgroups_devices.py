"""Device rules: the devices-cgroup emulator, v1 transitions and the v2 eBPF program."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cgroupfs_fake import FakeCgroupfs  # noqa: E402
from runtime.cgroups import create_manager, devices, ebpf, fsutil  # noqa: E402
from runtime.cgroups.devices import WILDCARD, Emulator, Rule  # noqa: E402
from runtime.errors import HakoError  # noqa: E402

DENY_ALL = {"allow": False, "access": "rwm"}


def test_default_rules_follow_the_config_rules():
    rules = devices.rules_for({"devices": [DENY_ALL, {"allow": True, "type": "c", "major": 4,
                                                      "minor": 5, "access": "wr"}]})
    assert rules[0] == Rule("a", WILDCARD, WILDCARD, "rwm", False)
    assert rules[1] == Rule("c", 4, 5, "rw", True)  # perms normalised to rwm order
    assert [r.cgroup_string() for r in rules[2:]] == [
        "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:5 rwm",
        "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]


def test_a_config_device_replaces_the_default_rule_for_its_path():
    rules = devices.rules_for({}, devices.device_paths(
        {"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}}))
    assert "c 1:3 rwm" not in [r.cgroup_string() for r in rules]


@pytest.mark.parametrize("bad,msg", [({"allow": True, "type": "x", "access": "r"}, "type"),
                                     ({"allow": True, "access": ""}, "access cannot be empty"),
                                     ({"allow": True, "access": "rq"}, "invalid access")])
def test_invalid_rules(bad, msg):
    with pytest.raises(HakoError, match=msg):
        devices.rules_for({"devices": [bad]})


def test_emulator_whitelist_and_blacklist():
    e = Emulator.build([Rule("a", -1, -1, "rwm", False), Rule("c", 1, 3, "rwm", True),
                        Rule("c", 1, 3, "w", False)])
    assert not e.default_allow and e.rules == {("c", 1, 3): "rm"}
    assert e.allows("c", 1, 3, "r") and not e.allows("c", 1, 3, "w")
    assert not e.allows("c", 1, 5, "r")
    e = Emulator.build([Rule("a", -1, -1, "rwm", True), Rule("b", 8, -1, "w", False)])
    assert e.default_allow and e.rules == {("b", 8, WILDCARD): "w"}
    assert not e.allows("b", 8, 1, "w") and e.allows("b", 8, 1, "r")


def test_emulator_refuses_to_punch_holes_in_wildcards():
    with pytest.raises(HakoError, match="wildcard"):
        Emulator.build([Rule("a", -1, -1, "rwm", False), Rule("c", 136, -1, "rwm", True),
                        Rule("c", 136, 2, "r", False)])


def test_from_list():
    assert Emulator.from_list("a *:* rwm\n").default_allow
    e = Emulator.from_list("c 1:3 rwm\nb *:* m\n")
    assert not e.default_allow and e.rules == {("c", 1, 3): "rwm", ("b", -1, -1): "m"}
    with pytest.raises(HakoError, match="devices.list"):
        Emulator.from_list("garbage\n")


def test_transition_from_allow_all_starts_with_deny_all():
    target = Emulator.build(devices.rules_for({"devices": [DENY_ALL]}))
    out = Emulator.from_list("a *:* rwm\n").transition(target)
    assert out[0] == Rule("a", -1, -1, "rwm", False)
    assert all(r.allow for r in out[1:])
    assert len(out) == 1 + len(target.rules)


def test_transition_between_whitelists_is_minimal_and_never_denies_all():
    cur = Emulator.from_list("c 1:3 rwm\nc 1:5 rwm\nc 4:4 r\n")
    target = Emulator.build([Rule("a", -1, -1, "rwm", False), Rule("c", 1, 3, "rwm", True),
                             Rule("c", 4, 4, "rw", True), Rule("c", 7, 7, "m", True)])
    out = cur.transition(target)
    assert [(r.allow, r.cgroup_string()) for r in out] == [
        (False, "c 1:5 rwm"), (True, "c 4:4 w"), (True, "c 7:7 m")]
    assert cur.transition(cur) == []


rule_st = st.builds(
    Rule, st.sampled_from(["a", "b", "c"]), st.sampled_from([WILDCARD, 1, 5, 136]),
    st.sampled_from([WILDCARD, 0, 3, 9]),
    st.sets(st.sampled_from("rwm"), min_size=1).map(lambda s: "".join(c for c in "rwm" if c in s)),
    st.booleans())


def _buildable(rules):
    try:
        return Emulator.build(rules)
    except HakoError:
        return None


@settings(max_examples=300)
@given(st.lists(rule_st, max_size=8), st.lists(rule_st, max_size=8))
def test_transition_reaches_the_target(a, b):
    """Replaying the transition on the current state gives the target."""
    cur, target = _buildable(a), _buildable(b)
    if cur is None or target is None:
        return
    if cur.default_allow:
        cur = Emulator(True)  # devices.list cannot show an allow-all cgroup's exceptions
    state = cur.copy()
    for r in cur.transition(target):
        state.apply(r, strict=False)  # as the kernel takes the write
    assert state == target


@settings(max_examples=300)
@given(st.lists(rule_st, max_size=8), st.sampled_from(["b", "c"]), st.sampled_from([1, 5, 136, 7]),
       st.sampled_from([0, 3, 9, 11]), st.sampled_from(["r", "w", "m", "rw", "rwm"]))
def test_ebpf_program_agrees_with_the_emulator(rules, t, major, minor, access):
    """The generated BPF program decides every access as the v1 emulator does."""
    emu = _buildable(rules)
    if emu is None:
        return
    prog = ebpf.program(rules)
    acc = sum({"m": 1, "r": 2, "w": 4}[c] for c in access)
    got = ebpf.evaluate(prog, 2 if t == "c" else 1, acc, major, minor)
    assert bool(got) == emu.allows(t, major, minor, access)


def test_ebpf_encoding():
    prog = ebpf.program(devices.rules_for({"devices": [DENY_ALL]}))
    code = ebpf.encode(prog)
    assert len(code) == 8 * len(prog)
    assert prog[-1] == (0x95, 0, 0, 0, 0) and prog[-2][0] == 0xB4 and prog[-2][4] == 0


# ---------------------------------------------------------------- v1 writes
def test_v1_devices_written_in_order(tmp_path, monkeypatch):
    fs = FakeCgroupfs(tmp_path, "v1").install(monkeypatch)
    log: list = []
    monkeypatch.setattr(fsutil, "WRITE_LOG", log)
    m = create_manager({"linux": {"cgroupsPath": "/c1"}}, "c1", rootless=False, systemd=False,
                       host=fs.host())
    m.create()
    m.apply({"devices": [DENY_ALL, {"allow": True, "type": "b", "major": 8, "minor": 0,
                                    "access": "r"}]})
    dev = [(Path(p).name, v) for p, v in log if "/devices/" in p]
    assert dev[0] == ("devices.deny", "a *:* rwm")
    assert ("devices.allow", "b 8:0 r") in dev
    assert ("devices.allow", "c 1:3 rwm") in dev
    assert all(name == "devices.allow" for name, _ in dev[1:])


def test_v1_devices_skipped_on_update(tmp_path, monkeypatch):
    fs = FakeCgroupfs(tmp_path, "v1").install(monkeypatch)
    log: list = []
    monkeypatch.setattr(fsutil, "WRITE_LOG", log)
    m = create_manager({"linux": {"cgroupsPath": "/c1"}}, "c1", rootless=False, systemd=False,
                       host=fs.host())
    m.create()
    m.apply({"devices": [DENY_ALL]}, skip_devices=True)
    assert not [p for p, _ in log if "/devices/" in p]


def test_v1_without_devices_controller_is_refused(tmp_path, monkeypatch):
    fs = FakeCgroupfs(tmp_path, "v1", v1=("memory", "pids")).install(monkeypatch)
    m = create_manager({"linux": {"cgroupsPath": "/c1"}}, "c1", rootless=False, systemd=False,
                       host=fs.host())
    m.create()
    with pytest.raises(HakoError, match="devices cgroup controller is not mounted"):
        m.apply({})
