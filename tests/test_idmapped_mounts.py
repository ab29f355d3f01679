"""Idmapped bind mounts (mounts[].uidMappings/gidMappings, idmap, ridmap), on
real containers. runc 1.1 here has none, so the oracle is runc 1.2's own
integration tests (tests/integration/idmap.bats): the same mappings must show
the same owners. Root only: rootless gets one clear line and nothing made.
"""

from __future__ import annotations

import os

import pytest

import busybox

STAT = "stat -c '%n %u %g' "
USERNS = {"containerID": 0, "hostID": 100000, "size": 65536}


def _source(rt):
    """Files with known owners on the host's filesystem."""
    src = rt.dir / "idmap-src"
    src.mkdir()
    for name, uid, gid in (("foo", 0, 0), ("f100", 100, 211), ("f101", 101, 222)):
        (src / name).write_text(name)
        os.chown(src / name, uid, gid)
    return src


def _mount(src, dest: str = "/mnt", options=("bind", "idmap"), uids=None, gids=None) -> dict:
    m = {"destination": dest, "type": "bind", "source": str(src), "options": list(options)}
    if uids is not None:
        m["uidMappings"], m["gidMappings"] = uids, gids if gids is not None else uids
    return m


def _run(rt, script: str, mounts: list[dict], userns: bool = False):
    def patch(cfg: dict) -> dict:
        cfg["mounts"] += mounts
        if userns:
            cfg["linux"]["namespaces"].append({"type": "user"})
            cfg["linux"]["uidMappings"] = [USERNS]
            cfg["linux"]["gidMappings"] = [USERNS]
        return cfg
    bundle = rt.bundle(["sh", "-c", script], patch=patch)
    if userns:  # the rootfs as the user namespace's root sees its own
        busybox.chown_tree(bundle / "rootfs", 100000, 100000)
    return rt.hako("run", "--bundle", bundle, rt.new_id(), timeout=60)


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_mapping_without_a_user_namespace(rt):
    """bats "simple idmap mount [no userns]": on-disk 0 shows as 100000; a
    write cannot be owned by an unmapped root (EOVERFLOW)."""
    src = _source(rt)
    r = _run(rt, STAT + "/mnt/foo; touch /mnt/new 2>&1; echo rc=$?",
             [_mount(src, uids=[USERNS])])
    assert r.returncode == 0, r.stderr
    assert "/mnt/foo 100000 100000" in r.stdout, r.stdout
    assert "Value too large" in r.stdout and "rc=1" in r.stdout, r.stdout
    assert not (src / "new").exists()


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_mapping_with_the_containers_user_namespace(rt):
    """bats "[userns]": the same mapping as the container's shows the owners as
    on disk, and a file the container's root writes is owned by 0 on disk."""
    src = _source(rt)
    r = _run(rt, STAT + "/mnt/foo /plain/foo; touch /mnt/new && " + STAT + "/mnt/new",
             [_mount(src, uids=[USERNS]), _mount(src, "/plain", options=["bind"])],
             userns=True)
    assert r.returncode == 0, r.stderr
    assert "/mnt/foo 0 0" in r.stdout and "/mnt/new 0 0" in r.stdout, r.stdout
    overflow = open("/proc/sys/kernel/overflowuid").read().strip()
    assert f"/plain/foo {overflow} {overflow}" in r.stdout, r.stdout  # a plain bind
    st = os.stat(src / "new")
    assert (st.st_uid, st.st_gid) == (0, 0)


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_idmap_without_mappings_takes_the_user_namespace(rt):
    src = _source(rt)
    r = _run(rt, STAT + "/mnt/foo", [_mount(src)], userns=True)
    assert r.returncode == 0, r.stderr
    assert "/mnt/foo 0 0" in r.stdout, r.stdout


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_several_ranges_and_different_uid_gid_maps(rt):
    """bats "multiple idmap mounts (different mappings) [no userns]"; and the
    same source twice with two mappings; read-only applies as to any bind."""
    src = _source(rt)
    a = _mount(src, "/a", ["bind", "ro", "idmap"],
               uids=[{"containerID": 100, "hostID": 1100, "size": 3}],
               gids=[{"containerID": 200, "hostID": 1900, "size": 50}])
    b = _mount(src, "/b", ["bind", "idmap"],
               uids=[{"containerID": 100, "hostID": 101000, "size": 1},
                     {"containerID": 101, "hostID": 102000, "size": 1}],
               gids=[{"containerID": 210, "hostID": 101100, "size": 10},
                     {"containerID": 220, "hostID": 102200, "size": 10}])
    r = _run(rt, STAT + "/a/f100 /a/f101 /b/f100 /b/f101; touch /a/x 2>&1; true", [a, b])
    assert r.returncode == 0, r.stderr
    for want in ("/a/f100 1100 1911", "/a/f101 1101 1922", "/b/f100 101000 101101",
                 "/b/f101 102000 102202", "Read-only file system"):
        assert want in r.stdout, r.stdout


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_refusals_leave_nothing(rt):
    src = _source(rt)
    tmpfs = {"destination": "/t", "type": "tmpfs", "source": "tmpfs",
             "options": ["idmap"], "uidMappings": [USERNS], "gidMappings": [USERNS]}
    for mounts, userns, want in (
            ([tmpfs], False, "idmapped mounts must be bind mounts"),
            ([_mount(rt.dir / "nope", uids=[USERNS])], False, "bind source"),
            ([_mount(src, uids=[{"containerID": 0, "hostID": 4294967294, "size": 4}])],
             False, "Mappings: the kernel refused the mapping"),
    ):
        cid = rt.new_id()

        def patch(cfg: dict, mounts=mounts) -> dict:
            cfg["mounts"] += mounts
            return cfg
        bundle = rt.bundle(["true"], patch=patch)
        r = rt.hako("run", "--bundle", bundle, cid, timeout=60)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode != 0 and len(lines) == 1 and want in lines[0], r.stderr
        assert rt.hako("state", cid, timeout=30).returncode != 0


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_rootless_is_refused_with_one_line(rt):
    src = rt.dir / "src"
    src.mkdir()
    rt.chown(src)
    cid = rt.new_id()

    def patch(cfg: dict) -> dict:
        cfg["mounts"].append(_mount(src, uids=[{"containerID": 0, "hostID": 0, "size": 1}]))
        return cfg
    bundle = rt.bundle(["true"], patch=patch)
    r = rt.hako("run", "--bundle", bundle, cid, timeout=60)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert "idmapped mounts need root" in lines[0] and "mounts[" in lines[0], lines[0]
    assert rt.hako("state", cid, timeout=30).returncode != 0


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_ridmap_reaches_the_mounts_below_and_idmap_does_not(rt):
    """rbind takes the source's submounts along; ridmap idmaps them too, idmap
    only the top (config.md). A tmpfs is mounted below the source for it."""
    import subprocess
    src = _source(rt)
    (src / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "hako-test-sub", str(src / "sub")],
                   check=True, timeout=30)
    try:
        (src / "sub" / "inner").write_text("x")  # owned by 0 on the tmpfs
        mounts = [_mount(src, "/r", ["rbind", "ridmap"], uids=[USERNS]),
                  _mount(src, "/n", ["rbind", "idmap"], uids=[USERNS])]
        r = _run(rt, STAT + "/r/foo /r/sub/inner /n/foo /n/sub/inner", mounts)
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for want in ("/r/foo 100000 100000", "/r/sub/inner 100000 100000",
                 "/n/foo 100000 100000", "/n/sub/inner 0 0"):
        assert want in r.stdout, r.stdout
