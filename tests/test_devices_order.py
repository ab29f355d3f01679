"""linux.resources.devices applied in the listed order, on the real cgroup v1
devices controller of this hybrid host (root; a rootless container here has no
cgroup, as with runc). Issue 13, part 5; the rules and the v2 filter without
root: tests/unit/test_cgroups_devices_order.py.

runtime-spec config-linux.md: "The runtime MUST apply entries in the listed
order." The OCI validation suite (linux_cgroups_devices) reads that in
devices.list: the config's allowed entries first, in order; crun passes. runc
1.1.5 grants the same access but writes the exceptions sorted by device
number, so its devices.list starts with the defaults' wildcards ("b *:* m",
"c *:* m"): it deviates there, and only there (the access tests below run it
too and agree with hako).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devices_cases import KMSG_NODE, SEQUENCES, SUITE

pytestmark = pytest.mark.parametrize("mode", ["root"], indirect=True)


def devices_list(rt, cid: str) -> list[str]:
    st = json.loads((rt.state_dir / cid / "state.json").read_text())
    path = Path(((st["hako"].get("cgroup") or {}).get("paths") or {})["devices"])
    return (path / "devices.list").read_text().splitlines()


def test_devices_list_follows_the_config_order(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "100"], patch={"linux": {"resources": {"devices": SUITE}}})
    r = rt.hako("create", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert devices_list(rt, cid)[:4] == ["c 10:229 rwm", "b 8:20 rw", "b 10:200 r", "c *:* m"]


@pytest.mark.parametrize("runtime", ["hako", "runc"])
@pytest.mark.parametrize("name,entries,allowed", SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_later_entries_override_earlier_ones(rt, runtime, name, entries, allowed):
    """Opening /dev/kmsg (c 1:11) for writing (no byte written) inside the container."""
    patch = {"linux": {"devices": [KMSG_NODE], "resources": {"devices": entries}}}
    bundle = rt.bundle(["sh", "-c", ": > /dev/kmsg && echo open-ok"], patch=patch)
    r = getattr(rt, runtime)("run", "--bundle", bundle, rt.new_id())
    if "w" in allowed:
        assert r.returncode == 0 and r.stdout == "open-ok\n", (r.returncode, r.stdout, r.stderr)
    else:
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (r.stdout, r.stderr)
