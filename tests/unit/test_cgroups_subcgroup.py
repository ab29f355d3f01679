"""runtime/cgroups/subcgroup.py: ``exec --cgroup`` arguments and where they lead.

Directories under tmp_path stand in for the container's cgroups (the module
only joins paths and checks that the sub-cgroup exists)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.cgroups.subcgroup import joiner_for, parse
from runtime.errors import HakoError


def test_parse_follows_runc():
    assert parse(["sub"]) == {"": "sub"}
    assert parse(["pids,memory:a", "cpu:/b"]) == {"pids": "a", "memory": "a", "cpu": "/b"}
    assert parse(["name=systemd:x"]) == {"name=systemd": "x"}
    assert parse(["pids:"]) == {"pids": ""}  # the container's own cgroup, as runc


@pytest.mark.parametrize("args, why", [
    (["a", "b"], "must be the only"),
    (["a", "pids:b"], "must be the only"),
    ([":x"], "empty controller"),
    (["pids,,cpu:x"], "empty controller"),
    (["pids:a", "pids:b"], "pids given more than once"),
    (["cpu,pids:a", "pids:b"], "pids given more than once"),
])
def test_parse_errors_are_one_line_usage_errors(args, why):
    with pytest.raises(HakoError) as e:
        parse(args)
    assert why in str(e.value) and "\n" not in str(e.value) and e.value.code == 2


@pytest.fixture
def hybrid(tmp_path):
    """A hybrid record: cpu and cpuacct co-mounted, pids alone, and unified;
    a sub-cgroup "s" in each."""
    cpu = tmp_path / "cpu,cpuacct" / "ctr"
    pids = tmp_path / "pids" / "ctr"
    uni = tmp_path / "unified" / "ctr"
    for d in (cpu, pids, uni):
        (d / "s").mkdir(parents=True)
    return {"driver": "hybrid", "paths": {"cpu": str(cpu), "cpuacct": str(cpu), "pids": str(pids)},
            "unified": [str(tmp_path / "unified"), str(uni)]}


def test_a_bare_path_is_the_sub_cgroup_of_every_hierarchy(hybrid):
    j = joiner_for(hybrid, {"": "s"})
    cpu, pids = hybrid["paths"]["cpu"], hybrid["paths"]["pids"]
    assert j.v1 == [f"{cpu}/s", f"{pids}/s"]
    assert j.unified == hybrid["unified"][1] + "/s"
    assert joiner_for(hybrid, {"": "/s/"}).dirs == j.dirs  # leading/trailing slashes


def test_controllers_move_only_their_hierarchy(hybrid):
    j = joiner_for(hybrid, {"pids": "s"})
    assert j.v1 == [hybrid["paths"]["cpu"], hybrid["paths"]["pids"] + "/s"]
    assert j.unified == hybrid["unified"][1]  # runc: the unified one stays too
    j = joiner_for(hybrid, {"cpuacct": "s", "cpu": "s"})
    assert j.v1[0] == hybrid["paths"]["cpu"] + "/s"


def test_co_mounted_controllers_must_agree(hybrid):
    os.mkdir(hybrid["paths"]["cpu"] + "/t")
    with pytest.raises(HakoError, match="cpu, cpuacct share one hierarchy"):
        joiner_for(hybrid, {"cpu": "s", "cpuacct": "t"})


@pytest.mark.parametrize("subs, why", [
    ({"": "missing"}, "no such sub-cgroup: "),
    ({"pids": "missing"}, "no such sub-cgroup: "),
    ({"net_cls": "s"}, "the container has no net_cls hierarchy (it has: cpu, cpuacct, pids)"),
    ({"": "../other"}, "leads out of the container's cgroup"),
    ({"": "s/../../ctr2"}, "leads out of the container's cgroup"),
])
def test_what_cannot_be_joined_is_refused(hybrid, subs, why):
    with pytest.raises(HakoError) as e:
        joiner_for(hybrid, subs)
    assert why in str(e.value) and str(e.value).startswith("--cgroup ")


def test_v2_and_systemd_records(tmp_path):
    (tmp_path / "ctr" / "s").mkdir(parents=True)
    v2 = {"driver": "v2", "mount": str(tmp_path), "path": str(tmp_path / "ctr")}
    j = joiner_for(v2, {"": "s"})
    assert (j.v1, j.unified) == ([], str(tmp_path / "ctr" / "s"))
    with pytest.raises(HakoError, match=r"single hierarchy.*\(pids:\)"):
        joiner_for(v2, {"pids": "s"})
    sd = dict(v2, driver="systemd", inner="v2", unit="x.scope")
    assert joiner_for(sd, {"": "s"}).dirs == j.dirs


def test_a_container_without_a_cgroup(tmp_path):
    with pytest.raises(HakoError, match="the container has no cgroup"):
        joiner_for(None, {"": "s"})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["/", ".", "..", "a", "b", "ctr", "ctr2", "x", "~", "\\", "\x00"]),
                max_size=12).map("".join))
def test_no_argument_leads_outside_the_container(tmp_path_factory, sub):
    """Whatever the user writes, the process goes to the container's cgroup
    or below it, or exec refuses."""
    base = tmp_path_factory.mktemp("cg")
    ctr = base / "ctr"
    (ctr / "a" / "b").mkdir(parents=True)
    (base / "ctr2").mkdir()
    (base / "ctrx").mkdir()
    record = {"driver": "v2", "mount": str(base), "path": str(ctr)}
    try:
        j = joiner_for(record, {"": sub})
    except HakoError:
        return
    except ValueError:  # an embedded NUL: os.path refuses it before any syscall
        assert "\x00" in sub
        return
    target = j.unified
    assert target == str(ctr) or target.startswith(str(ctr) + "/"), (sub, target)
    assert os.path.realpath(target).startswith(str(ctr))
