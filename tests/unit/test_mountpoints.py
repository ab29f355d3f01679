"""runtime.rootfs.mountpoints and inroot.missing_tail (issue 13, part 4): the mount
point of a mount hako adds (networking's /etc/resolv.conf) on a rootfs that
cannot take it is made in a read-only overlay of its directory, never in the
rootfs; when even that fails the entry is skipped with a warning.

Through the recording fake (mounts recorded, not made), and as root against the
real kernel in throw-away namespaces (test_rootfs_real.run_child).
"""

from __future__ import annotations

import errno
import os
import re

import pytest

from runtime import inroot
from runtime.rootfs import mountpoints as MP
from runtime.syscalls import MNT_DETACH, MS_BIND, MS_RDONLY
from test_rootfs import bundle, host, make_fake, resolver, rootfs_of, setup, summary  # noqa: F401

RESOLV = {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/hostname",
          "options": ["bind", "ro"], MP.MARK: "overlay"}


@pytest.fixture
def readonly(monkeypatch):
    """The rootfs' directories are not writable (root could write them all)."""
    monkeypatch.setattr(MP, "_writable", lambda fd: False)


def prepare(bundle, fake, mounts):
    root = rootfs_of(bundle)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        return MP.prepare(fd, root, mounts, bundle=str(bundle), sc=fake)
    finally:
        os.close(fd)


def lowers(data: str) -> list[str]:
    """The lowerdir= fds of overlay data, as the paths they point to."""
    m = re.fullmatch(r"lowerdir=(/proc/self/fd/\d+):(/proc/self/fd/\d+)", data)
    assert m, data
    return list(m.groups())


# ------------------------------------------------------------------ missing_tail
def tail_of(bundle, path, resolver):
    fd = os.open(rootfs_of(bundle), os.O_PATH | os.O_DIRECTORY)
    try:
        found = inroot.missing_tail(fd, path)
        if found is None:
            return None
        dirfd, tail = found
        try:
            return inroot.real_path(dirfd)[len(rootfs_of(bundle)):] or "/", tail
        finally:
            os.close(dirfd)
    finally:
        os.close(fd)


def test_missing_tail(bundle, resolver):
    r = rootfs_of(bundle)
    assert tail_of(bundle, "/etc/hostname", resolver) is None
    assert tail_of(bundle, "/etc/resolv.conf", resolver) == ("/etc", ["resolv.conf"])
    assert tail_of(bundle, "/a/b/c", resolver) == ("/", ["a", "b", "c"])
    # a dangling symlink: where it points, inside the root
    os.symlink("../run/systemd/resolve/stub-resolv.conf", f"{r}/etc/resolv.conf")
    os.mkdir(f"{r}/run")
    assert tail_of(bundle, "/etc/resolv.conf", resolver) == (
        "/run", ["systemd", "resolve", "stub-resolv.conf"])
    os.symlink("/../../../outside/x", f"{r}/etc/abs")
    assert tail_of(bundle, "/etc/abs", resolver) == ("/", ["outside", "x"])
    os.symlink("loop", f"{r}/etc/loop")
    with pytest.raises(OSError) as e:
        tail_of(bundle, "/etc/loop", resolver)
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        tail_of(bundle, "/etc/hostname/x", resolver)
    assert e.value.errno == errno.ENOTDIR


# ----------------------------------------------------------------- the decision
def test_nothing_for_unmarked_existing_or_writable(host, bundle, resolver, monkeypatch):
    fake = make_fake(resolver)
    unmarked = {k: v for k, v in RESOLV.items() if k != MP.MARK}
    assert prepare(bundle, fake, [unmarked]) == set()
    assert prepare(bundle, fake, [dict(RESOLV, destination="/etc/hostname")]) == set()
    assert prepare(bundle, fake, [RESOLV]) == set()  # writable: made as runc makes it
    assert fake.calls == []
    monkeypatch.setattr(MP, "_writable", lambda fd: False)
    assert prepare(bundle, fake, [dict(RESOLV, destination="/etc/hostname")]) == set()
    assert fake.calls == []
    assert not os.path.exists(os.path.join(rootfs_of(bundle), "etc", "resolv.conf"))


def test_overlay_of_the_directory(host, bundle, resolver, readonly):
    fake = make_fake(resolver)
    assert prepare(bundle, fake, [RESOLV]) == set()
    got = summary(fake, rootfs_of(bundle))
    # a tmpfs for a moment on the root, the overlay on /etc, the tmpfs detached
    assert got[0][:4] == ("mount", "tmpfs", "R", "tmpfs")
    assert got[1][:5] == ("mount", "overlay", "R/etc", "overlay", MS_RDONLY)
    assert got[2] == ("umount2", "R", MNT_DETACH)
    assert len(got) == 3
    upper, layer = lowers(got[1][5])
    assert upper != layer  # the directory itself on top, then the layer


def test_overlay_on_the_root_uses_a_directory_in_it(host, bundle, resolver, readonly):
    fake = make_fake(resolver)
    assert prepare(bundle, fake, [dict(RESOLV, destination="/nothere/resolv.conf")]) == set()
    got = summary(fake, rootfs_of(bundle))
    assert got[0][:4] == ("mount", "tmpfs", "R/bin", "tmpfs")
    assert got[1][:5] == ("mount", "overlay", "R", "overlay", MS_RDONLY)
    assert got[2] == ("umount2", "R/bin", MNT_DETACH)


@pytest.mark.parametrize("fails", ["tmpfs", "overlay"])
def test_skipped_with_a_warning(host, bundle, resolver, readonly, capsys, fails):
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "mount"
                     and c.args[2] == fails else 0)
    assert prepare(bundle, fake, [RESOLV]) == {0}
    err = capsys.readouterr().err
    assert err.startswith("hako: warning: mounts[0]: /etc/resolv.conf: cannot create it "), err
    assert err.rstrip().endswith("Operation not permitted; the container runs without "
                                 "this mount"), err
    assert len(err.splitlines()) == 1
    # the tmpfs never stays
    mounted = [c for c in fake.calls if c.name == "mount" and c.args[2] == "tmpfs"]
    assert len(fake.named("umount2")) == (1 if fails == "overlay" else 0) == len(mounted) - (
        1 if fails == "tmpfs" else 0)


def test_a_tmpfs_that_cannot_be_detached_is_fatal(host, bundle, resolver, readonly):
    fake = make_fake(resolver, lambda c: errno.EBUSY if c.name == "umount2" else 0)
    with pytest.raises(inroot.RootfsError, match="detach the overlay layer for /resolv.conf"):
        prepare(bundle, fake, [RESOLV])


def test_no_overlay_over_mounts(host, bundle, resolver, readonly, capsys, monkeypatch,
                                tmp_path):
    etc = os.path.join(rootfs_of(bundle), "etc")
    info = tmp_path / "mi"
    info.write_text(f"1 0 0:1 / / rw - ext4 /dev/vda rw\n"
                    f"2 1 0:2 / {etc}/hosts rw - ext4 /dev/vda rw\n")
    monkeypatch.setattr(MP, "MOUNTINFO", str(info))
    fake = make_fake(resolver)
    assert prepare(bundle, fake, [RESOLV]) == {0}
    assert fake.calls == []
    assert "would hide the mount on" in capsys.readouterr().err


def test_setup_rootfs_skips_what_it_could_not_prepare(host, bundle, resolver, readonly,
                                                      capsys):
    fake = make_fake(resolver, lambda c: errno.ENODEV if c.name == "mount"
                     and c.args[2] == "overlay" else 0)
    setup({"root": {"path": "rootfs"}, "mounts": [RESOLV]}, bundle, fake)
    assert not [c for c in fake.calls if c.name == "mount" and c.args[3] & MS_BIND
                and c.args[0] == "/etc/hostname"]
    assert "container runs without this mount" in capsys.readouterr().err


# ------------------------------------------------------------- the real kernel
real = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mount namespaces")


def _real_spec(bundle) -> dict:
    return {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        dict(RESOLV, source=str(bundle / "resolv.conf"))]}


@real
@pytest.mark.parametrize("userns", [False, True], ids=["root-erofs", "userns-eacces"])
def test_real_overlay(tmp_path, userns):
    from test_rootfs_real import build_bundle, run_child

    bundle = build_bundle(tmp_path)
    (bundle / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    (bundle / "rootfs" / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    rootfs = bundle / "rootfs"
    before = sorted(p.name for p in (rootfs / "etc").iterdir())
    if userns:  # owned by an id the namespace does not map: EACCES for its root
        for p in [rootfs, *rootfs.rglob("*")]:
            os.chown(p, 12345, 12345, follow_symlinks=False)
    spec = _real_spec(bundle)

    def body(report):
        from runtime import rootfs as R
        from runtime.syscalls import MS_REMOUNT, SYS
        if not userns:  # a read-only filesystem: EROFS even for root
            SYS.mount(str(rootfs), str(rootfs), None, MS_BIND, None)
            SYS.mount(None, str(rootfs), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        st = os.stat(rootfs / "etc")
        R.setup_rootfs(spec, str(bundle), rootless=userns, new_userns=userns,
                       new_netns=False, new_cgroupns=False, no_pivot=False)
        report(open("/etc/resolv.conf").read().strip())
        report(" ".join(sorted(os.listdir("/etc"))))
        now = os.stat("/etc")
        report(str((now.st_uid, now.st_gid, now.st_mode) == (st.st_uid, st.st_gid, st.st_mode)))
        with open("/proc/self/mountinfo") as f:
            info = {ln.split()[4]: ln.split(" - ")[1].split()[0] for ln in f}
        report(f"{info.get('/etc')} {'/etc/resolv.conf' in info}")

    lines = run_child(body, userns=userns)
    assert lines[-4:] == ["nameserver 192.0.2.53", " ".join(sorted(before + ["resolv.conf"])),
                          "True", "overlay True"]
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == before  # never written
