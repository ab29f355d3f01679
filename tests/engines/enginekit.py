"""Real engines (podman + conmon, dockerd + containerd shim, containerd + ctr)
driving hako (or runc, for comparison), each with private state, and a sweep
that removes everything they started.

One ``Engine`` is one cell of the matrix for one runtime: ``podman-root``,
``podman-rootless``, ``docker-root`` (``--runtime NAME``), ``docker-default``
(the daemon's ``--default-runtime NAME``), ``docker-rootless``
(``dockerd-rootless.sh``), ``containerd`` (``ctr run --runtime
io.containerd.runc.v2 --runc-binary RT``). Its verbs (``run_rm``,
``run_detached``, ``exec``, ``stop`` ...) are the engine's own commands; the
tests only compare what the engine says.

Everything an engine starts carries ``HAKO_ENGINE_TEST=<its directory>`` in
its environment (daemons, shims, conmon, pause processes, and -- through ``-e``
-- the containers), cgroups are made under a parent named with the session
token, and every state directory is under the session's base directory, so
``support.find_leftovers`` finds what a crash or a bug leaves behind. Paths
outside the base that these engines insist on creating (/etc/docker/key.json,
/run/containerd/s, /opt/containerd ...) are removed at session end when they
did not exist before.

Every command has a timeout; on expiry its whole process group is killed.
"""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import busybox
import support

MARKER = "HAKO_ENGINE_TEST"
CMD_TIMEOUT = float(os.environ.get("HAKO_ENGINE_CMD_TIMEOUT") or 60)
#: all engine commands of a session together (a wedged engine must not hold CI
#: for hours: once spent, every further command fails at once)
BUDGET = float(os.environ.get("HAKO_ENGINE_BUDGET") or 600)
START_TIMEOUT = 60.0
CONTRIB = "/usr/share/docker.io/contrib"  # dockerd-rootless.sh in Debian's docker.io
IMAGE = "localhost/bb:latest"
#: what these engines create outside their private directories; removed at the
#: end of the session when it did not exist at its start
GLOBAL_PATHS = ["/etc/docker", "/run/docker", "/run/containerd", "/run/containers",
                "/run/libpod", "/opt/containerd", "/var/lib/containers/cache"]

#: the matrix: cell -> (engine kind, rootless)
CELLS = {
    "podman-root": ("podman", False),
    "podman-rootless": ("podman", True),
    "docker-root": ("docker", False),
    "docker-default": ("docker", False),
    "docker-rootless": ("docker", True),
    "containerd": ("ctr", False),
}
SHORT = {"podman-root": "pr", "podman-rootless": "pu", "docker-root": "dr",
         "docker-default": "dd", "docker-rootless": "du", "containerd": "ct"}
BINARIES = {"podman": ["podman", "conmon"], "docker": ["dockerd", "docker", "containerd",
                                                       "containerd-shim-runc-v2"],
            "ctr": ["containerd", "ctr", "containerd-shim-runc-v2"]}


class Unavailable(Exception):
    """This cell cannot run here (the message says why): the tests skip."""


@dataclass
class Result:
    argv: list[str]
    rc: int
    out: str
    err: str
    elapsed: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def describe(self) -> str:
        return (f"`{' '.join(self.argv)}` -> {self.rc} in {self.elapsed:.1f}s\n"
                f"--- stdout:\n{self.out}--- stderr:\n{self.err}")

    def ok(self, what: str = "") -> "Result":
        assert self.rc == 0, (f"{what or 'command'} failed ({self.rc}): {self.first_error()}\n"
                              f"{self.describe()}")
        return self

    def first_error(self) -> str:
        """What the user sees on stderr, on one line (long ids and temporary
        paths shortened)."""
        import re
        text = " / ".join(ln.strip() for ln in self.err.splitlines()
                          if ln.strip() and "level=warning" not in ln)
        text = re.sub(r"\b[0-9a-f]{64}\b", "ID", text)
        return re.sub(r"/tmp/hkeng-[^/ ]+/\S*", "TMPFILE", text) or self.out.strip()[:300]


def which(name: str, extra: str = "") -> str | None:
    path = support.CLEAN_PATH + (":" + extra if extra else "")
    return shutil.which(name, path=path)


# --------------------------------------------------------------------- commands

def run(argv: list, *, env: dict, timeout: float = CMD_TIMEOUT, input: str | None = None,
        cwd: str = "/") -> Result:
    """Run to completion; output through files (a container that inherits
    stdout cannot hold the call open); on timeout kill the process group."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else
                                subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                                process_group=0, close_fds=True)
        try:
            if input is not None:
                proc.stdin.write(input.encode())
                proc.stdin.close()
            rc = proc.wait(timeout=timeout)
        except BaseException as exc:
            _killpg(proc.pid)
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                out.seek(0)
                err.seek(0)
                raise support.RuntimeTimeout(
                    f"`{' '.join(argv)}` did not finish within {timeout}s\n--- stdout:\n"
                    f"{out.read().decode(errors='replace')}--- stderr:\n"
                    f"{err.read().decode(errors='replace')}") from None
            raise
        out.seek(0)
        err.seek(0)
        return Result(argv, rc, out.read().decode(errors="replace"),
                      err.read().decode(errors="replace"), time.monotonic() - t0)


def run_pty(argv: list, *, env: dict, send: str, timeout: float = CMD_TIMEOUT,
            prompt: bytes = b"# ") -> Result:
    """Run *argv* on a new pseudo-terminal (as a person would), type *send*
    once the shell prompt shows (or after 3 s), read until EOF."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:  # child: session leader on the pty
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    sent = False
    try:
        deadline = t0 + timeout
        while True:
            now = time.monotonic()
            if now > deadline:
                _killpg(pid)
                os.waitpid(pid, 0)
                raise support.RuntimeTimeout(f"`{' '.join(argv)}` on a pty did not finish "
                                             f"within {timeout}s; output: {out!r}")
            if not sent and (prompt in out or now - t0 > 3):
                os.write(fd, send.encode())
                sent = True
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the other side is gone
                    break
                if not chunk:
                    break
                out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return Result(argv, os.waitstatus_to_exitcode(status), out.decode(errors="replace"), "",
                  time.monotonic() - t0)


def _killpg(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise support.RuntimeTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cgroup_v1_or_hybrid() -> bool:
    return not os.path.exists("/sys/fs/cgroup/cgroup.controllers")


# ---------------------------------------------------------------------- session

class Session:
    """The engines' base directory, the busybox image archives, the sweep."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(3)
        # short: podman refuses a runroot longer than 50 characters
        self.base = Path(tempfile.mkdtemp(prefix="hkeng-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.cgroup_parent = f"hakoeng-{self.token}"
        self.preexisting = {p for p in GLOBAL_PATHS if os.path.lexists(p)}
        self.host_net = host_network()
        self.deadline = time.monotonic() + BUDGET
        self.removed_global: list[str] = []
        self._rootfs_tar: Path | None = None
        self._oci_tar: Path | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def rootfs_tar(self) -> Path:
        """tests/busybox.py's rootfs as a tar (root-owned entries)."""
        if self._rootfs_tar is None:
            img = self.base / "image"
            img.mkdir(mode=0o755, exist_ok=True)
            rootfs = busybox.build_rootfs(img / "rootfs")
            tar = busybox.rootfs_tar(rootfs, img / "bb.tar")
            os.chmod(tar, 0o644)
            self._rootfs_tar = tar
        return self._rootfs_tar

    def oci_tar(self) -> Path:
        """An OCI image layout archive of the same rootfs, for ``ctr image import``."""
        if self._oci_tar is None:
            self._oci_tar = write_oci_archive(self.rootfs_tar(), self.base / "image" / "bb-oci.tar")
        return self._oci_tar

    def close(self) -> list[str]:
        left = support.find_leftovers(self.base, [], self.cgroup_parent)
        if left:
            support.clean_leftovers(left)
        removed = []
        # another engine session (a concurrent `make test`) may still use them
        others = [d for d in Path("/tmp").glob("hkeng-*") if d != self.base]
        for p in GLOBAL_PATHS if not others else ():
            if p not in self.preexisting and os.path.lexists(p):
                support.remove_tree(Path(p))
                removed.append(p)
        support.remove_tree(self.base)
        changed = [f"host network changed ({k}): before {self.host_net[k]!r}, after {v!r}"
                   for k, v in host_network().items() if v != self.host_net.get(k)]
        self.removed_global = removed  # the engines' own droppings: not a failure
        return [str(x) for x in left] + changed


def host_network() -> dict[str, str]:
    """The engines' iptables rules and interfaces on the host (docker, cni,
    podman, netavark; counters dropped): run with --iptables=false /
    --bridge=none / --network none, they must not make any. (Only theirs:
    other tests on the machine may touch the rest meanwhile.)"""
    import re
    engines = re.compile(r"docker|cni|podman|netavark|^br-", re.I)
    out = {}
    for name, argv in (("iptables", ["iptables-save"]), ("ip6tables", ["ip6tables-save"]),
                       ("links", ["ip", "-o", "link", "show"])):
        exe = which(argv[0])
        if exe is None:
            continue
        try:
            r = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]
        if name == "links":
            lines = sorted(ln.split(":")[1].strip() for ln in lines if ":" in ln)
        else:
            lines = [re.sub(r"\[\d+:\d+\]", "", ln) for ln in lines]
        lines = [ln for ln in lines if engines.search(ln)]
        out[name] = "\n".join(lines)
    return out


def write_oci_archive(layer_tar: Path, dest: Path) -> Path:
    """oci-layout + index.json + blobs: one uncompressed layer, config, manifest;
    the image name in the annotations ctr import reads."""
    import hashlib
    import io

    def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(data))

    def blob(tf: tarfile.TarFile, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        add(tf, f"blobs/sha256/{digest}", data)
        return f"sha256:{digest}"

    layer = layer_tar.read_bytes()
    with tarfile.open(dest, "w") as tf:
        add(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        layer_digest = blob(tf, layer)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }).encode()
        config_digest = blob(tf, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": len(layer)}],
        }).encode()
        manifest_digest = blob(tf, manifest)
        add(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "annotations": {"io.containerd.image.name": IMAGE,
                            "org.opencontainers.image.ref.name": "latest"}}]}).encode())
    os.chmod(dest, 0o644)
    return dest


# ----------------------------------------------------------------------- engines

@dataclass
class Engine:
    session: Session
    cell: str
    runtime: str  # "hako" | "runc"
    dir: Path = field(init=False)
    user: support.Identity = field(init=False)
    rootless: bool = field(init=False)
    log: Path = field(init=False)
    daemon: subprocess.Popen | None = field(init=False, default=None)
    _n: int = field(init=False, default=0)
    hung: str = field(init=False, default="")  # the first command that timed out

    BOX = "box"
    #: the detached container: PID 1 is a shell (so it ignores SIGTERM: stop
    #: needs the KILL after the timeout) that records SIGHUP
    BOX_CMD = ["sh", "-c", 'trap "echo hup >> /tmp/hup" HUP; while :; do sleep 0.2; done']

    def __post_init__(self) -> None:
        kind, self.rootless = CELLS[self.cell]
        self.dir = self.session.base / f"{SHORT[self.cell]}-{self.runtime[0]}"
        self.dir.mkdir(mode=0o755)
        self.log = self.dir / "daemon.log"
        if self.rootless:
            try:
                self.user = support.Identity.test_user()
            except KeyError:
                raise Unavailable(f"user {support.TEST_USER} does not exist (make host-deps)")
        else:
            self.user = support.Identity.current()
        for b in BINARIES[kind]:
            if not which(b):
                raise Unavailable(f"{b} is not installed (make host-deps installs it)")
        if self.runtime_path() is None or not os.access(self.runtime_path(), os.X_OK):
            raise Unavailable(f"runtime {self.runtime} not found at {self.runtime_path()}")
        if self.rootless:
            problem = support._exec_problem(self.user, Path(self.runtime_path()))
            if problem:
                raise Unavailable(problem)

    # -- plumbing -------------------------------------------------------------
    def runtime_path(self) -> str:
        return str(support.HAKO if self.runtime == "hako" else support.RUNC)

    def private(self, name: str, mode: int = 0o755) -> Path:
        """A directory of this engine, owned by the user it runs as."""
        d = self.dir / name
        d.mkdir(mode=mode, exist_ok=True)
        os.chmod(d, mode)
        if self.rootless:
            os.chown(d, self.user.uid, self.user.gid)
        return d

    def write(self, name: str, text: str) -> Path:
        p = self.dir / name
        p.write_text(text)
        os.chmod(p, 0o644)
        return p

    def env(self) -> dict:
        env = {"PATH": support.CLEAN_PATH, "LANG": "C.UTF-8", MARKER: str(self.dir),
               "HOME": str(self.private("home", 0o700)), "TMPDIR": str(self.private("tmp", 0o1777)),
               "XDG_CONFIG_HOME": str(self.private("config", 0o700)),
               "XDG_DATA_HOME": str(self.private("data", 0o700)),
               "XDG_CACHE_HOME": str(self.private("cache", 0o700))}
        if self.rootless:
            env["XDG_RUNTIME_DIR"] = str(self.private("xdg", 0o700))
            env["USER"] = env["LOGNAME"] = self.user.name
        return env

    def _budget(self, timeout: float) -> float:
        if self.hung:
            raise AssertionError(f"{self.cell}: not run, an earlier command timed out: {self.hung}")
        left = self.session.remaining()
        if left <= 0:
            raise AssertionError(f"the engine tests' time budget (HAKO_ENGINE_BUDGET={BUDGET:g}s) "
                                 f"is spent")
        return min(timeout, left)

    def _timed(self, fn, *args, **kw) -> Result:
        try:
            return fn(*args, **kw)
        except support.RuntimeTimeout as e:
            self.hung = str(e).splitlines()[0]
            raise

    def sh(self, argv: list, *, timeout: float = CMD_TIMEOUT, input: str | None = None) -> Result:
        return self._timed(run, self.user.prefix() + list(argv), env=self.env(),
                           timeout=self._budget(timeout), input=input)

    def sh_pty(self, argv: list, send: str, timeout: float = CMD_TIMEOUT) -> Result:
        return self._timed(run_pty, self.user.prefix() + list(argv), env=self.env(), send=send,
                           timeout=self._budget(timeout))

    def new_name(self, prefix: str = "c") -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def start_daemon(self, argv: list, ready: list) -> None:
        """Start *argv* in its own session, logging to daemon.log, and wait
        until *ready* (a client command) succeeds."""
        logf = open(self.log, "ab")
        try:
            self.daemon = subprocess.Popen(
                self.user.prefix() + [str(a) for a in argv], stdin=subprocess.DEVNULL,
                stdout=logf, stderr=logf, env=self.env(), cwd="/", start_new_session=True)
        finally:
            logf.close()
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise AssertionError(f"{argv[0]} exited with {self.daemon.returncode} while "
                                     f"starting:\n{self.log_tail()}")
            last = self.sh(ready, timeout=15)
            if last.rc == 0:
                return
            time.sleep(0.3)
        raise support.RuntimeTimeout(f"{argv[0]} not ready after {START_TIMEOUT}s: "
                                     f"{last.describe() if last else ''}\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop_daemon(self, pids: list[int] = ()) -> None:
        """SIGTERM (the daemon, and *pids*), wait, then SIGKILL."""
        targets = [p for p in pids if p > 0]
        if self.daemon is not None and self.daemon.poll() is None:
            targets.append(self.daemon.pid)
        for pid in targets:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 20
        for pid in targets:
            while time.monotonic() < deadline and _alive(pid):
                if self.daemon is not None and pid == self.daemon.pid:
                    self.daemon.poll()
                time.sleep(0.1)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.daemon is not None:
            try:
                self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def state_dirs(self) -> list[Path]:
        """Where the runtime keeps its per-container state for this engine:
        empty again (of what this engine made) once the engine stopped."""
        return []

    def _owns_state(self, entry: Path) -> bool:
        """/run/hako and /run/runc are shared (podman root never passes --root):
        an entry is this engine's when its state names a bundle of ours."""
        try:
            return str(self.dir) in (entry / "state.json").read_text(errors="replace")
        except OSError:
            return entry.is_relative_to(self.dir)

    def snapshot_state(self) -> None:
        self._state_before = {d: set(_listdir(d)) for d in self.state_dirs()}

    def teardown(self) -> list[str]:
        """Graceful stop, then the sweep. Returns what the sweep found: the
        runtime's state entries, processes, mounts and container cgroups left
        behind (the engine's own parent cgroups, and podman's conmon cgroup,
        are removed silently: engines never remove those)."""
        errors = []
        if self.hung or self.session.remaining() <= 0:
            self.stop_daemon()  # no more commands: straight to signals and the sweep
        else:
            try:
                self.stop()
            except Exception as e:  # noqa: BLE001 - the sweep still has to run
                errors.append(f"stopping {self.cell}: {type(e).__name__}: {e}")
                self.stop_daemon()
        before = getattr(self, "_state_before", {})
        left = [support.Leftover("state", str(d / n)) for d in self.state_dirs()
                for n in sorted(set(_listdir(d)) - before.get(d, set()))
                if self._owns_state(d / n)]
        left += support.leftover_processes(self.dir) + support.leftover_mounts(self.dir)
        tops = []
        for mp in support._cgroup_mounts():
            top = os.path.join(mp, self.cgroup_parent)
            if os.path.isdir(top):
                tops.append(top)
                for entry in sorted(os.scandir(top), key=lambda e: e.name):
                    if entry.is_dir(follow_symlinks=False) and entry.name != "conmon":
                        left.append(support.Leftover("cgroup", entry.path))
        if left:
            support.clean_leftovers(left)
        support.clean_leftovers([support.Leftover("cgroup", t) for t in tops])
        support.remove_tree(self.dir)
        return errors + [str(x) for x in left]

    @property
    def tag(self) -> str:
        return f"{self.cell}-{self.runtime}"

    @property
    def cgroup_parent(self) -> str:
        return f"{self.session.cgroup_parent}-{self.tag}"

    # -- interface the tests use ----------------------------------------------
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self, name: str) -> str | None: ...


def _listdir(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
        return not s[s.rindex(b")") + 2:].startswith((b"Z", b"X"))
    except (OSError, ValueError):
        return False


class DockerLike(Engine):
    """podman and docker share the CLI: run/exec/top/stop/start/kill/pause/
    unpause/update/restart/rm/inspect."""

    def cli(self) -> list[str]:
        raise NotImplementedError

    def run_flags(self) -> list[str]:
        raise NotImplementedError

    def c(self, *args, timeout: float = CMD_TIMEOUT, input: str | None = None) -> Result:
        return self.sh(self.cli() + list(args), timeout=timeout, input=input)

    def run_rm(self, argv: list, *flags: str) -> Result:
        return self.c("run", "--rm", *self.run_flags(), *flags, IMAGE, *argv)

    def run_detached(self, name: str, argv: list) -> Result:
        return self.c("run", "-d", "--name", name, "--stop-timeout", "1", *self.run_flags(),
                      IMAGE, *argv)

    def run_init(self, argv: list) -> Result:
        return self.run_rm(argv, "--init")

    def run_preserve_fds(self, argv: list) -> Result:
        """``run --preserve-fds 1`` with fd 3 open on /etc/hostname (podman only)."""
        return self.sh(["sh", "-c", 'exec 3</etc/hostname; exec "$@"', "sh", *self.cli(), "run",
                        "--rm", "--preserve-fds", "1", *self.run_flags(), IMAGE, *argv])

    def run_tty(self, send: str) -> Result:
        return self.sh_pty(self.cli() + ["run", "--rm", "-it", *self.run_flags(), IMAGE, "sh"],
                           send)

    def exec(self, name: str, argv: list) -> Result:
        return self.c("exec", name, *argv)

    def exec_tty(self, name: str, send: str) -> Result:
        return self.sh_pty(self.cli() + ["exec", "-it", name, "sh"], send)

    def top(self, name: str) -> Result:
        return self.c("top", name)

    def stop_box(self, name: str, timeout: int = 1) -> Result:
        return self.c("stop", "-t", str(timeout), name)

    def start_box(self, name: str) -> Result:
        return self.c("start", name)

    def kill(self, name: str, sig: str) -> Result:
        return self.c("kill", "-s", sig, name)

    def pause(self, name: str) -> Result:
        return self.c("pause", name)

    def unpause(self, name: str) -> Result:
        return self.c("unpause", name)

    def update_memory(self, name: str, limit: str) -> Result:
        return self.c("update", "--memory", limit, name)

    def restart(self, name: str) -> Result:
        return self.c("restart", "-t", "1", name)

    def rm_force(self, name: str) -> Result:
        return self.c("rm", "-f", name)

    def inspect(self, name: str, fmt: str) -> str | None:
        r = self.c("inspect", "-f", fmt, name)
        return r.out.strip() if r.rc == 0 else None

    def status(self, name: str) -> str | None:
        return self.inspect(name, "{{.State.Status}}")

    def exit_code(self, name: str) -> int | None:
        v = self.inspect(name, "{{.State.ExitCode}}")
        return int(v) if v not in (None, "") else None

    def pid(self, name: str) -> int:
        v = self.inspect(name, "{{.State.Pid}}")
        return int(v) if v else 0

    def exists(self, name: str) -> bool:
        return self.c("inspect", "-f", "{{.Id}}", name).rc == 0

    def remove_all(self) -> None:
        r = self.c("ps", "-aq")
        ids = r.out.split()
        if ids:
            self.c("rm", "-f", *ids, timeout=120)


class Podman(DockerLike):
    """podman with private --root/--runroot/--tmpdir and a private containers.conf
    that registers hako (and runc) and lists hako in runtime_supports_json."""

    def start(self) -> None:
        for d in ("root", "runroot", "tmpdir"):
            self.private(d, 0o700)
        conf = f"""[containers]
netns = "none"
{'' if self.rootless else 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]'}

[network]
network_config_dir = "{self.dir}/netconf"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.dir}/tmpdir/events.log"
runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "hako"]
volume_path = "{self.dir}/root/volumes"

[engine.runtimes]
hako = ["{support.HAKO}"]
runc = ["{support.RUNC}"]
"""
        self.write("containers.conf", conf)
        self.write("storage.conf", f'[storage]\ndriver = "overlay"\nrunroot = "{self.dir}/runroot"\n'
                                   f'graphroot = "{self.dir}/root"\n')
        self.private("netconf", 0o755)
        self.c("info", "--format", "{{.Host.OCIRuntime.Name}}").ok("podman info")
        self.c("import", self.session.rootfs_tar(), IMAGE, timeout=120).ok("podman import")

    def state_dirs(self) -> list[Path]:
        # podman never passes --root: the runtime's own default
        if self.rootless:
            return [self.dir / "xdg" / self.runtime]
        return [Path("/run") / self.runtime]

    def env(self) -> dict:
        env = super().env()
        env["CONTAINERS_CONF"] = str(self.dir / "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(self.dir / "storage.conf")
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.dir / "registries.conf")
        if not (self.dir / "registries.conf").exists():
            self.write("registries.conf", "")
        return env

    def cli(self) -> list[str]:
        return ["podman", "--root", str(self.dir / "root"), "--runroot", str(self.dir / "runroot"),
                "--tmpdir", str(self.dir / "tmpdir"), "--runtime", self.runtime]

    def run_flags(self) -> list[str]:
        flags = ["-e", f"{MARKER}={self.dir}"]
        if not self.rootless:
            flags += ["--cgroup-parent", f"/{self.cgroup_parent}"]
        return flags

    def stop(self) -> None:
        try:
            self.c("rm", "-af", "-t", "0", timeout=120)
        finally:
            # rootless: the pause process that keeps podman's user namespace
            pidfile = self.dir / "tmpdir" / "pause.pid"
            pid = int(pidfile.read_text().strip() or 0) if pidfile.exists() else 0
            self.stop_daemon([pid])


class Docker(DockerLike):
    """dockerd with private --data-root/--exec-root/-H/--pidfile, no iptables,
    no bridge; hako registered with --add-runtime (docker-default: also its
    --default-runtime). docker-rootless: the same through dockerd-rootless.sh."""

    def sock(self) -> str:
        # in a directory the daemon's user owns (rootless: the test user)
        return str(self.dir / "sock" / "docker.sock")

    def state_dirs(self) -> list[Path]:
        exec_root = self.dir / ("xdg" if self.rootless else "run") / "exec"
        return [exec_root / f"runtime-{self.runtime}" / "moby"]

    def env(self) -> dict:
        env = super().env()
        env["DOCKER_HOST"] = f"unix://{self.sock()}"
        env["DOCKER_CONFIG"] = str(self.private("dockercfg", 0o700))
        if self.rootless:
            env["PATH"] = f"{CONTRIB}:{env['PATH']}"
        return env

    def start(self) -> None:
        if self.rootless:
            if not which("dockerd-rootless.sh", CONTRIB):
                raise Unavailable(f"dockerd-rootless.sh not found (Debian's docker.io ships it in "
                                  f"{CONTRIB})")
            if not which("rootlesskit"):
                raise Unavailable("rootlesskit is not installed (make host-deps)")
            if not which("slirp4netns"):
                raise Unavailable("slirp4netns is not installed (make host-deps)")
        self.private("sock", 0o711)
        state = self.private("xdg", 0o700) if self.rootless else self.private("run", 0o700)
        data = self.private("data-root", 0o710)
        self.write("daemon.json", "{}\n")
        argv = ["dockerd-rootless.sh" if self.rootless else "dockerd",
                "--config-file", self.dir / "daemon.json",
                "--data-root", data, "--exec-root", state / "exec",
                "-H", f"unix://{self.sock()}", "--pidfile", state / "docker.pid",
                "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--add-runtime", f"hako={support.HAKO}"]
        if not self.rootless:
            argv += ["--cgroup-parent", f"/{self.cgroup_parent}"]
        if self.cell == "docker-default":
            argv += ["--default-runtime", self.runtime]
        self.start_daemon(argv, ["docker", "version", "--format", "{{.Server.Version}}"])
        self.c("import", self.session.rootfs_tar(), IMAGE, timeout=120).ok("docker import")

    def cli(self) -> list[str]:
        return ["docker"]

    def run_flags(self) -> list[str]:
        flags = ["--network", "none", "-e", f"{MARKER}={self.dir}"]
        if self.cell != "docker-default":
            flags += ["--runtime", self.runtime]
        return flags

    def update_memory(self, name: str, limit: str) -> Result:
        # docker wants the swap limit raised with the memory limit
        return self.c("update", "--memory", limit, "--memory-swap", "-1", name)

    def stop(self) -> None:
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                self.remove_all()
        finally:
            state = self.dir / ("xdg" if self.rootless else "run")
            pidfile = state / "docker.pid"
            try:
                pid = int(pidfile.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            self.stop_daemon([pid])


class Containerd(Engine):
    """containerd with a private config (root, state, sockets, opt dir; no CRI),
    driven by ctr: ``ctr run --runtime io.containerd.runc.v2 --runc-binary RT``."""

    def sock(self) -> str:
        return str(self.dir / "ctrd.sock")

    def state_dirs(self) -> list[Path]:
        return [self.dir / "runtime-root" / self.ns]

    @property
    def ns(self) -> str:
        # cgroupsPath is /<namespace>/<id>: the namespace carries the session token
        return self.cgroup_parent

    def start(self) -> None:
        cfg = f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock()}"
[ttrpc]
  address = "{self.sock()}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir}/opt"
"""
        self.write("containerd.toml", cfg)
        self.private("fifo", 0o700)
        self.private("runtime-root", 0o711)
        self.start_daemon(["containerd", "--config", self.dir / "containerd.toml"],
                          ["ctr", "-a", self.sock(), "version"])
        self.c("image", "import", self.session.oci_tar(), timeout=120).ok("ctr image import")

    def c(self, *args, timeout: float = CMD_TIMEOUT) -> Result:
        return self.sh(["ctr", "-a", self.sock(), "-n", self.ns, *args], timeout=timeout)

    def ctr_argv(self, *args) -> list[str]:
        return ["ctr", "-a", self.sock(), "-n", self.ns, *args]

    def run_opts(self) -> list[str]:
        return ["--runtime", "io.containerd.runc.v2", "--runc-binary", self.runtime_path(),
                "--runc-root", str(self.dir / "runtime-root"), "--fifo-dir", str(self.dir / "fifo"),
                "--env", f"{MARKER}={self.dir}"]

    def run_rm(self, argv: list, *flags: str) -> Result:
        return self.c("run", "--rm", *self.run_opts(), *flags, IMAGE, self.new_name("r"), *argv)

    def run_detached(self, name: str, argv: list) -> Result:
        return self.c("run", "-d", *self.run_opts(), IMAGE, name, *argv)

    def run_init(self, argv: list) -> Result:
        # ctr has no --init: bind-mount docker's init (tini) the way docker does
        tini = os.path.realpath(which("docker-init") or which("tini-static") or "/usr/bin/tini-static")
        return self.run_rm(["/sbin/docker-init", "--", *argv], "--mount",
                           f"type=bind,src={tini},dst=/sbin/docker-init,options=rbind:ro")

    def run_tty(self, send: str) -> Result:
        return self.sh_pty(self.ctr_argv("run", "--rm", "-t", *self.run_opts(), IMAGE,
                                         self.new_name("t"), "sh"), send)

    def exec(self, name: str, argv: list) -> Result:
        return self.c("task", "exec", "--fifo-dir", str(self.dir / "fifo"), "--exec-id",
                      self.new_name("e"), name, *argv)

    def exec_tty(self, name: str, send: str) -> Result:
        return self.sh_pty(self.ctr_argv("task", "exec", "-t", "--fifo-dir", str(self.dir / "fifo"),
                                         "--exec-id", self.new_name("e"), name, "sh"), send)

    def top(self, name: str) -> Result:
        return self.c("task", "ps", name)

    def tasks(self) -> dict[str, tuple[int, str]]:
        r = self.c("task", "ls").ok("ctr task ls")
        out = {}
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if len(f) >= 3:
                out[f[0]] = (int(f[1]), f[2].lower())
        return out

    def status(self, name: str) -> str | None:
        t = self.tasks().get(name)
        if t is not None:
            return t[1]
        r = self.c("container", "info", name)
        return "no task" if r.rc == 0 else None

    def pid(self, name: str) -> int:
        t = self.tasks().get(name)
        return t[0] if t else 0

    def exists(self, name: str) -> bool:
        return self.c("container", "info", name).rc == 0

    def stop_box(self, name: str, timeout: int = 1) -> Result:
        """What docker stop does, with ctr's verbs: TERM, wait *timeout*, KILL,
        wait for the exit, delete the task (whose output gives the status)."""
        t0 = time.monotonic()
        self.c("task", "kill", "-s", "TERM", name).ok("ctr task kill -s TERM")
        deadline = t0 + timeout
        while time.monotonic() < deadline and self.status(name) == "running":
            time.sleep(0.1)
        if self.status(name) == "running":
            self.c("task", "kill", "-s", "KILL", name).ok("ctr task kill -s KILL")
        wait_for(lambda: self.status(name) == "stopped", 15, f"task {name} to stop")
        r = self.c("task", "delete", name)
        r.elapsed = time.monotonic() - t0
        return r

    def start_box(self, name: str) -> Result:
        return self.c("task", "start", "-d", "--fifo-dir", str(self.dir / "fifo"), name)

    def kill(self, name: str, sig: str) -> Result:
        return self.c("task", "kill", "-s", sig, name)

    def pause(self, name: str) -> Result:
        return self.c("task", "pause", name)

    def unpause(self, name: str) -> Result:
        return self.c("task", "resume", name)

    def rm_force(self, name: str) -> Result:
        r = self.c("task", "delete", "--force", name)
        if r.rc != 0 and "not found" not in r.err:
            return r
        return self.c("container", "delete", name)

    def remove_all(self) -> None:
        for name in self.tasks():
            self.c("task", "delete", "--force", name)
        r = self.c("container", "ls", "-q")
        for name in r.out.split():
            self.c("container", "delete", name)

    def stop(self) -> None:
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                self.remove_all()
        finally:
            self.stop_daemon()


def make_engine(session: Session, cell: str, runtime: str) -> Engine:
    kind = CELLS[cell][0]
    cls = {"podman": Podman, "docker": Docker, "ctr": Containerd}[kind]
    return cls(session, cell, runtime)
