"""runtime.rootfs and runtime.inroot without root, through the recording fake.

Mounts, pivot_root, mknod and chown are recorded, not performed; path
resolution (openat2, or the fallback walk) and directory/file creation are real,
on a temporary tree, so the tests see exactly where each mount would land, even
in a hostile rootfs full of symlinks.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import Call, FakeSyscalls  # noqa: E402
from runtime import inroot, rootfs as R  # noqa: E402
from runtime.syscalls import (  # noqa: E402
    MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
    MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
)

RUNC = os.environ.get("RUNC") or "/usr/sbin/runc"
DEFAULT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
# runc's order of the default devices
DEVICES = [("null", 1, 3), ("random", 1, 8), ("full", 1, 7), ("tty", 5, 0), ("zero", 1, 5),
           ("urandom", 1, 9)]


# --------------------------------------------------------------------------
# fakes and fixtures


class Fake(FakeSyscalls):
    """The shared fake, plus: fd paths with a trailing name (``/proc/self/fd/N/null``:
    mknod/chown of a node that the fake never creates), and optional failures
    chosen per call."""

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

    def mount(self, source, target, fstype, flags=0, data=None, *, label=""):
        # a /proc/self/fd source (readonlyPaths binds a path onto itself) as well
        self._record("mount", self.fd_path(source) if source else source,
                     self.fd_path(target), fstype, flags, data, label=label)

    def _record(self, name, *args, **kwargs):
        super()._record(name, *args, **kwargs)
        if self.fail_when is not None:
            err = self.fail_when(self.calls[-1])
            if err:
                raise OSError(err, os.strerror(err))


class NoOpenat2(Fake):
    def openat2(self, *a, **k):
        raise OSError(errno.ENOSYS, "openat2: Function not implemented")


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    """Run a test with openat2(RESOLVE_IN_ROOT) and with the fallback walk."""
    monkeypatch.setattr(inroot, "HAVE_OPENAT2", request.param == "openat2")
    return request.param


def make_fake(resolver, fail_when=None):
    return (Fake if resolver == "openat2" else NoOpenat2)(fail_when)


HYBRID_MOUNTINFO = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
22 27 0:21 / /proc rw,relatime shared:2 - proc proc rw
23 27 0:22 / /sys rw,relatime shared:3 - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime shared:4 - devtmpfs devtmpfs rw,mode=755
31 23 0:28 / /sys/fs/cgroup rw,relatime shared:5 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:6 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:8 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""
HYBRID_CGROUP = """\
12:cpu,cpuacct:/box
11:memory:/box
1:name=systemd:/box
0::/box
"""
V2_MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fixed mountinfo and /proc/self/cgroup, and the cwd restored afterwards."""
    monkeypatch.chdir(tmp_path)

    def use(mountinfo=HYBRID_MOUNTINFO, cgroup=HYBRID_CGROUP):
        (tmp_path / "mountinfo").write_text(mountinfo)
        (tmp_path / "cgroup").write_text(cgroup)
        monkeypatch.setattr(R.hostmounts, "MOUNTINFO", str(tmp_path / "mountinfo"))
        monkeypatch.setattr(R.cgroupfs, "PROC_CGROUP", str(tmp_path / "cgroup"))

    use()
    return use


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "bundle"
    root = b / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    (tmp_path / "outside").mkdir()
    return b


def rootfs_of(b: Path) -> str:
    return os.path.realpath(b / "rootfs")


RUNC_SPEC_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
          "/proc/scsi"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def runc_spec(tmp_path: Path, rootless: bool) -> dict:
    """`runc spec [--rootless]` output (an equivalent copy when runc is missing)."""
    if os.access(RUNC, os.X_OK):
        d = tmp_path / ("spec-rootless" if rootless else "spec-root")
        d.mkdir()
        subprocess.run([RUNC, "spec"] + (["--rootless"] if rootless else []), cwd=d,
                       check=True, timeout=30, capture_output=True)
        return json.loads((d / "config.json").read_text())
    mounts = json.loads(json.dumps(RUNC_SPEC_MOUNTS))
    if rootless:
        mounts[2]["options"].remove("gid=5")
        mounts[5] = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    return {"root": {"path": "rootfs", "readonly": True}, "mounts": mounts,
            "linux": {"maskedPaths": MASKED, "readonlyPaths": READONLY}}


def summary(fake: Fake, rootfs: str) -> list[tuple]:
    """Calls as tuples, with paths in the rootfs written as R/..."""
    def rel(p):
        if isinstance(p, str) and (p == rootfs or p.startswith(rootfs + "/")):
            return "R" + p[len(rootfs):]
        return p

    out = []
    for c in fake.calls:
        if c.name == "mount":
            src, tgt, fstype, flags, data = c.args
            out.append(("mount", rel(src), rel(tgt), fstype, flags, data))
        else:
            out.append((c.name,) + tuple(rel(a) for a in c.args))
    return out


def mounts_of(fake: Fake) -> list[Call]:
    return fake.named("mount")


def setup(spec, b, fake, **kw):
    args = dict(rootless=False, new_userns=False, new_netns=True, new_cgroupns=False,
                no_pivot=False)
    args.update(kw)
    R.setup_rootfs(spec, str(b), sc=fake, **args)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------
# the typical runc config


def test_runc_default_config_as_root(tmp_path, host, bundle, resolver):
    spec = runc_spec(tmp_path, rootless=False)
    fake = make_fake(resolver)
    rootfs = rootfs_of(bundle)
    fds = open_fds()
    setup(spec, bundle, fake)
    assert open_fds() == fds, "fds leaked"
    got = summary(fake, rootfs)
    ro_bind = MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_FLAGS | MS_RELATIME
    expected = [
        ("mount", None, "/", None, MS_SLAVE | MS_REC, None),
        ("mount", None, "/", None, MS_PRIVATE, None),  # the rootfs' parent mount was shared
        ("mount", "R", "R", None, MS_BIND | MS_REC, None),
        ("mount", "proc", "R/proc", "proc", 0, None),
        ("mount", "tmpfs", "R/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
        ("mount", "devpts", "R/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("mount", "shm", "R/dev/shm", "tmpfs", DEFAULT_FLAGS, "mode=1777,size=65536k"),
        ("mount", "mqueue", "R/dev/mqueue", "mqueue", DEFAULT_FLAGS, None),
        ("mount", "sysfs", "R/sys", "sysfs", DEFAULT_FLAGS | MS_RDONLY, None),
        # cgroup v1 without a cgroup namespace: tmpfs + our own cgroups bound read-only
        ("mount", "tmpfs", "R/sys/fs/cgroup", "tmpfs", DEFAULT_FLAGS, "mode=755"),
        ("mount", "/sys/fs/cgroup/cpu,cpuacct/box", "R/sys/fs/cgroup/cpu,cpuacct", None,
         MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup/cpu,cpuacct", None, ro_bind, None),
        ("mount", "/sys/fs/cgroup/memory/box", "R/sys/fs/cgroup/memory", None,
         MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup/memory", None, ro_bind, None),
        ("mount", "/sys/fs/cgroup/systemd/box", "R/sys/fs/cgroup/systemd", None,
         MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup/systemd", None, ro_bind, None),
        # (like runc: no unified in the tmpfs without a cgroup namespace, tmpfs left rw)
    ]
    for name, major, minor in DEVICES:
        expected += [("mknod", f"R/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor)),
                     ("chown", f"R/dev/{name}", 0, 0)]
    expected += [("pivot_root", ".", "."),
                 ("mount", None, ".", None, MS_SLAVE | MS_REC, None),
                 ("umount2", ".", MNT_DETACH)]
    assert got == expected
    dev = Path(rootfs) / "dev"
    assert os.readlink(dev / "ptmx") == "pts/ptmx"
    assert os.readlink(dev / "fd") == "/proc/self/fd"
    assert [os.readlink(dev / n) for n in ("stdin", "stdout", "stderr")] == [
        "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]
    assert os.path.islink(dev / "cpu") is False
    cg = Path(rootfs) / "sys/fs/cgroup"
    assert os.readlink(cg / "cpu") == "cpu,cpuacct" and os.readlink(cg / "cpuacct") == (
        "cpu,cpuacct")
    # every mount call carried the container path for its messages
    labels = [c.kwargs["label"] for c in mounts_of(fake)]
    assert "/dev/shm" in labels and "/sys/fs/cgroup/memory" in labels


def test_runc_rootless_config(tmp_path, host, bundle, resolver):
    spec = runc_spec(tmp_path, rootless=True)
    fake = make_fake(resolver)
    rootfs = rootfs_of(bundle)
    setup(spec, bundle, fake, rootless=True, new_userns=True, new_netns=False)
    got = summary(fake, rootfs)
    ro_bind = MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_FLAGS
    assert got[3:10] == [
        ("mount", "proc", "R/proc", "proc", 0, None),
        ("mount", "tmpfs", "R/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
        ("mount", "devpts", "R/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620"),
        ("mount", "shm", "R/dev/shm", "tmpfs", DEFAULT_FLAGS, "mode=1777,size=65536k"),
        ("mount", "mqueue", "R/dev/mqueue", "mqueue", DEFAULT_FLAGS, None),
        # /sys: type none + rbind = a bind, made read-only by a remount
        ("mount", "/sys", "R/sys", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/sys", None, ro_bind, None),
    ]
    # cgroup without a cgroup namespace: like runc, a tmpfs and our own cgroups
    assert got[10:13] == [
        ("mount", "tmpfs", "R/sys/fs/cgroup", "tmpfs", DEFAULT_FLAGS, "mode=755"),
        ("mount", "/sys/fs/cgroup/cpu,cpuacct/box", "R/sys/fs/cgroup/cpu,cpuacct", None,
         MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup/cpu,cpuacct", None, ro_bind | MS_RELATIME, None),
    ]
    # devices: no mknod in a user namespace, the host's nodes are bound on empty files
    assert not fake.named("mknod") and not fake.named("chown")
    binds = got[17:23]
    assert binds == [("mount", f"/dev/{n}", f"R/dev/{n}", None, MS_BIND, None)
                     for n, _, _ in DEVICES]
    for n in ("null", "tty"):
        st = os.lstat(Path(rootfs) / "dev" / n)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert got[23:] == [("pivot_root", ".", "."),
                        ("mount", None, ".", None, MS_SLAVE | MS_REC, None),
                        ("umount2", ".", MNT_DETACH)]


def test_rootless_sysfs_and_mqueue_fallbacks(tmp_path, host, bundle, resolver, monkeypatch):
    """sysfs EPERM without a network namespace -> read-only rbind of /sys;
    mqueue EPERM -> bind of the host's /dev/mqueue."""
    spec = {"root": {"path": "rootfs"}, "mounts": [RUNC_SPEC_MOUNTS[5], RUNC_SPEC_MOUNTS[4]]}
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir",
                        lambda p: True if p == "/dev/mqueue" else real_isdir(p))
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "mount" and c.args[2] in (
        "sysfs", "mqueue") else 0)
    setup(spec, bundle, fake, rootless=True, new_userns=True, new_netns=False)
    got = summary(fake, rootfs_of(bundle))
    assert got[3:6] == [
        ("mount", "sysfs", "R/sys", "sysfs", DEFAULT_FLAGS | MS_RDONLY, None),
        ("mount", "/sys", "R/sys", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/sys", None, MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_FLAGS, None),
    ]
    assert got[6:9] == [
        ("mount", "mqueue", "R/dev/mqueue", "mqueue", DEFAULT_FLAGS, None),
        ("mount", "/dev/mqueue", "R/dev/mqueue", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/dev/mqueue", None, MS_BIND | MS_REMOUNT | DEFAULT_FLAGS, None),
    ]
    # no host /dev/mqueue to fall back to: the error says so
    monkeypatch.setattr(os.path, "isdir",
                        lambda p: False if p == "/dev/mqueue" else real_isdir(p))
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "mount" and c.args[2] ==
                     "mqueue" else 0)
    with pytest.raises(R.RootfsError) as e:
        setup(spec, bundle, fake, rootless=True, new_userns=True, new_netns=False)
    assert str(e.value) == ('mounts[1]: mount "mqueue" on /dev/mqueue: Operation not permitted '
                            "(not the owner of the IPC namespace, and the host has no "
                            "/dev/mqueue to bind instead)")
    # with a network namespace of its own, a sysfs failure is an error
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "mount" and c.args[2] ==
                     "sysfs" else 0)
    with pytest.raises(R.RootfsError) as e:
        setup(spec, bundle, fake, rootless=True, new_userns=True, new_netns=True)
    assert str(e.value) == 'mounts[0]: mount "sysfs" on /sys: Operation not permitted'


# --------------------------------------------------------------------------
# cgroup mounts


def _cgroup_spec(ro=True):
    opts = ["nosuid", "noexec", "nodev", "relatime"] + (["ro"] if ro else [])
    return {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": opts}]}


def test_cgroup_v1_with_cgroupns(host, bundle, resolver):
    fake = make_fake(resolver)
    setup(_cgroup_spec(), bundle, fake, new_cgroupns=True)
    got = summary(fake, rootfs_of(bundle))[3:]
    ro = DEFAULT_FLAGS | MS_RDONLY
    assert got == [
        ("mount", "tmpfs", "R/sys/fs/cgroup", "tmpfs", DEFAULT_FLAGS, "mode=755"),
        ("mount", "cgroup", "R/sys/fs/cgroup/cpu,cpuacct", "cgroup", ro, "cpu,cpuacct"),
        ("mount", "cgroup", "R/sys/fs/cgroup/memory", "cgroup", ro, "memory"),
        ("mount", "cgroup", "R/sys/fs/cgroup/systemd", "cgroup", ro, "name=systemd"),
        ("mount", "cgroup2", "R/sys/fs/cgroup/unified", "cgroup2", ro, None),
    ] + got[5:]
    assert got[5][0] == "mknod"


def test_cgroup_v1_rootless_with_cgroupns_falls_back(host, bundle, resolver):
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "mount" and c.args[2] ==
                     "cgroup" else 0)
    setup(_cgroup_spec(), bundle, fake, rootless=True, new_userns=True, new_cgroupns=True)
    got = summary(fake, rootfs_of(bundle))[3:]
    assert got[:5] == [
        ("mount", "tmpfs", "R/sys/fs/cgroup", "tmpfs", DEFAULT_FLAGS, "mode=755"),
        ("mount", "cgroup", "R/sys/fs/cgroup/cpu,cpuacct", "cgroup", DEFAULT_FLAGS | MS_RDONLY,
         "cpu,cpuacct"),
        ("umount2", "R/sys/fs/cgroup", MNT_DETACH),
        ("mount", "/sys/fs/cgroup", "R/sys/fs/cgroup", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup", None,
         MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_FLAGS | MS_RELATIME, None),
    ]


def test_cgroup_v1_rootless_bind_failure_falls_back(host, bundle, resolver):
    host(cgroup="0::/box\n")  # not in the v1 hierarchies: nothing of our own to bind
    fake = make_fake(resolver)
    setup(_cgroup_spec(), bundle, fake, rootless=True, new_userns=True)
    got = summary(fake, rootfs_of(bundle))[3:]
    assert got[:4] == [
        ("mount", "tmpfs", "R/sys/fs/cgroup", "tmpfs", DEFAULT_FLAGS, "mode=755"),
        ("umount2", "R/sys/fs/cgroup", MNT_DETACH),
        ("mount", "/sys/fs/cgroup", "R/sys/fs/cgroup", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup", None,
         MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_FLAGS | MS_RELATIME, None),
    ]
    # as real root the same is an error
    with pytest.raises(R.RootfsError, match=r"^mounts\[0\]: cgroup hierarchy cpu,cpuacct: "
                       r"this process is not in it"):
        setup(_cgroup_spec(), bundle, make_fake(resolver))


def test_cgroup_pure_v2(host, bundle, resolver):
    host(V2_MOUNTINFO, "0::/box\n")
    fake = make_fake(resolver)
    setup(_cgroup_spec(), bundle, fake, new_cgroupns=True)
    got = summary(fake, rootfs_of(bundle))
    assert got[1] == ("mount", "R", "R", None, MS_BIND | MS_REC, None)  # no shared parent
    assert got[2] == ("mount", "cgroup", "R/sys/fs/cgroup", "cgroup2",
                      DEFAULT_FLAGS | MS_RELATIME | MS_RDONLY, None)
    # a user namespace without a cgroup namespace cannot: bind the host's instead
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "mount" and c.args[2] ==
                     "cgroup2" else 0)
    setup(_cgroup_spec(), bundle, fake, rootless=True, new_userns=True)
    got = summary(fake, rootfs_of(bundle))
    assert got[2:5] == [
        ("mount", "cgroup", "R/sys/fs/cgroup", "cgroup2",
         DEFAULT_FLAGS | MS_RELATIME | MS_RDONLY, None),
        ("mount", "/sys/fs/cgroup", "R/sys/fs/cgroup", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/sys/fs/cgroup", None,
         MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_FLAGS | MS_RELATIME, None),
    ]


# --------------------------------------------------------------------------
# a hostile rootfs: every target stays inside


def _targets(fake: Fake) -> list[str]:
    return [c.args[1] for c in mounts_of(fake)] + [c.args[0] for c in fake.named("mknod")]


def _assert_inside(fake: Fake, rootfs: str, outside: Path):
    for t in _targets(fake):
        if t in ("/", "."):
            continue
        assert t == rootfs or t.startswith(rootfs + "/"), f"mount target {t} outside rootfs"
    assert list(outside.iterdir()) == [], "something was created outside the rootfs"


def test_tmp_symlink_to_etc(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    shutil.rmtree(root / "tmp")
    (root / "tmp").symlink_to("/etc")
    marker = f"hako-test-{os.getpid()}-{tmp_path.name}"
    (tmp_path / "src").write_text("x")
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        {"destination": f"/tmp/{marker}", "type": "bind", "source": str(tmp_path / "src"),
         "options": ["bind"]}]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    rootfs = rootfs_of(bundle)
    assert [c.args[1] for c in mounts_of(fake)][3:5] == [f"{rootfs}/etc",
                                                          f"{rootfs}/etc/{marker}"]
    assert (root / "etc" / marker).is_file()  # the bind target was created in the rootfs
    assert not os.path.exists(f"/etc/{marker}")  # and not on the host
    _assert_inside(fake, rootfs, tmp_path / "outside")


def test_dev_symlink_climbing_out(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    shutil.rmtree(root / "dev")
    (root / "dev").symlink_to("../../../../")
    spec = {"root": {"path": "rootfs"}, "mounts": RUNC_SPEC_MOUNTS[1:4]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    rootfs = rootfs_of(bundle)
    # "/dev" resolves to the rootfs' own "/": everything lands inside it
    assert [c.args[1] for c in mounts_of(fake)][3:6] == [rootfs, f"{rootfs}/pts",
                                                          f"{rootfs}/shm"]
    assert sorted(c.args[0] for c in fake.named("mknod")) == sorted(
        f"{rootfs}/{n}" for n in ("null", "zero", "full", "random", "urandom", "tty"))
    assert os.readlink(root / "ptmx") == "pts/ptmx"
    _assert_inside(fake, rootfs, tmp_path / "outside")


def test_absolute_symlinks_resolve_in_rootfs(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    (root / "run").mkdir()
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")
    (root / "a").symlink_to("/b")
    (root / "b").symlink_to("../../../../etc")
    (root / "dangling").symlink_to("/srv/data")  # does not exist yet: created inside
    (root / "rel").symlink_to("../../nowhere/y")
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/var/run/lock", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/a/x", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/dangling/sub", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/rel", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/../../../etc/../tmp/./z", "type": "tmpfs", "source": "tmpfs"},
    ]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    rootfs = rootfs_of(bundle)
    assert [c.args[1] for c in mounts_of(fake)][3:8] == [
        f"{rootfs}/run/lock", f"{rootfs}/etc/x", f"{rootfs}/srv/data/sub",
        f"{rootfs}/nowhere/y", f"{rootfs}/tmp/z"]
    assert [c.kwargs["label"] for c in mounts_of(fake)][3:8] == [
        "/var/run/lock", "/a/x", "/dangling/sub", "/rel", "/tmp/z"]
    assert not os.path.exists("/srv/data/sub")
    _assert_inside(fake, rootfs, tmp_path / "outside")


def test_self_loop_and_loops_are_clear_errors(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    (root / "run").symlink_to("/run")  # absolute, to itself: a loop, not the host's /run
    (root / "l1").symlink_to("l2")
    (root / "l2").symlink_to("/l1")
    for dest in ("/run/lock", "/l1/x"):
        spec = {"root": {"path": "rootfs"},
                "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                           {"destination": dest, "type": "tmpfs", "source": "tmpfs"}]}
        fake = make_fake(resolver)
        with pytest.raises(R.RootfsError) as e:
            setup(spec, bundle, fake)
        assert str(e.value).startswith(f"mounts[1]: mount target {dest} in the rootfs: "
                                       "Too many levels of symbolic links")
        assert e.value.errno == errno.ELOOP
        assert "\n" not in str(e.value)
        assert not any(c.args[1].startswith("/run") for c in mounts_of(fake))
        assert not fake.named("pivot_root")


def test_symlink_to_file_where_dir_expected(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    shutil.rmtree(root / "dev")
    (root / "dev").symlink_to("/etc/hostname")
    spec = {"root": {"path": "rootfs"}, "mounts": RUNC_SPEC_MOUNTS[2:3]}
    with pytest.raises(R.RootfsError) as e:
        setup(spec, bundle, make_fake(resolver))
    assert str(e.value) == ("mounts[0]: mount target /dev/pts in the rootfs: Not a directory "
                            "(a component of the path in the rootfs is not a directory)")
    assert (root / "etc" / "hostname").read_text() == "box\n"


def test_proc_and_sys_refuse_symlinks(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    os.rmdir(root / "proc")
    (root / "proc").symlink_to("/tmp")
    spec = {"root": {"path": "rootfs"}, "mounts": RUNC_SPEC_MOUNTS[:1]}
    with pytest.raises(R.RootfsError) as e:
        setup(spec, bundle, make_fake(resolver))
    assert str(e.value) == ('mounts[0]: filesystem "proc" must be mounted on an ordinary '
                            'directory: /proc has a symlink in its path')


def test_nothing_over_proc(tmp_path, host, bundle, resolver):
    (tmp_path / "f").write_text("")
    root = bundle / "rootfs"
    (root / "p").symlink_to("/proc")
    (root / "proc" / "meminfo").write_text("")
    cases = [
        ({"destination": "/proc/foo", "type": "bind", "source": str(tmp_path / "f")},
         "mounts[0]: /proc/foo cannot be mounted because it is inside /proc"),
        ({"destination": "/p/foo", "type": "tmpfs", "source": "tmpfs"},
         "mounts[0]: /p/foo cannot be mounted because it is inside /proc"),
        ({"destination": "/proc", "type": "bind", "source": str(tmp_path)},
         "mounts[0]: /proc cannot be mounted because it is not of type proc"),
    ]
    for m, msg in cases:
        spec = {"root": {"path": "rootfs"}, "mounts": [m]}
        with pytest.raises(R.RootfsError) as e:
            setup(spec, bundle, make_fake(resolver))
        assert str(e.value) == msg
    # lxcfs-style file binds are allowed
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/proc/meminfo", "type": "bind", "source": str(tmp_path / "f")}]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    assert mounts_of(fake)[3].args[1] == f"{rootfs_of(bundle)}/proc/meminfo"


# --------------------------------------------------------------------------
# bind mounts, options, errors


def test_bind_mounts(tmp_path, host, bundle, resolver):
    (bundle / "rel-src").mkdir()
    (tmp_path / "file").write_text("f")
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/data", "type": "bind", "source": "rel-src"},  # type bind, no options
        {"destination": "/ro", "source": str(tmp_path), "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/etc/resolv.conf", "type": "none", "source": str(tmp_path / "file"),
         "options": ["bind", "nosuid", "rw"]},
        {"destination": "/x", "type": "bind", "source": str(tmp_path), "options": ["rbind",
                                                                                  "rslave"]},
    ]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    got = summary(fake, rootfs_of(bundle))
    src = str(bundle.resolve() / "rel-src")
    assert got[3:11] == [
        ("mount", src, "R/data", None, MS_BIND, None),
        ("mount", str(tmp_path), "R/ro", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/ro", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
        ("mount", None, "R/ro", None, MS_PRIVATE | MS_REC, None),
        ("mount", str(tmp_path / "file"), "R/etc/resolv.conf", None, MS_BIND, None),
        # "rw" was asked explicitly: remounted even though nothing else is set
        ("mount", None, "R/etc/resolv.conf", None, MS_BIND | MS_REMOUNT | MS_NOSUID, None),
        ("mount", str(tmp_path), "R/x", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/x", None, MS_SLAVE | MS_REC, None),
    ]
    assert (bundle / "rootfs" / "etc" / "resolv.conf").is_file()


def test_ro_bind_keeps_locked_flags(tmp_path, host, bundle, resolver, monkeypatch):
    """In a user namespace the first remount fails with EPERM when it would drop a
    locked flag: retry with the mount's current lockable flags, like runc."""
    class St:
        f_flag = 0x2 | 0x4 | 0x1000  # nosuid, nodev, relatime
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: St() if str(p).startswith(
        "/proc/self/fd/") else real(p))
    state = {"n": 0}

    def fail_first_remount(c):
        if c.name == "mount" and c.args[3] & MS_REMOUNT:
            state["n"] += 1
            return errno.EPERM if state["n"] == 1 else 0
        return 0

    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/ro", "type": "bind", "source": str(tmp_path), "options": ["rbind",
                                                                                   "ro"]}]}
    fake = make_fake(resolver, fail_first_remount)
    setup(spec, bundle, fake, rootless=True, new_userns=True)
    got = summary(fake, rootfs_of(bundle))
    assert got[4:6] == [
        ("mount", None, "R/ro", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
        ("mount", None, "R/ro", None,
         MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_RELATIME, None),
    ]
    # asking to clear a locked flag (suid on a nosuid mount) is an error, not a retry
    state["n"] = 0
    spec["mounts"][0]["options"] = ["rbind", "ro", "suid"]
    with pytest.raises(R.RootfsError) as e:
        setup(spec, bundle, make_fake(resolver, fail_first_remount), rootless=True,
              new_userns=True)
    assert str(e.value) == 'mounts[0]: mount "remount" on /ro: Operation not permitted'


def test_errors_name_the_container_path(tmp_path, host, bundle, resolver):
    cases = [
        ({"destination": "/proc", "type": "proc", "source": "proc"},
         lambda c: errno.EPERM if c.name == "mount" and c.args[2] == "proc" else 0,
         'mounts[0]: mount "proc" on /proc: Operation not permitted'),
        ({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=xyz"]},
         lambda c: errno.EINVAL if c.name == "mount" and c.args[2] == "tmpfs" else 0,
         'mounts[0]: mount "tmpfs" on /tmp: invalid option "mode=xyz": Invalid argument'),
        ({"destination": "/x", "type": "bind", "source": "/nonexistent"}, None,
         "mounts[0]: bind source /nonexistent does not exist"),
        ({"destination": "/x", "type": "bind", "source": "/tmp", "uidMappings": [
            {"containerID": 0, "hostID": 1000, "size": 1}]}, None,
         "mounts[0]: /x: the idmapped mount was not prepared"),
        ({"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind", "rro"]},
         lambda c: errno.ENOSYS if c.name == "mount_setattr" else 0,
         "mounts[0]: rro on /x: Function not implemented (mount_setattr needs Linux 5.12 or "
         "later)"),
        ({"destination": "/x", "type": "tmpfs", "source": "tmpfs",
          "options": ["rnosuid", "rsuid", "rexec"]},
         lambda c: errno.EPERM if c.name == "mount_setattr" else 0,
         "mounts[0]: rnosuid,rsuid,rexec on /x: Operation not permitted"),
        ({"destination": "/x", "source": "/tmp"}, None,
         "mounts[0]: /x: no type, and not a bind mount"),
        ({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["shared"]},
         lambda c: errno.EINVAL if c.name == "mount" and c.args[3] == MS_SHARED else 0,
         "mounts[0]: set propagation shared on /x: Invalid argument"),
    ]
    for m, fail, msg in cases:
        spec = {"root": {"path": "rootfs"}, "mounts": [m]}
        with pytest.raises(R.RootfsError) as e:
            setup(spec, bundle, make_fake(resolver, fail))
        assert str(e.value) == msg
    with pytest.raises(R.RootfsError, match=r"^root.path: .*/nope is not a directory$"):
        setup({"root": {"path": "nope"}}, bundle, make_fake(resolver))
    with pytest.raises(R.RootfsError, match=r"^make / rslave: Operation not permitted$"):
        setup({"root": {"path": "rootfs"}}, bundle,
              make_fake(resolver, lambda c: errno.EPERM if c.name == "mount" else 0))
    with pytest.raises(R.RootfsError, match=r"^pivot_root into .*: Invalid argument$"):
        setup({"root": {"path": "rootfs"}}, bundle,
              make_fake(resolver, lambda c: errno.EINVAL if c.name == "pivot_root" else 0))


def test_tmpfs_keeps_mode_of_hidden_dir_and_ro_is_deferred(tmp_path, host, bundle, resolver):
    os.chmod(bundle / "rootfs" / "tmp", 0o1777)
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["ro",
                                                                                "size=1m"]},
        {"destination": "/new", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/dev", "type": "devtmpfs-like", "source": "x", "options": ["ro"]},
    ]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    got = summary(fake, rootfs_of(bundle))
    assert got[3:6] == [
        ("mount", "tmpfs", "R/tmp", "tmpfs", 0, "mode=1777,size=1m"),  # not yet ro
        ("mount", "tmpfs", "R/new", "tmpfs", 0, None),  # created by us: tmpfs' own default
        ("mount", "x", "R/dev", "devtmpfs-like", 0, None),
    ]
    fake = make_fake(resolver)
    R.finalize_rootfs(spec, sc=fake, _root=rootfs_of(bundle))
    assert summary(fake, rootfs_of(bundle)) == [
        ("mount", None, "R/tmp", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
        ("mount", None, "R/dev", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
    ]


def test_dev_bind_skips_devices(tmp_path, host, bundle, resolver):
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/dev", "type": "bind", "source": str(tmp_path / "outside"),
         "options": ["rbind"]}]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    assert not fake.named("mknod")
    assert not os.path.lexists(bundle / "rootfs" / "dev" / "ptmx")


def test_no_pivot(tmp_path, host, bundle, resolver):
    fake = make_fake(resolver)
    setup({"root": {"path": "rootfs"}}, bundle, fake, no_pivot=True)
    got = summary(fake, rootfs_of(bundle))
    # host procfs and sysfs are taken away from the namespace before the move
    assert got[-6:] == [
        ("mount", None, "/proc", None, MS_SLAVE | MS_REC, None),
        ("umount2", "/proc", MNT_DETACH),
        ("mount", None, "/sys", None, MS_SLAVE | MS_REC, None),
        ("umount2", "/sys", MNT_DETACH),
        ("mount", "R", "/", None, MS_MOVE, None),
        ("chroot", "."),
    ]
    assert not fake.named("pivot_root")
    # a mount that cannot be unmounted (rootless) is covered with a tmpfs
    fake = make_fake(resolver, lambda c: errno.EPERM if c.name == "umount2" else 0)
    setup({"root": {"path": "rootfs"}}, bundle, fake, no_pivot=True)
    got = summary(fake, rootfs_of(bundle))
    assert ("mount", "tmpfs", "/proc", "tmpfs", 0, None) in got
    with pytest.raises(R.RootfsError, match="not safe without pivot_root"):
        setup({"root": {"path": "rootfs"}, "linux": {"rootfsPropagation": "private"}}, bundle,
              make_fake(resolver), no_pivot=True)


def test_rootfs_propagation(tmp_path, host, bundle, resolver):
    spec = {"root": {"path": "rootfs"}, "linux": {"rootfsPropagation": "shared"}}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    assert summary(fake, rootfs_of(bundle))[0] == ("mount", None, "/", None, MS_SHARED, None)
    fake = make_fake(resolver)
    R.finalize_rootfs(spec, sc=fake, _root=rootfs_of(bundle))
    assert summary(fake, rootfs_of(bundle)) == [("mount", None, "R", None, MS_SHARED, None)]
    # private / slave: set again on "/" alone after the pivot (their recursive
    # part was set before the container's mounts existed)
    fake = make_fake(resolver)
    R.finalize_rootfs({"linux": {"rootfsPropagation": "rprivate"}}, sc=fake,
                      _root=rootfs_of(bundle))
    assert summary(fake, rootfs_of(bundle)) == [("mount", None, "R", None, MS_PRIVATE, None)]
    fake = make_fake(resolver)
    R.finalize_rootfs({"linux": {}}, sc=fake, _root=rootfs_of(bundle))
    assert fake.calls == []
    with pytest.raises(R.RootfsError, match="unknown value 'sideways'"):
        setup({"root": {"path": "rootfs"}, "linux": {"rootfsPropagation": "sideways"}}, bundle,
              make_fake(resolver))


def test_before_pivot_hook_and_no_fd_leaks(tmp_path, host, bundle, resolver):
    seen = []
    fake = make_fake(resolver)
    fds = open_fds()
    R.setup_rootfs({"root": {"path": "rootfs"}, "mounts": RUNC_SPEC_MOUNTS}, str(bundle),
                   rootless=False, new_userns=False, new_netns=True, new_cgroupns=False,
                   no_pivot=False, sc=fake, before_pivot=lambda: seen.append(
                       (os.getcwd(), len(fake.named("pivot_root")))))
    assert seen == [(rootfs_of(bundle), 0)]
    assert open_fds() == fds
    # an error half-way closes everything too
    with pytest.raises(R.RootfsError):
        setup({"root": {"path": "rootfs"}, "mounts": RUNC_SPEC_MOUNTS}, bundle,
              make_fake(resolver, lambda c: errno.EIO if c.name == "mount" and c.args[2] ==
                        "mqueue" else 0))
    assert open_fds() == fds


def test_tmpcopyup_is_not_data(tmp_path, host, bundle, resolver):
    """tmpcopyup never reaches mount(2) (the copy itself is tested for real, as root)."""
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/new", "type": "tmpfs", "source": "tmpfs",
         "options": ["tmpcopyup", "mode=755"]}]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    assert summary(fake, rootfs_of(bundle))[3] == ("mount", "tmpfs", "R/new", "tmpfs", 0,
                                                   "mode=755")


# --------------------------------------------------------------------------
# finalize_rootfs


def test_masked_and_readonly_paths(tmp_path, host, bundle, resolver):
    root = bundle / "rootfs"
    for d in ("proc/sys", "proc/bus", "proc/acpi", "sys/firmware"):
        (root / d).mkdir(parents=True)
    for f in ("proc/kcore", "proc/sysrq-trigger", "proc/keys"):
        (root / f).write_text("")
    (root / "proc" / "irq").symlink_to("/etc")  # a symlink: resolved inside the rootfs
    spec = runc_spec(tmp_path, rootless=False)
    spec["root"] = {"path": "rootfs", "readonly": True}
    rootfs = rootfs_of(bundle)
    fake = make_fake(resolver)
    fds = open_fds()
    R.finalize_rootfs(spec, sc=fake, _root=rootfs)
    assert open_fds() == fds
    ro = MS_BIND | MS_REMOUNT | MS_RDONLY
    got = summary(fake, rootfs)
    keep = {c[4] & (MS_NOSUID | MS_NODEV | MS_NOEXEC) for c in got if c[0] == "mount"
            and c[4] & MS_REMOUNT}
    assert len(keep) == 1
    k = keep.pop()  # whatever the tmp filesystem has of nosuid/nodev/noexec is kept
    assert got == [
        # readonlyPaths, in order; missing ones (/proc/fs) skipped
        ("mount", "R/proc/bus", "R/proc/bus", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/proc/bus", None, ro | k, None),
        ("mount", "R/etc", "R/etc", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/etc", None, ro | k, None),
        ("mount", "R/proc/sys", "R/proc/sys", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/proc/sys", None, ro | k, None),
        ("mount", "R/proc/sysrq-trigger", "R/proc/sysrq-trigger", None, MS_BIND | MS_REC, None),
        ("mount", None, "R/proc/sysrq-trigger", None, ro | k, None),
        # maskedPaths: a tmpfs over directories, /dev/null over files
        ("mount", "tmpfs", "R/proc/acpi", "tmpfs", MS_RDONLY, None),
        ("mount", "/dev/null", "R/proc/kcore", None, MS_BIND, None),
        ("mount", "/dev/null", "R/proc/keys", None, MS_BIND, None),
        ("mount", "tmpfs", "R/sys/firmware", "tmpfs", MS_RDONLY, None),
        # root.readonly
        ("mount", None, "R", None, ro, None),
    ]
    assert [c.kwargs["label"] for c in mounts_of(fake)][:2] == ["/proc/bus", "/proc/bus"]


def test_finalize_errors(tmp_path, bundle, resolver):
    rootfs = rootfs_of(bundle)
    (bundle / "rootfs" / "proc" / "kcore").write_text("")
    with pytest.raises(R.RootfsError) as e:
        R.finalize_rootfs({"linux": {"maskedPaths": ["/proc/kcore"]}}, _root=rootfs,
                          sc=make_fake(resolver, lambda c: errno.EACCES))
    assert str(e.value) == ('linux.maskedPaths: mount "/dev/null" on /proc/kcore: '
                            "Permission denied")
    with pytest.raises(R.RootfsError) as e:
        R.finalize_rootfs({"root": {"readonly": True}}, _root=rootfs,
                          sc=make_fake(resolver, lambda c: errno.EBUSY))
    assert str(e.value) == ('root.readonly: mount "remount" on /: Device or resource busy '
                            "(making the rootfs read-only)")


# --------------------------------------------------------------------------
# runtime.inroot directly


def test_inroot_open_and_create(tmp_path, resolver):
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "f").write_text("x")
    (root / "up").symlink_to("../../../..")
    (root / "abs").symlink_to("/d")
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        def where(fd):
            try:
                return inroot.real_path(fd)
            finally:
                os.close(fd)

        r = os.path.realpath(root)
        assert where(inroot.open_in_root(rootfd, "/up/up/d")) == f"{r}/d"
        assert where(inroot.open_in_root(rootfd, "abs")) == f"{r}/d"
        assert where(inroot.open_in_root(rootfd, "/")) == r
        assert where(inroot.open_in_root(rootfd, "../../..")) == r
        assert where(inroot.open_in_root(rootfd, "/abs", os.O_PATH | os.O_NOFOLLOW)) == f"{r}/abs"
        with pytest.raises(OSError) as e:
            inroot.open_in_root(rootfd, "/abs/x", no_symlinks=True)
        assert e.value.errno == errno.ELOOP
        with pytest.raises(OSError) as e:
            inroot.open_in_root(rootfd, "/f/x")
        assert e.value.errno == errno.ENOTDIR
        with pytest.raises(OSError) as e:
            inroot.open_in_root(rootfd, "/f", os.O_PATH | os.O_DIRECTORY)
        assert e.value.errno == errno.ENOTDIR
        assert where(inroot.mkdir_all(rootfd, "/up/a/b/../c")) == f"{r}/a/c"
        assert (root / "a" / "b").is_dir()
        assert where(inroot.ensure_file(rootfd, "/abs/new")) == f"{r}/d/new"
        assert (root / "d" / "new").is_file()
        assert where(inroot.ensure_file(rootfd, "/f")) == f"{r}/f"  # existing: as it is
        fd = inroot.open_in_root(rootfd, "/f", os.O_RDONLY)
        assert os.read(fd, 1) == b"x"
        os.close(fd)
        with pytest.raises(OSError) as e:
            inroot.mkdir_all(rootfd, "/f/sub")
        assert e.value.errno == errno.ENOTDIR
    finally:
        os.close(rootfd)
    assert not (tmp_path / "a").exists()


def test_inroot_enosys_switches_to_the_walk(tmp_path, monkeypatch):
    monkeypatch.setattr(inroot, "HAVE_OPENAT2", True)
    (tmp_path / "r" / "d").mkdir(parents=True)
    rootfd = os.open(tmp_path / "r", os.O_PATH | os.O_DIRECTORY)
    try:
        fd = inroot.open_in_root(rootfd, "/d", sc=NoOpenat2())
        os.close(fd)
        assert inroot.HAVE_OPENAT2 is False
    finally:
        os.close(rootfd)


def test_parse_mountinfo_escapes():
    text = ("36 35 98:0 /mnt\\040with\\040space /mnt/a\\011b rw,noatime master:1 shared:2 - "
            "ext3 /dev/root rw,errors=continue\n")
    (mi,) = R.parse_mountinfo(text)
    assert mi.root == "/mnt with space"
    assert mi.mountpoint == "/mnt/a\tb"
    assert mi.optional == ["master:1", "shared:2"]
    assert (mi.fstype, mi.source, mi.superopts) == ("ext3", "/dev/root",
                                                    ["rw", "errors=continue"])
    assert R.parse_mountinfo("garbage\n") == []


def test_recursive_attributes_after_the_mount(tmp_path, host, bundle, resolver):
    """r* options: one mount_setattr(AT_EMPTY_PATH|AT_RECURSIVE) on the mounted
    target, after its mount, flags remount and propagation calls."""
    from runtime.syscalls import (AT_EMPTY_PATH, AT_RECURSIVE, MOUNT_ATTR__ATIME,
                                  MOUNT_ATTR_NOATIME, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_RDONLY)
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/data", "type": "bind", "source": str(tmp_path / "outside"),
         "options": ["rbind", "ro", "rslave", "rro", "rnoexec", "rnoatime"]},
        {"destination": "/plain", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]}]}
    fake = make_fake(resolver)
    setup(spec, bundle, fake)
    calls = fake.named("mount_setattr")
    assert len(calls) == 1, calls
    where, flags, aset, aclr, prop, userns = calls[0].args
    assert where.endswith("/rootfs/data") and flags == AT_EMPTY_PATH | AT_RECURSIVE
    assert (aset, aclr, prop, userns) == (
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME, 0, 0)
    names = [c.name for c in fake.calls]
    last_mount_of_data = max(i for i, c in enumerate(fake.calls)
                             if c.name == "mount" and str(c.args[1]).endswith("/data"))
    assert names.index("mount_setattr") > last_mount_of_data


def test_idmapped_tree_is_moved_then_flagged(tmp_path, host, bundle, resolver):
    """An idmapped entry: the parent's tree moved onto the target by fd (no
    mount(2) of the source), then the bind's remount and propagation."""
    from runtime.syscalls import MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/data", "type": "bind", "source": str(tmp_path / "outside"),
         "options": ["bind", "ro", "idmap", "private"],
         "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}],
         "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}]}]}
    fake = make_fake(resolver)
    tree = os.open(tmp_path / "outside", os.O_PATH | os.O_CLOEXEC)
    try:
        setup(spec, bundle, fake, idmapped={0: tree})
    finally:
        os.close(tree)
    moves = fake.named("move_mount")
    assert len(moves) == 1
    src, dst, flags = moves[0].args
    assert src == str(tmp_path / "outside") and dst.endswith("/rootfs/data")
    assert flags == MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
    data = [c for c in fake.named("mount") if str(c.args[1]).endswith("/rootfs/data")]
    assert [c.args[0] for c in data] == [None, None]  # the remount (ro), the propagation
    assert data[0].args[3] & MS_RDONLY and data[1].args[3] == MS_PRIVATE
    assert fake.calls.index(moves[0]) < fake.calls.index(data[0])
