"""Networking on a rootfs that cannot take /etc/resolv.conf (issue 13, part 4).

A networked container whose rootfs has no /etc/resolv.conf and is not writable
-- rootless on a rootfs owned by another user (EACCES), or root on a read-only
filesystem (EROFS) -- failed at create with "mounts[N]: mount target
/etc/resolv.conf in the rootfs: Permission denied", for a mount the user never
wrote. hako now gives /etc a read-only overlay holding just the mount point
(runtime/rootfs/mountpoints.py): the container sees the resolver, /etc keeps its
entries and owner, and the rootfs is never written. A mount the config itself
asks for still fails there as with runc.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from test_network import net_patch

OTHER_UID = 12345  # owns the rootfs: neither root nor the test user


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p[len(str(root)):]] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns)
    return out


def give_away(rootfs: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the rootfs to another user")
    for p in [rootfs, *rootfs.rglob("*")]:
        os.chown(p, OTHER_UID, OTHER_UID, follow_symlinks=False)


def run_readonly(rt, bundle: Path, cid: str):
    """``hako run`` on a rootfs this mode cannot write: owned by another user
    (rootless), or, for root, which could write anything else, also behind a
    read-only bind mount in a mount namespace of the test's own."""
    rootfs = bundle / "rootfs"
    if os.lstat(rootfs).st_uid != OTHER_UID:
        give_away(rootfs)
    if rt.rootless:
        return rt.hako("run", "--bundle", bundle, cid)
    argv = " ".join(shlex.quote(a) for a in rt.hako_argv("run", "--bundle", bundle, cid))
    r = shlex.quote(str(rootfs))
    return rt.run(["unshare", "-m", "sh", "-c",
                   f"mount --bind {r} {r} && mount -o remount,bind,ro {r} && exec {argv}"])


@pytest.mark.parametrize("driver", ["slirp4netns", "pasta"])
def test_resolv_conf_on_a_rootfs_that_cannot_take_it(rt, driver):
    script = "cat /etc/resolv.conf; ls -ln /etc | awk '{print $1, $3, $NF}'; ip -o addr show eth0"
    bundle = rt.bundle(["sh", "-c", script], patch=net_patch(driver))
    rootfs = bundle / "rootfs"
    assert not (rootfs / "etc" / "resolv.conf").exists()
    before_ls = sorted(os.listdir(rootfs / "etc"))
    give_away(rootfs)
    before = snapshot(rootfs)
    r = run_readonly(rt, bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    assert r.stdout.startswith("nameserver 10.0.2.3\n"), r.stdout
    assert "inet 10.0.2.100/24" in r.stdout
    names = [ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith(("-", "d", "l"))]
    assert sorted(names) == sorted(before_ls + ["resolv.conf"])
    assert snapshot(rootfs) == before  # nothing written, not even the mount point
    assert not (rootfs / "etc" / "resolv.conf").exists()


def test_dangling_resolv_conf_symlink(rt):
    """An image whose /etc/resolv.conf leads to a file of a resolver daemon
    (Ubuntu: ../run/systemd/resolve/stub-resolv.conf) that is not there."""
    bundle = rt.bundle(["sh", "-c", "cat /etc/resolv.conf; ls /etc; ls -A /run"],
                       patch=net_patch("slirp4netns"))
    rootfs = bundle / "rootfs"
    (rootfs / "run").mkdir()
    (rootfs / "etc" / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    r = run_readonly(rt, bundle, rt.new_id())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("nameserver 10.0.2.3\n"), r.stdout
    assert "systemd" in r.stdout  # the mount point was made where the link leads
    assert not (rootfs / "run" / "systemd").exists()
    assert os.readlink(rootfs / "etc" / "resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"


def test_a_mount_the_config_asks_for_still_fails_as_with_runc(rt):
    """Only hako's own mounts get a mount point made for them; the config's
    bind onto a missing file of such a rootfs fails at create, cleanly."""
    def patch(c):
        net_patch("none")(c)
        c["mounts"].append({"destination": "/etc/mine.conf", "type": "bind",
                            "source": "/etc/hostname", "options": ["bind", "ro"]})
    bundle = rt.bundle(["true"], patch=patch)
    cid = rt.new_id()
    r = run_readonly(rt, bundle, cid)
    why = "Permission denied" if rt.rootless else "Read-only file system"
    assert r.returncode != 0
    n = len(rt.read_config(bundle)["mounts"]) - 1
    assert f"mounts[{n}]: mount target /etc/mine.conf in the rootfs: {why}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert rt.hako("state", cid).returncode != 0  # nothing left behind
