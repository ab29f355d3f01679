"""Unit tests of the lifecycle's pure logic: no root, no containers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from runtime import capabilities, signals, state as state_mod
from runtime.cli import UsageError, parse_flags
from runtime.errors import HakoError
from runtime.namespaces import NamespacePlan
from runtime.syscalls import CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, PR_CAPBSET_DROP
from runtime import userns
from fakes import FakeSyscalls

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- signals ---------------------------------------------------------------
@pytest.mark.parametrize("raw,num", [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15),
                                     ("hup", 1), ("SIGRTMIN", 34), ("RTMIN+2", 36),
                                     ("SIGRTMAX-1", 63), ("64", 64), ("CHLD", 17)])
def test_signal_names(raw, num):
    assert signals.parse(raw) == num


@pytest.mark.parametrize("raw", ["0", "65", "SIGFOO", "", "RTMIN+40", "-9", "KILL9"])
def test_bad_signals(raw):
    with pytest.raises(HakoError):
        signals.parse(raw)


@given(st.text(max_size=12))
def test_signal_parse_never_crashes(raw):
    try:
        n = signals.parse(raw)
    except HakoError:
        return
    assert 1 <= n <= 64


# -- flag parsing ------------------------------------------------------------
FLAGS = ["bundle|b=", "pid-file=", "force|f", "preserve-fds="]


@pytest.mark.parametrize("argv,opts,pos", [
    (["--bundle", "/b", "x"], {"bundle": "/b"}, ["x"]),
    (["-b", "/b", "x"], {"bundle": "/b"}, ["x"]),
    (["--bundle=/b", "x"], {"bundle": "/b"}, ["x"]),
    (["-bundle", "/b", "x"], {"bundle": "/b"}, ["x"]),
    (["x", "--force"], {"force": True}, ["x"]),
    (["--force=false", "x"], {"force": False}, ["x"]),
    (["-f", "x", "--", "-y"], {"force": True}, ["x", "-y"]),
])
def test_parse_flags(argv, opts, pos):
    assert parse_flags(argv, FLAGS, stop_at_positional=False) == (opts, pos)


@pytest.mark.parametrize("argv", [["--nope"], ["--bundle"], ["--force=maybe"]])
def test_parse_flag_errors(argv):
    with pytest.raises(UsageError):
        parse_flags(argv, FLAGS, stop_at_positional=False)


def test_global_flags_stop_at_verb():
    opts, rest = parse_flags(["--root", "/r", "kill", "--all", "x"],
                             ["root=", "debug"], stop_at_positional=True)
    assert opts == {"root": "/r"} and rest == ["kill", "--all", "x"]


# -- capabilities ------------------------------------------------------------
def test_cap_masks_and_unknown_names():
    last = capabilities.last_cap()
    assert capabilities.to_mask(["CAP_CHOWN", "CAP_KILL"], "x", last) == (1 << 0) | (1 << 5)
    with pytest.raises(HakoError, match=r"process.capabilities.bounding\[1\]: unknown capability"):
        capabilities.CapPlan({"bounding": ["CAP_CHOWN", "CAP_TYPO"]})


def test_cap_plan_drops_the_rest_of_the_bounding_set():
    plan = capabilities.CapPlan({"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "inheritable": ["CAP_KILL"],
                                 "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]})
    sc = FakeSyscalls()
    plan.drop_bounding(sc)
    dropped = {c.args[1] for c in sc.named("prctl") if c.args[0] == PR_CAPBSET_DROP}
    assert 5 not in dropped and dropped == set(range(plan.last + 1)) - {5}
    sc = FakeSyscalls()
    plan.apply(sc)
    assert sc.named("capset")[0].args == (1 << 5, 1 << 5, 1 << 5)
    assert any(c.args[:3] == (47, 2, 5) for c in sc.named("prctl"))


# -- namespaces and user namespace mappings -------------------------------------
def test_namespace_plan():
    plan = NamespacePlan({"linux": {"namespaces": [
        {"type": "user"}, {"type": "mount"}, {"type": "pid"},
        {"type": "network", "path": "/proc/1/ns/net"}]}})
    assert plan.new == {"user", "mount", "pid"}
    assert plan.join == {"network": "/proc/1/ns/net"}
    assert plan.unshare_flags() == CLONE_NEWNS | CLONE_NEWPID
    assert not plan.unshare_flags() & CLONE_NEWUSER


def test_bad_namespace_path_is_clear():
    plan = NamespacePlan({"linux": {"namespaces": [{"type": "network", "path": "/no/such"}]}})
    with pytest.raises(HakoError, match="cannot open network namespace /no/such"):
        plan.open_joins()


def test_self_mapping_detection():
    me = (os.geteuid(), 1)
    assert userns.is_self_mapping([(0, *me)], [(0, os.getegid(), 1)])
    assert not userns.is_self_mapping([(0, *me), (1, 100000, 65536)], [(0, os.getegid(), 1)])
    assert not userns.is_self_mapping([(0, os.geteuid() + 1, 1)], [(0, os.getegid(), 1)])


# -- state store -----------------------------------------------------------------
def test_ids_are_checked():
    for bad in ["", ".", "..", "a/b", "x y", "../etc"]:
        with pytest.raises(HakoError):
            state_mod.check_id(bad)
    state_mod.check_id("abc-DEF_1.2+3")


def test_state_roundtrip_and_pid_reuse(tmp_path):
    root = str(tmp_path)
    c = state_mod.Container.new(root, "c1")
    me = state_mod.proc_stat(os.getpid())
    c.state = {"id": "c1", "pid": os.getpid(), "hako": {"init_start": me[1]}}
    c.save()
    c.close()
    with state_mod.Container.open(root, "c1") as c:
        assert c.status() == "running"  # alive, no exec.fifo
        os.mkfifo(os.path.join(root, "c1", "exec.fifo"))
        assert c.status() == "created"
        c.state["hako"]["init_start"] = me[1] + 1  # same pid, another process
        assert c.status() == "stopped"
        assert c.oci_state()["pid"] == 0
        c.remove()
    assert not os.path.exists(os.path.join(root, "c1"))


def test_second_create_of_same_id_is_refused(tmp_path):
    c = state_mod.Container.new(str(tmp_path), "dup")
    with pytest.raises(HakoError, match="exists"):
        state_mod.Container.new(str(tmp_path), "dup")
    c.close()


def _saved(tmp_path, state: dict) -> str:
    c = state_mod.Container.new(str(tmp_path), "s")
    c.state = state
    c.save()
    c.close()
    return os.path.join(tmp_path, "s")


def test_state_bin_mirrors_state_json(tmp_path):
    import json
    state = {"id": "s", "pid": 7, "hako": {"cgroup": {"paths": {"pids": "/x"}}, "l": [1, None]},
             "annotations": {"k": "v\u00e9"}}
    d = _saved(tmp_path, state)
    assert json.load(open(os.path.join(d, "state.json"))) == state
    assert open(os.path.join(d, "state.bin"), "rb").read().startswith(b"HAKOSTATE1\n")
    with state_mod.Container.open(str(tmp_path), "s") as c:
        assert c.state == state
    assert sorted(os.listdir(d)) == ["state.bin", "state.json"]  # no temporary files left


@pytest.mark.parametrize("damage", ["missing", "empty", "other magic", "truncated", "not a dict"])
def test_state_json_is_authoritative_without_a_good_state_bin(tmp_path, damage):
    """A directory an older hako made has no state.bin; a damaged one is ignored."""
    import marshal
    d = _saved(tmp_path, {"id": "s", "pid": 9})
    path = os.path.join(d, "state.bin")
    good = open(path, "rb").read()
    content = {"missing": None, "empty": b"", "other magic": b"XX" + good[2:],
               "truncated": good[:-3], "not a dict": b"HAKOSTATE1\n" + marshal.dumps([1])}[damage]
    os.unlink(path)
    if content is not None:
        open(path, "wb").write(content)
    with state_mod.Container.open(str(tmp_path), "s") as c:
        assert c.state == {"id": "s", "pid": 9}


def test_corrupt_state_json_without_state_bin_is_an_error(tmp_path):
    d = _saved(tmp_path, {"id": "s"})
    os.unlink(os.path.join(d, "state.bin"))
    for text in ("{not json", "[1, 2]", "\udcff"):
        open(os.path.join(d, "state.json"), "w", errors="surrogateescape").write(text)
        with pytest.raises(HakoError, match="state.json is corrupt"):
            state_mod.Container.open(str(tmp_path), "s")


def test_dir_without_state_is_not_a_container(tmp_path):
    os.mkdir(tmp_path / "half")
    with pytest.raises(HakoError, match="does not exist"):
        state_mod.Container.open(str(tmp_path), "half")


# -- the hot path stays lean ---------------------------------------------------------
@pytest.mark.parametrize("verb", ["state", "start", "kill", "delete", "list"])
def test_hot_verbs_import_no_heavy_modules(verb):
    code = (f"import sys; sys.argv=['hako','--root','/nonexistent-hako-root','{verb}','x'];"
            "from runtime import cli\n"
            "try: cli.main()\nexcept SystemExit: pass\n"
            f"import runtime.commands.{verb}\n"
            "bad=[m for m in ('pydantic','jsonschema','argparse','socket','subprocess','typing_extensions')"
            " if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


@given(st.lists(st.sampled_from(["", ".", "..", "a", "run", "hako", "x.y", "..."]), max_size=6),
       st.booleans(), st.booleans())
def test_state_root_normalises_like_abspath(parts, absolute, trailing):
    """--root goes through a shortcut for paths that are already normal."""
    path = ("/" if absolute else "") + "/".join(parts) + ("/" if trailing else "")
    if not path:
        return
    assert state_mod.state_root({"root": path}) == os.path.abspath(path)
