"""runtime.devices through the recording fake: mknod + chown as root, bind-mounted
host nodes in a user namespace, the EPERM fallback, ptmx and /dev symlinks."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeSyscalls  # noqa: E402
from runtime import devices as D  # noqa: E402
from runtime.inroot import RootfsError  # noqa: E402
from runtime.syscalls import MS_BIND  # noqa: E402

# runc's order
DEFAULTS = [("null", 1, 3), ("random", 1, 8), ("full", 1, 7), ("tty", 5, 0), ("zero", 1, 5),
            ("urandom", 1, 9)]


class Fake(FakeSyscalls):
    """mknod/chown get /proc/self/fd/N/name: resolve the directory part."""

    def __init__(self, fail_when=None):
        super().__init__()
        self.fail_when = fail_when

    @staticmethod
    def fd_path(target):
        if target.startswith("/proc/self/fd/"):
            num, _, rest = target[len("/proc/self/fd/"):].partition("/")
            base = os.readlink(f"/proc/self/fd/{num}")
            return f"{base}/{rest}" if rest else base
        return target

    def _record(self, name, *args, **kwargs):
        super()._record(name, *args, **kwargs)
        if self.fail_when is not None:
            err = self.fail_when(self.calls[-1])
            if err:
                raise OSError(err, os.strerror(err))


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "dev").mkdir(parents=True)
    fd = os.open(r, os.O_PATH | os.O_DIRECTORY)
    yield r, fd
    os.close(fd)


def rel(r: Path, p: str) -> str:
    base = os.path.realpath(r)
    return p[len(base):] if p.startswith(base + "/") else p


def test_default_devices_as_root(root):
    r, fd = root
    fake = Fake()
    D.create_devices(fd, {}, bind=False, sc=fake)
    got = [(c.name, rel(r, c.args[0])) + tuple(c.args[1:]) for c in fake.calls]
    expected = []
    for name, major, minor in DEFAULTS:
        expected += [("mknod", f"/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor)),
                     ("chown", f"/dev/{name}", 0, 0)]
    assert got == expected


def test_config_devices(root):
    r, fd = root
    spec = {"linux": {"devices": [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o620,
         "uid": 1000, "gid": 5},
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
        {"path": "/dev/kmsg", "type": "u", "major": 1, "minor": 11, "fileMode": 0o20644},
        {"path": "/dev/fifo", "type": "p"},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
        {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
        {"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2},  # ptmx: a symlink later
    ]}}
    fake = Fake()
    D.create_devices(fd, spec, bind=False, sc=fake)
    mknods = [(rel(r, c.args[0]), c.args[1], c.args[2]) for c in fake.named("mknod")]
    assert mknods == [
        ("/dev/fuse", stat.S_IFCHR | 0o620, os.makedev(10, 229)),
        ("/dev/sda", stat.S_IFBLK | 0o666, os.makedev(8, 0)),
        ("/dev/kmsg", stat.S_IFCHR | 0o644, os.makedev(1, 11)),  # type bits of fileMode dropped
        ("/dev/fifo", stat.S_IFIFO | 0o666, 0),
        ("/dev/null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),  # the config overrides
        ("/dev/net/tun", stat.S_IFCHR | 0o666, os.makedev(10, 200)),
    ] + [(f"/dev/{n}", stat.S_IFCHR | 0o666, os.makedev(ma, mi))
         for n, ma, mi in DEFAULTS if n != "null"]
    assert [(rel(r, c.args[0]), c.args[1], c.args[2]) for c in fake.named("chown")][0] == (
        "/dev/fuse", 1000, 5)
    assert (r / "dev" / "net").is_dir()  # parents are created


def test_devices_in_user_namespace_are_bind_mounted(root):
    r, fd = root
    fake = Fake()
    D.create_devices(fd, {}, bind=True, sc=fake)
    assert not fake.named("mknod") and not fake.named("chown")
    got = [(c.args[0], rel(r, c.args[1]), c.args[2], c.args[3], c.kwargs["label"])
           for c in fake.named("mount")]
    assert got == [(f"/dev/{n}", f"/dev/{n}", None, MS_BIND, f"/dev/{n}")
                   for n, _, _ in DEFAULTS]
    for n, _, _ in DEFAULTS:
        st = os.lstat(r / "dev" / n)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0


def test_mknod_eperm_falls_back_to_bind_and_eexist_is_kept(root):
    r, fd = root
    fake = Fake(lambda c: errno.EPERM if c.name == "mknod" and c.args[0].endswith("/null")
                else errno.EEXIST if c.name == "mknod" and c.args[0].endswith("/zero") else 0)
    D.create_devices(fd, {}, bind=False, sc=fake)
    names = [(c.name, rel(r, c.args[0] if c.name != "mount" else c.args[1]))
             for c in fake.calls]
    assert names[:2] == [("mknod", "/dev/null"), ("mount", "/dev/null")]
    assert ("mknod", "/dev/zero") in names and ("chown", "/dev/zero") not in names
    assert ("chown", "/dev/full") in names


def test_device_errors(root):
    r, fd = root
    with pytest.raises(RootfsError) as e:
        D.create_devices(fd, {}, bind=False, sc=Fake(lambda c: errno.EIO
                                                     if c.name == "mknod" else 0))
    assert str(e.value) == "mknod /dev/null (c 1:3): Input/output error"
    with pytest.raises(RootfsError) as e:
        D.create_devices(fd, {"linux": {"devices": [{"path": "/dev/x", "type": "q"}]}},
                         bind=False, sc=Fake())
    assert str(e.value) == "linux.devices[0]: /dev/x: invalid device type 'q'"
    with pytest.raises(RootfsError) as e:
        D.create_devices(fd, {"linux": {"devices": [
            {"path": "/dev/nonexistent-hako-test", "type": "c", "major": 1, "minor": 1}]}},
            bind=True, sc=Fake())
    assert str(e.value).startswith("device /dev/nonexistent-hako-test: no such device on the "
                                   "host")
    (r / "dev" / "tty").symlink_to("/etc/passwd")
    with pytest.raises(RootfsError) as e:
        D.create_devices(fd, {}, bind=True, sc=Fake())
    assert str(e.value) == "device /dev/tty: exists in the rootfs and is a symlink"
    assert not os.path.exists(r / "etc")


def test_devices_under_hostile_dev(tmp_path):
    r = tmp_path / "rootfs"
    r.mkdir()
    (tmp_path / "outside").mkdir()
    (r / "dev").symlink_to("../outside")  # inside the rootfs: "/outside"
    fd = os.open(r, os.O_PATH | os.O_DIRECTORY)
    try:
        fake = Fake()
        D.create_devices(fd, {}, bind=True, sc=fake)
        D.setup_ptmx(fd, sc=fake)
        D.setup_dev_symlinks(fd, sc=fake)
    finally:
        os.close(fd)
    assert list((tmp_path / "outside").iterdir()) == []
    assert sorted(os.listdir(r / "outside")) == sorted(
        ["fd", "ptmx", "stderr", "stdin", "stdout"] + [n for n, _, _ in DEFAULTS]
        + (["core"] if os.path.exists("/proc/kcore") else []))
    for c in fake.named("mount"):
        assert c.args[1].startswith(os.path.realpath(r) + "/outside/")


def test_ptmx_and_symlinks(root):
    r, fd = root
    (r / "dev" / "ptmx").write_text("")  # an old node/file is replaced
    (r / "dev" / "stdin").symlink_to("/somewhere")  # existing links are kept
    D.setup_ptmx(fd)
    D.setup_dev_symlinks(fd)
    dev = r / "dev"
    assert os.readlink(dev / "ptmx") == "pts/ptmx"
    assert os.readlink(dev / "fd") == "/proc/self/fd"
    assert os.readlink(dev / "stdin") == "/somewhere"
    assert os.readlink(dev / "stdout") == "/proc/self/fd/1"
    assert os.readlink(dev / "stderr") == "/proc/self/fd/2"
    assert os.path.lexists(dev / "core") == os.path.exists("/proc/kcore")


def test_device_list_merges_defaults():
    devs = D.device_list({"linux": {"devices": [
        {"path": "/dev/./tty", "type": "c", "major": 5, "minor": 0, "uid": 3},
        {"path": "", "type": "c", "major": 9, "minor": 9}]}})  # cgroup-only entries skipped
    assert [d.path for d in devs] == ["/dev/tty", "/dev/null", "/dev/random", "/dev/full",
                                      "/dev/zero", "/dev/urandom"]
    assert devs[0].uid == 3 and devs[0].mode == 0o666
