"""runtime/mempolicy.py through the recording fake: what set_mempolicy gets."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes import FakeSyscalls
from runtime import mempolicy
from runtime.errors import HakoError


def _linux(**pol) -> dict:
    return {"memoryPolicy": pol}


@pytest.mark.parametrize("pol,value,nodes", [
    ({"mode": "MPOL_DEFAULT"}, 0, []),
    ({"mode": "MPOL_LOCAL", "nodes": ""}, 4, []),
    ({"mode": "MPOL_PREFERRED", "nodes": ""}, 1, []),  # empty: the kernel's "local"
    ({"mode": "MPOL_BIND", "nodes": "0-2,7", "flags": ["MPOL_F_NUMA_BALANCING"]},
     2 | 1 << 13, [0, 1, 2, 7]),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0-6:3", "flags": ["MPOL_F_STATIC_NODES"]},
     3 | 1 << 15, [0, 3, 6]),
    ({"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "1", "flags": ["MPOL_F_RELATIVE_NODES"]},
     6 | 1 << 14, [1]),
    ({"mode": "MPOL_PREFERRED_MANY", "nodes": "0,1"}, 5, [0, 1]),
])
def test_what_the_kernel_is_asked(pol, value, nodes):
    sc = FakeSyscalls()
    mempolicy.apply(_linux(**pol), sc)
    assert [c.args for c in sc.named("set_mempolicy")] == [(value, nodes)]


def test_no_policy_no_call():
    sc = FakeSyscalls()
    mempolicy.apply({}, sc)
    mempolicy.apply({"memoryPolicy": None}, sc)
    assert sc.calls == []


def test_a_kernel_refusal_names_the_field():
    sc = FakeSyscalls(fail={"set_mempolicy": OSError(errno.EINVAL, "set_mempolicy(0x2): Invalid argument")})
    with pytest.raises(HakoError) as e:
        mempolicy.apply(_linux(mode="MPOL_BIND", nodes="3"), sc)
    msg = str(e.value)
    assert msg.startswith("linux.memoryPolicy: MPOL_BIND on nodes 3: ")
    assert "a node this machine does not have" in msg


@given(st.sets(st.integers(0, mempolicy.MAX_NODES - 1), min_size=1, max_size=20))
def test_any_node_set_round_trips(nodes):
    text = ",".join(map(str, sorted(nodes)))
    value, got = mempolicy.of(_linux(mode="MPOL_BIND", nodes=text))
    assert value == 2 and got == sorted(nodes)


@given(st.text(max_size=12))
def test_any_nodes_text_is_a_set_or_a_one_line_refusal(text):
    try:
        value, got = mempolicy.of(_linux(mode="MPOL_BIND", nodes=text))
    except HakoError as e:
        assert str(e).startswith("linux.memoryPolicy.nodes: ") and "\n" not in str(e)
        return
    assert got and all(0 <= n < mempolicy.MAX_NODES for n in got)
