"""runtime.rootfs against the real kernel, as root, in throw-away mount namespaces.

Each test forks a child that unshares a mount namespace (and, for the
user-namespace case, a user and pid namespace first), runs setup_rootfs and
finalize_rootfs on a small busybox rootfs, and checks from inside. The child
reports over a pipe and exits with a code the parent checks; every wait has a
timeout. The namespace dies with the child, so nothing stays mounted on the host
(asserted after each test from /proc/self/mountinfo).
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import stat
import sys
import time
import traceback
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime import rootfs as R  # noqa: E402
from runtime.syscalls import (  # noqa: E402
    CLONE_NEWCGROUP, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, SYS,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: mount namespaces, mknod and pivot_root")

BUSYBOX = Path(os.environ.get("BUSYBOX", "/bin/busybox"))
TIMEOUT = 30.0


def build_bundle(base: Path) -> Path:
    bundle = base / "bundle"
    rootfs = bundle / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    (rootfs / "etc" / "hostname").write_text("box\n")
    return bundle


def _mountinfo_targets() -> set[str]:
    return {mi.mountpoint for mi in R.read_mountinfo()}


def run_child(body, *, userns: bool = False, unshare: int = CLONE_NEWNS) -> list[str]:
    """Run body(report) in a child in new namespaces; return its report lines.

    Fails the test with the child's traceback when it exits non-zero.
    """
    r, w = os.pipe()
    go_r, go_w = os.pipe()  # userns: the parent wrote the id maps
    pid = os.fork()
    if pid == 0:  # ------------------------------------------------ child
        code = 1
        try:
            os.close(r)
            os.close(go_w)

            def report(line: str) -> None:
                os.write(w, (line + "\n").encode())

            if userns:
                SYS.unshare(CLONE_NEWUSER)
                os.write(w, b"MAP\n")
                if os.read(go_r, 1) != b"1":
                    raise RuntimeError("parent did not map us")
                SYS.unshare(CLONE_NEWNS | CLONE_NEWPID)
                inner = os.fork()  # pid 1 of the new pid namespace: procfs may be mounted
                if inner == 0:
                    c = 1
                    try:
                        body(report)
                        c = 0
                    except BaseException:  # noqa: BLE001
                        report("TRACEBACK " + traceback.format_exc().replace("\n", "\\n"))
                    os._exit(c)
                deadline = time.monotonic() + TIMEOUT
                while True:
                    done, status = os.waitpid(inner, os.WNOHANG)
                    if done:
                        code = os.waitstatus_to_exitcode(status)
                        break
                    if time.monotonic() > deadline:
                        os.kill(inner, signal.SIGKILL)
                        os.waitpid(inner, 0)
                        code = 3
                        break
                    time.sleep(0.01)
            else:
                SYS.unshare(unshare)
                body(report)
                code = 0
        except BaseException:  # noqa: BLE001
            try:
                os.write(w, ("TRACEBACK " + traceback.format_exc().replace("\n", "\\n")
                             + "\n").encode())
            except OSError:
                pass
        os._exit(code)
    # ------------------------------------------------------------ parent
    os.close(w)
    os.close(go_r)
    buf = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
            if userns and b"MAP\n" in buf:
                buf = buf.replace(b"MAP\n", b"", 1)
                for f, line in (("uid_map", "0 0 1\n"), ("gid_map", "0 0 1\n")):
                    with open(f"/proc/{pid}/{f}", "w") as fh:
                        fh.write(line)
                os.write(go_w, b"1")
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(r)
        os.close(go_w)
    status = None
    while time.monotonic() < deadline + 5:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        time.sleep(0.01)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("child timed out")
    lines = buf.decode(errors="replace").splitlines()
    code = os.waitstatus_to_exitcode(status)
    tb = [ln[len("TRACEBACK "):].replace("\\n", "\n") for ln in lines
          if ln.startswith("TRACEBACK ")]
    assert code == 0, f"child exit {code}:\n" + "\n".join(tb or lines)
    return [ln for ln in lines if not ln.startswith("TRACEBACK ")]


@pytest.fixture
def no_leaks():
    before = _mountinfo_targets()
    yield
    after = _mountinfo_targets()
    assert after - before == set(), "mounts left behind on the host"


def _config(data: Path, *, userns: bool) -> dict:
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not userns:
        devpts.append("gid=5")
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": False},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": devpts},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/data", "type": "bind", "source": str(data / "rw"),
             "options": ["rbind", "rw"]},
            {"destination": "/ro", "type": "bind", "source": str(data / "ro"),
             "options": ["bind", "ro", "nosuid", "nodev"]},
            {"destination": "/ro-file", "type": "bind", "source": str(data / "file"),
             "options": ["bind", "ro"]},
            # hostile: /evil -> ../../outside, resolved inside the rootfs
            {"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/etc-link/hostname", "type": "bind", "source": str(data / "file"),
             "options": ["bind", "ro"]},
        ],
        "linux": {
            "maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/timer_list", "/sys/firmware",
                            "/nonexistent"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/nonexistent"],
        },
    }


def _prepare(tmp_path: Path) -> tuple[Path, Path, Path]:
    os.chmod(tmp_path, 0o755)
    bundle = build_bundle(tmp_path)
    data = tmp_path / "data"
    (data / "rw").mkdir(parents=True)
    (data / "ro").mkdir()
    (data / "ro" / "x").write_text("ro\n")
    (data / "file").write_text("a file\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    rootfs = bundle / "rootfs"
    # on the host, rootfs/evil points at <tmp>/outside; inside, ".." stops at "/"
    (rootfs / "evil").symlink_to(os.path.relpath(outside, rootfs))
    (rootfs / "etc-link").symlink_to("/etc")  # absolute: the rootfs' /etc, not the host's
    return bundle, data, outside


def _checks(report, *, userns: bool, outside: Path) -> None:
    # /proc is a procfs
    assert os.path.exists("/proc/self/stat"), "/proc not mounted"
    with open("/proc/self/mountinfo") as f:
        info = R.parse_mountinfo(f.read())
    by_target = {mi.mountpoint: mi for mi in info}
    assert by_target["/proc"].fstype == "proc"
    assert by_target["/dev"].fstype == "tmpfs"
    assert by_target["/dev/pts"].fstype == "devpts"
    # devices
    for name, (major, minor) in {"null": (1, 3), "zero": (1, 5), "full": (1, 7),
                                 "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}.items():
        st = os.stat(f"/dev/{name}")
        assert stat.S_ISCHR(st.st_mode), name
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor), name
        if not userns:
            assert stat.S_IMODE(st.st_mode) == 0o666, name
    with open("/dev/null", "w") as f:
        f.write("discarded")
    assert os.readlink("/dev/ptmx") == "pts/ptmx"
    assert os.readlink("/dev/fd") == "/proc/self/fd"
    assert os.readlink("/dev/stderr") == "/proc/self/fd/2"
    # binds
    with open("/data/new", "w") as f:
        f.write("from the container\n")
    with open("/ro/x") as f:
        assert f.read() == "ro\n"
    for path in ("/ro/y", "/ro-file"):
        try:
            with open(path, "w") as f:
                f.write("no")
        except OSError as e:
            assert e.errno == errno.EROFS, (path, e)
        else:
            raise AssertionError(f"{path} is writable")
    assert os.statvfs("/ro").f_flag & os.ST_RDONLY
    assert os.statvfs("/ro").f_flag & os.ST_NOSUID
    # hostile symlinks stayed inside: /evil/sub is a tmpfs somewhere in the rootfs
    evil = os.path.realpath("/evil/sub")
    assert by_target[evil].fstype == "tmpfs"
    with open("/etc/hostname") as f:  # the rootfs' /etc got the bind
        assert f.read() == "a file\n"
    # sysfs is read-only (a real sysfs, or the host's bound read-only in a userns)
    assert os.statvfs("/sys").f_flag & os.ST_RDONLY
    # finalize: masked and read-only paths
    with open("/proc/timer_list") as f:
        assert f.read() == ""
    if os.path.isdir("/sys/firmware"):
        assert os.listdir("/sys/firmware") == []
    assert os.statvfs("/proc/sys").f_flag & os.ST_RDONLY
    assert os.getcwd() == "/"
    report("OK")


@pytest.mark.parametrize("no_pivot", [False, True], ids=["pivot_root", "no_pivot"])
def test_setup_rootfs_as_root(tmp_path, no_leaks, no_pivot):
    bundle, data, outside = _prepare(tmp_path)
    spec = _config(data, userns=False)

    def body(report):
        R.setup_rootfs(spec, str(bundle), rootless=False, new_userns=False, new_netns=False,
                       new_cgroupns=False, no_pivot=no_pivot)
        R.finalize_rootfs(spec)
        _checks(report, userns=False, outside=outside)

    assert run_child(body) == ["OK"]
    # nothing was created or written outside the rootfs through the symlinks
    assert list(outside.iterdir()) == []
    assert (data / "rw" / "new").read_text() == "from the container\n"
    assert (bundle / "rootfs" / "evil").is_symlink()
    assert (bundle / "rootfs" / "outside" / "sub").is_dir()  # where /evil/sub really is
    assert (bundle / "rootfs" / "etc" / "hostname").read_text() == "box\n"  # bind is gone


def test_setup_rootfs_in_user_namespace(tmp_path, no_leaks):
    """uid 0 in a new user namespace: mknod is refused (host nodes are bound),
    sysfs without a network namespace falls back to a read-only bind of /sys,
    and read-only remounts keep the locked flags of inherited mounts."""
    bundle, data, outside = _prepare(tmp_path)
    spec = _config(data, userns=True)
    spec["root"]["readonly"] = True

    def body(report):
        R.setup_rootfs(spec, str(bundle), rootless=True, new_userns=True, new_netns=False,
                       new_cgroupns=False, no_pivot=False)
        R.finalize_rootfs(spec)
        _checks(report, userns=True, outside=outside)
        assert os.statvfs("/").f_flag & os.ST_RDONLY
        with open("/proc/self/mountinfo") as f:
            info = {mi.mountpoint: mi for mi in R.parse_mountinfo(f.read())}
        assert info["/dev/null"].fstype == "devtmpfs"  # the host's node, bind-mounted
        report("OK")

    assert run_child(body, userns=True) == ["OK", "OK"]
    assert list(outside.iterdir()) == []


def test_symlink_loop_fails_cleanly(tmp_path, no_leaks):
    bundle, data, outside = _prepare(tmp_path)
    (bundle / "rootfs" / "loop1").symlink_to("loop2")
    (bundle / "rootfs" / "loop2").symlink_to("/loop1")
    spec = {"root": {"path": "rootfs"},
            "mounts": [{"destination": "/loop1/x", "type": "tmpfs", "source": "tmpfs"}]}

    def body(report):
        try:
            R.setup_rootfs(spec, str(bundle), rootless=False, new_userns=False,
                           new_netns=False, new_cgroupns=False, no_pivot=False)
        except R.RootfsError as e:
            report(str(e))
            return
        report("no error")

    lines = run_child(body)
    assert len(lines) == 1
    assert lines[0].startswith("mounts[0]: mount target /loop1/x in the rootfs: "
                               "Too many levels of symbolic links")


def test_tmpcopyup_and_cgroup_namespace(tmp_path, no_leaks):
    bundle, data, outside = _prepare(tmp_path)
    etc = bundle / "rootfs" / "etc"
    (etc / "sub").mkdir()
    (etc / "sub" / "conf").write_text("conf\n")
    os.chmod(etc / "sub" / "conf", 0o640)
    (etc / "link").symlink_to("sub/conf")
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
         "options": ["tmpcopyup", "nosuid", "size=1m"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]}
    host_v1 = [mi for mi in R.read_mountinfo()
               if mi.fstype == "cgroup" and os.path.dirname(mi.mountpoint) == "/sys/fs/cgroup"]

    def body(report):
        R.setup_rootfs(spec, str(bundle), rootless=False, new_userns=False, new_netns=False,
                       new_cgroupns=True, no_pivot=False)
        R.finalize_rootfs(spec)
        with open("/proc/self/mountinfo") as f:
            info = {mi.mountpoint: mi for mi in R.parse_mountinfo(f.read())}
        assert info["/etc"].fstype == "tmpfs"
        with open("/etc/hostname") as f:
            assert f.read() == "box\n"
        with open("/etc/link") as f:
            assert f.read() == "conf\n"
        assert os.readlink("/etc/link") == "sub/conf"
        assert stat.S_IMODE(os.stat("/etc/sub/conf").st_mode) == 0o640
        with open("/etc/new", "w") as f:
            f.write("only in the tmpfs")
        for mi in host_v1:
            name = os.path.basename(mi.mountpoint)
            got = info[f"/sys/fs/cgroup/{name}"]
            assert got.fstype == "cgroup", name
            assert got.root == "/", name  # a namespaced mount: our cgroup is its root
            for part in name.split(","):
                assert os.path.exists(f"/sys/fs/cgroup/{part}/cgroup.procs"), part
            assert os.statvfs(f"/sys/fs/cgroup/{name}").f_flag & os.ST_RDONLY, name
        assert info["/sys/fs/cgroup"].fstype == "tmpfs"  # left read-write, as runc does
        report("OK")

    assert run_child(body, unshare=CLONE_NEWNS | CLONE_NEWCGROUP) == ["OK"]
    assert not (bundle / "rootfs" / "etc" / "new").exists()


def test_dev_symlink_to_root_covers_the_root(tmp_path, no_leaks):
    """rootfs/dev -> ../../../..: "/dev" is the rootfs' own root, so the tmpfs covers
    it and everything after lands in that tmpfs, as runc's path-based lookups
    would do; nothing reaches the host."""
    bundle, data, outside = _prepare(tmp_path)
    os.rmdir(bundle / "rootfs" / "dev")
    (bundle / "rootfs" / "dev").symlink_to("../../../..")
    spec = {"root": {"path": "rootfs"}, "mounts": [
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["newinstance", "ptmxmode=0666"]}]}

    def body(report):
        R.setup_rootfs(spec, str(bundle), rootless=False, new_userns=False, new_netns=False,
                       new_cgroupns=False, no_pivot=False)
        # the rootfs is covered by the tmpfs; in it, /dev is a plain new directory
        assert os.listdir("/") == ["dev"]
        assert not os.path.islink("/dev")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
        assert os.path.exists("/dev/pts/ptmx")
        assert not os.path.exists("/proc")
        report("OK")

    assert run_child(body) == ["OK"]
    assert list(outside.iterdir()) == []
    assert sorted(os.listdir(bundle / "rootfs")) == ["bin", "dev", "etc", "etc-link", "evil",
                                                     "proc", "sys", "tmp"]
