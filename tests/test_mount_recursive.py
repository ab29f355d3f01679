"""Recursive mount attributes (rro, rnosuid, rnoexec, ... : mount_setattr(2)
with AT_RECURSIVE), root and rootless, against runc: the attribute reaches
the mounts below the destination, which a plain ``ro`` does not.

Every bundle builds its own tree of mounts: a tmpfs on /data with another
tmpfs on /data/sub, then /data bound on /view with the options under test.
"""

from __future__ import annotations

import pytest

#: the mountinfo options of /view and /view/sub, and whether each takes a write
PROBE = ("for m in /view /view/sub; do "
         "awk -v m=$m '$5 == m {print $5, $6}' /proc/self/mountinfo; "
         "touch $m/x 2>/dev/null && echo $m writable || echo $m read-only; done")


def _tree(options: list[str]) -> dict:
    def patch(cfg: dict) -> dict:
        cfg["mounts"] += [
            {"destination": "/data", "type": "tmpfs", "source": "tmpfs",
             "options": ["mode=755"]},
            {"destination": "/data/sub", "type": "tmpfs", "source": "tmpfs",
             "options": ["mode=755"]},
            {"destination": "/view", "type": "bind", "source": "data", "options": options},
        ]
        return cfg
    return patch


def _run_both(rt, options: list[str]) -> tuple[str, str]:
    bundle = rt.bundle(["sh", "-c", PROBE], patch=_tree(options))
    # the bind's source is the tmpfs tree the earlier entries made, as the
    # container's mount namespace has it before pivot_root
    cfg = rt.read_config(bundle)
    cfg["mounts"][-1]["source"] = str(bundle / "rootfs" / "data")
    rt.write_config(bundle, cfg)
    rt.chown(bundle / "config.json")
    ours = rt.hako("run", "--bundle", bundle, rt.new_id(), timeout=60)
    theirs = rt.runc("run", "--bundle", bundle, rt.new_id(), timeout=60)
    assert ours.returncode == 0, ours.stderr
    assert theirs.returncode == 0, theirs.stderr
    return ours.stdout, theirs.stdout


def test_rro_reaches_the_mounts_below(rt):
    ours, theirs = _run_both(rt, ["rbind", "rro"])
    assert "/view read-only" in ours and "/view/sub read-only" in ours, ours
    assert ours == theirs, f"hako:\n{ours}\nrunc:\n{theirs}"


def test_plain_ro_does_not(rt):
    ours, theirs = _run_both(rt, ["rbind", "ro"])
    assert "/view read-only" in ours and "/view/sub writable" in ours, ours
    assert ours == theirs


@pytest.mark.parametrize("options", [
    ["rbind", "rnosuid", "rnodev", "rnoexec"],
    ["rbind", "rnoatime", "rnodiratime"],
    ["rbind", "rstrictatime", "rnosymfollow"],
    ["rbind", "ro", "rrw"],
])
def test_attributes_match_runc(rt, options):
    ours, theirs = _run_both(rt, options)
    assert ours == theirs, f"{options}\nhako:\n{ours}\nrunc:\n{theirs}"


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_clearing_a_locked_attribute_is_refused(rt):
    """The host's /sys keeps its access-time mode locked in a user namespace:
    rnoatime cannot change it. One line naming the entry and the options;
    nothing left."""
    def patch(cfg: dict) -> dict:
        cfg["mounts"].append({"destination": "/hostsys", "type": "bind", "source": "/sys",
                              "options": ["rbind", "rnoatime"]})
        return cfg
    bundle = rt.bundle(["true"], patch=patch)
    cid = rt.new_id()
    r = rt.hako("run", "--bundle", bundle, cid, timeout=60)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert "rnoatime on /hostsys" in lines[0] and "locked" in lines[0], lines[0]
    assert rt.hako("state", cid, timeout=30).returncode != 0
