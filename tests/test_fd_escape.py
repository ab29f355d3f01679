"""No way out through a file descriptor (CVE-2024-21626 and its kind).

An fd that the runtime still holds when the container's process changes into
its working directory can be named as /proc/self/fd/N (or
/proc/thread-self/fd/N) and leads to whatever it points at: hako's state
directory on the host, say, and from there ``../../..`` to any host file.
Every test runs as root and rootless; each attack is tried for N = 3..64.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import support

FDS = range(3, 65)
PROC_FD_DIRS = ("/proc/self/fd", "/proc/thread-self/fd")
#: what an escaped process would print: the host's marker file, reached upwards
PROBE = ["sh", "-c", "pwd; cat ../../../../../../../../../../tmp/hako-escape-marker 2>&1"]


@pytest.fixture
def marker():
    path = Path("/tmp/hako-escape-marker")
    path.write_text("HOST-SECRET\n")
    path.chmod(0o644)
    yield path
    path.unlink(missing_ok=True)


def _state(rt, cid: str) -> dict:
    r = rt.hako("state", cid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _running(rt, args=("sleep", "1000")) -> str:
    cid = rt.new_id()
    r = rt.hako("run", "-d", "--bundle", rt.bundle(list(args)), cid)
    assert r.returncode == 0, r.stderr
    return cid


@pytest.mark.parametrize("fd_dir", PROC_FD_DIRS)
def test_create_refuses_a_cwd_through_proc_fd(rt, marker, fd_dir):
    bundle = rt.bundle(PROBE)
    for n in FDS:
        cfg = rt.read_config(bundle)
        cfg["process"]["cwd"] = f"{fd_dir}/{n}"
        rt.write_config(bundle, cfg)
        cid = rt.new_id()
        r = rt.hako("create", "--bundle", bundle, cid)
        if r.returncode == 0:
            # it must not have escaped: show where it landed, then fail
            start = rt.hako("start", cid)
            out = rt.hako("delete", "--force", cid)
            pytest.fail(f"cwd {fd_dir}/{n} was accepted (start: {start.stdout!r} "
                        f"{start.stderr!r}; delete: {out.returncode})")
        assert "process.cwd" in r.stderr, (n, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "HOST-SECRET" not in r.stdout + r.stderr
        assert not (rt.state_dir / cid).exists()


@pytest.mark.parametrize("fd_dir", PROC_FD_DIRS)
def test_exec_refuses_a_cwd_through_proc_fd(rt, marker, fd_dir):
    cid = _running(rt)
    proc_file = rt.dir / "process.json"
    for n in FDS:
        cwd = f"{fd_dir}/{n}"
        r = rt.hako("exec", "--cwd", cwd, cid, *PROBE)
        assert r.returncode != 0, (cwd, r.stdout)
        assert "process.cwd" in r.stderr and "HOST-SECRET" not in r.stdout, (cwd, r.stderr)
        proc_file.write_text(json.dumps({"args": PROBE, "cwd": cwd, "env": ["PATH=/bin"],
                                         "user": {"uid": 0, "gid": 0}}))
        os.chown(proc_file, rt.uid, rt.gid)
        r = rt.hako("exec", "--process", proc_file, cid)
        assert r.returncode != 0, (cwd, r.stdout)
        assert "process.cwd" in r.stderr and "HOST-SECRET" not in r.stdout, (cwd, r.stderr)
    # the container is still fine
    r = rt.hako("exec", "--cwd", "/tmp", cid, "pwd")
    assert (r.returncode, r.stdout) == (0, "/tmp\n"), r.stderr


def test_exec_refuses_a_preserved_host_directory_as_cwd(rt, marker):
    """A directory fd the caller passes on purpose is the container's to use
    (like runc), but it never becomes the working directory."""
    cid = _running(rt)
    argv = rt.hako_argv("exec", "--preserve-fds", "1", "--cwd", "/proc/self/fd/3", cid, *PROBE)
    cmd = " ".join(f"'{a}'" for a in argv)
    r = rt.run(["sh", "-c", f"exec 3</tmp; exec {cmd}"])
    assert r.returncode != 0 and "process.cwd" in r.stderr, (r.stdout, r.stderr)
    assert "HOST-SECRET" not in r.stdout


def test_cwd_is_never_created_outside_the_root(rt):
    """process.cwd is created when missing: through a magic link that would
    make a directory on the host."""
    bundle = rt.bundle(["true"])
    host_dir = rt.dir / "host-side"
    host_dir.mkdir()
    os.chown(host_dir, rt.uid, rt.gid)
    for n in FDS:
        cfg = rt.read_config(bundle)
        cfg["process"]["cwd"] = f"/proc/self/fd/{n}/../../../../../../../../{host_dir}/x{n}"
        rt.write_config(bundle, cfg)
        cid = rt.new_id()
        r = rt.hako("create", "--bundle", bundle, cid)
        if r.returncode == 0:
            rt.hako("delete", "--force", cid)
    assert list(host_dir.iterdir()) == []


def test_a_cwd_symlink_resolves_inside_the_root(rt):
    """The safe resolution still follows ordinary symlinks, as chroot would."""
    bundle = rt.bundle(["pwd"], patch={"process": {"cwd": "/link/sub"}})
    rootfs = bundle / "rootfs"
    (rootfs / "target").mkdir()
    os.symlink("/target", rootfs / "link")
    os.lchown(rootfs / "link", rt.uid, rt.gid)
    os.chown(rootfs / "target", rt.uid, rt.gid)
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert (r.returncode, r.stdout) == (0, "/target/sub\n"), r.stderr


def _fds_of(pid: int) -> dict[int, str]:
    base = f"/proc/{pid}/fd"
    out = {}
    for name in os.listdir(base):
        try:
            out[int(name)] = os.readlink(f"{base}/{name}")
        except OSError:
            continue
    return out


def test_the_waiting_init_holds_no_directory(rt):
    """Between create and start the init holds stdio, its sync pipes and an
    O_PATH handle on exec.fifo: nothing that leads anywhere as a path, not
    even a directory fd the caller leaked to create."""
    if os.geteuid() != 0:
        pytest.skip("the waiting init is non-dumpable, so only root can list its fds "
                    "(which is what keeps them from the container): run as root")
    cid = rt.new_id()
    argv = rt.hako_argv("create", "--bundle", rt.bundle(["true"]), cid)
    cmd = " ".join(f"'{a}'" for a in argv)
    r = rt.run(["sh", "-c", f"exec 7</tmp 8<'{rt.state_dir}'; exec {cmd}"])
    assert r.returncode == 0, r.stderr
    pid = _state(rt, cid)["pid"]
    fds = _fds_of(pid)
    assert set(fds) >= {0, 1, 2}
    for n, target in fds.items():
        st = os.stat(f"/proc/{pid}/fd/{n}")
        assert not stat.S_ISDIR(st.st_mode), f"the init holds directory fd {n} -> {target}"
    assert 7 not in fds and 8 not in fds, fds
    assert rt.hako("delete", "--force", cid).returncode == 0


@pytest.mark.parametrize("preserve", [0, 2])
def test_container_and_exec_see_only_what_was_passed(rt, preserve):
    """/proc/self/fd of the container's process and of an exec'd one: stdio,
    the preserved fds, and the listing's own directory fd."""
    lister = ["sh", "-c", "ls /proc/$$/fd; true"]  # the shell's fds, not ls's
    opens = "exec 3</dev/null 4</dev/null 9</tmp"
    want = sorted(str(n) for n in range(3 + preserve))
    argv = rt.hako_argv("run", "--preserve-fds", str(preserve), "--bundle",
                        rt.bundle(lister), rt.new_id())
    cmd = " ".join(f"'{a}'" for a in argv)
    r = rt.run(["sh", "-c", f"{opens}; exec {cmd}"])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == want, r.stdout
    cid = _running(rt)
    argv = rt.hako_argv("exec", "--preserve-fds", str(preserve), cid, *lister)
    cmd = " ".join(f"'{a}'" for a in argv)
    r = rt.run(["sh", "-c", f"{opens}; exec {cmd}"])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == want, r.stdout


def test_without_a_proc_mount_the_container_still_starts(rt, marker):
    """Rootless without a pid namespace cannot mount a procfs: the init then
    waits on exec.fifo through the state directory's handle, which nothing in
    the container can name (no procfs shows the init's fds); process.cwd
    through /proc/self/fd still goes nowhere."""
    def no_proc(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/proc"]
        cfg["linux"].pop("maskedPaths", None)  # they need /proc as well
        cfg["linux"].pop("readonlyPaths", None)
        cfg["root"]["readonly"] = False  # the remount goes through /proc/self/fd
        cfg["process"]["user"] = {"uid": 0, "gid": 0}  # setgroups needs /proc rootless
    bundle = rt.bundle(["sh", "-c", "echo started; pwd"], patch=no_proc)
    r = rt.hako("run", "--bundle", bundle, rt.new_id())
    assert (r.returncode, r.stdout) == (0, "started\n/\n"), r.stderr
    cfg = rt.read_config(bundle)
    cfg["process"]["args"] = PROBE
    for n in FDS:
        # no procfs: /proc/self/fd/N is an ordinary path, made inside the rootfs
        cfg["process"]["cwd"] = f"/proc/self/fd/{n}"
        rt.write_config(bundle, cfg)
        r = rt.hako("run", "--bundle", bundle, rt.new_id())
        assert "HOST-SECRET" not in r.stdout, (n, r.stdout)
        assert r.stderr == "" and r.stdout.splitlines()[0] == f"/proc/self/fd/{n}", r


def _through_fds(host_dir: Path, leaf: str) -> list[str]:
    return [f"/proc/self/fd/{n}/../../../../../../../../{host_dir}/{leaf}{n}" for n in FDS]


@pytest.mark.parametrize("where", ["mounts", "maskedPaths", "readonlyPaths", "devices"])
def test_no_container_path_leads_outside(rt, where):
    """Mount targets, masked and read-only paths and device nodes are resolved
    inside the rootfs, never through a /proc magic link: nothing is made,
    masked or mounted in a host directory."""
    host_dir = rt.dir / "host-side"
    host_dir.mkdir()
    (host_dir / "keep").write_text("host data\n")
    paths = _through_fds(host_dir, "x")

    def patch(cfg):
        linux = cfg["linux"]
        if where == "mounts":
            cfg["mounts"] += [{"destination": p, "type": "tmpfs", "source": "tmpfs"}
                              for p in paths]
        elif where == "devices":
            linux["devices"] = [{"path": p, "type": "c", "major": 1, "minor": 3}
                                for p in paths]
        else:
            linux[where] = paths + [f"/proc/self/fd/{n}" for n in FDS]
    bundle = rt.bundle(["true"], patch=patch)
    cid = rt.new_id()
    r = rt.hako("create", "--bundle", bundle, cid)
    if r.returncode == 0:
        assert rt.hako("delete", "--force", cid).returncode == 0
    else:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (rt.state_dir / cid).exists()
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep"]
    assert (host_dir / "keep").read_text() == "host data\n"


@pytest.mark.parametrize("listen_pid", ["ours", "other"])
def test_socket_activation_fds_are_passed(rt, listen_pid):
    """LISTEN_FDS/LISTEN_PID naming hako (systemd socket activation, as runc):
    the fds reach the container first, then --preserve-fds; the process sees
    LISTEN_FDS=N and LISTEN_PID=1. For another pid nothing is passed."""
    argv = rt.hako_argv("run", "--preserve-fds", "1", "--bundle",
                        rt.bundle(["sh", "-c", "echo $LISTEN_FDS:$LISTEN_PID; ls /proc/$$/fd; true"]),
                        rt.new_id())
    cmd = " ".join(f"'{a}'" for a in argv)
    pid = "$$" if listen_pid == "ours" else "1"
    r = rt.run(["sh", "-c", f"exec 3</dev/null 4</dev/null 5</dev/null; "
                            f"LISTEN_FDS=2 LISTEN_PID={pid} exec {cmd}"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    if listen_pid == "ours":
        assert lines[0] == "2:1" and sorted(lines[1:]) == ["0", "1", "2", "3", "4", "5"]
    else:
        assert lines[0] == ":" and sorted(lines[1:]) == ["0", "1", "2", "3"]
