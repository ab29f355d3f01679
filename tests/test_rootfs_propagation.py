"""linux.rootfsPropagation, seen from inside the container (issue 13, part 3).

Every value, root and rootless, checked in the container's /proc/self/mountinfo.
hako sets "/" up with the requested propagation (rslave for [r]unbindable, which
would make the rootfs impossible to bind) and applies the requested one to the
new "/" after pivot_root (mountopts.setup_propagation / final_propagation).

Where runc 1.1 differs (checked by hand, and by test_same_as_runc for the values
where it does not):
- unbindable, runbindable: runc fails at create ("mount rootfs:rootfs, flags:
  0x5000: invalid argument"); hako runs the container with "/" unbindable.
- shared, rshared: runc's "/" in the container is not shared (it set "/" shared
  before binding the rootfs from a parent it had just made private); hako's is.
- private when the rootfs lives on a slave mount: runc leaves "/" a slave
  (master:N), hako makes it private (test_private_root_loses_its_master).
"""

from __future__ import annotations

import shlex

import pytest

VALUES = ["shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable",
          "runbindable"]


def propagation(mountinfo: str) -> list[tuple[str, frozenset[str]]]:
    """(mount point, propagation tags: shared / master / unbindable) per line."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        sep = fields.index("-", 6)
        tags = frozenset(o.split(":")[0] for o in fields[6:sep])
        out.append((fields[4], tags))
    return out


def patch(value: str, args: list[str] | None = None):
    def apply(c):
        c["linux"]["rootfsPropagation"] = value
        if args:
            c["process"]["args"] = args
    return apply


def inside(rt, value: str) -> list[tuple[str, frozenset[str]]]:
    bundle = rt.bundle(["cat", "/proc/self/mountinfo"], patch=patch(value))
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    return propagation(r.stdout)


@pytest.mark.parametrize("value", VALUES)
def test_propagation_inside(rt, value):
    mounts = inside(rt, value)
    assert mounts[0][0] == "/"
    root = mounts[0][1]
    proc = dict(mounts)["/proc"]  # a fresh mount made by hako under "/"
    recursive = value in ("rshared", "rslave", "rprivate", "runbindable")
    kind = value[1:] if recursive else value
    if kind == "shared":
        assert "shared" in root
    elif kind == "unbindable":
        assert root == {"unbindable"}
    else:  # slave / private: never shared nor unbindable (no master on this host's /)
        assert not root & {"shared", "unbindable"}
        if kind == "private":
            assert "master" not in root
    if recursive:
        for point, tags in mounts:
            if kind == "shared":
                assert "shared" in tags, point
            elif kind == "unbindable":
                assert tags == {"unbindable"}, point
            else:
                assert not tags & {"shared", "unbindable"}, point
    else:
        assert not proc & {"shared", "unbindable"}


@pytest.mark.parametrize("value", ["slave", "rslave", "private", "rprivate"])
def test_same_as_runc(rt, value):
    bundle = rt.bundle(["cat", "/proc/self/mountinfo"], patch=patch(value))
    ours = rt.hako("run", "--bundle", bundle, rt.new_id())
    theirs = rt.runc("run", "--bundle", bundle, rt.new_id())
    assert theirs.returncode == 0, f"runc failed: {theirs.stderr}"
    assert ours.returncode == 0, ours.stderr
    assert propagation(ours.stdout) == propagation(theirs.stdout)


@pytest.mark.parametrize("value", ["unbindable", "runbindable", "private"])
def test_unbindable_root_cannot_be_bound_inside(rt, value):
    """What unbindable is for: a bind of the container's "/" is refused inside
    (and works with private, so that the refusal means something)."""
    script = "mkdir -p /tmp/b && mount --bind / /tmp/b; echo rc=$?"
    def with_sys_admin(c):
        c["linux"]["rootfsPropagation"] = value
        for kind in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")
        c["root"]["readonly"] = False

    bundle = rt.bundle(["sh", "-c", script], patch=with_sys_admin)
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    if value == "private":
        assert "rc=0" in r.stdout, r.stdout + r.stderr
    else:
        assert "rc=0" not in r.stdout and "rc=" in r.stdout, r.stdout + r.stderr


def test_private_root_loses_its_master(rt, tmp_path_factory):
    """A rootfs on a slave mount: "private" (set on the namespace's "/" only, as
    runc does) left the container's "/" a slave of the host mount; after
    pivot_root hako sets it private; "slave" keeps the master."""
    if rt.rootless:
        pytest.skip("needs a mount namespace of the test's own with a slave mount (root)")
    base = rt.dir / "w"
    lines = ["set -e", f"B={shlex.quote(str(base))}", "mkdir -p $B/m $B/m2",
             "mount -t tmpfs tmpfs $B/m", "mount --make-shared $B/m",
             "mount --bind $B/m $B/m2", "mount --make-slave $B/m2"]
    for value in ("private", "slave", "rprivate"):
        bundle = rt.bundle(["head", "-n1", "/proc/self/mountinfo"], patch=patch(value))
        lines.append(f"cp -a {bundle}/rootfs $B/m/{value}")
        config = rt.read_config(bundle)
        config["root"]["path"] = f"{base}/m2/{value}"
        rt.write_config(bundle, config)
        argv = " ".join(shlex.quote(a) for a in rt.hako_argv("run", "--bundle", bundle,
                                                             rt.new_id()))
        lines.append(f"echo {value} $({argv})")
    r = rt.run(["unshare", "-m", "--propagation", "shared", "sh", "-c", "\n".join(lines)])
    assert r.returncode == 0, r.stderr
    got = {}
    for line in r.stdout.splitlines():
        value, rest = line.split(" ", 1)
        got[value] = propagation(rest)[0][1]
    assert got["slave"] == {"master"}
    assert got["private"] == frozenset()
    assert got["rprivate"] == frozenset()
