"""Shared machinery for hako's lifecycle tests (used through tests/conftest.py).

Layout of one test session (all under a 0755 directory in /tmp, because pytest's
tmp_path sits in a 0700 directory the unprivileged test user cannot enter)::

    /tmp/hako-test-XXXXXX/          Session.base, removed at session end
        cache/rootfs/               busybox rootfs, built once, copied per bundle
        t0001/                      Runtime.dir: one per test (owned by the user
            hako/                     the runtime runs as); --root for hako
            runc/                     --root for runc
            xdg/                      XDG_RUNTIME_DIR (rootless)
            b1/ b2/ ...               bundles (rt.bundle())

Every runtime call gets ``HAKO_TEST_SESSION=<base>`` in its environment and every
bundle gets it in process.env, so any process the tests leave behind (runtime,
container init, container process) can be found through /proc even after it
pivoted into its rootfs.
"""

from __future__ import annotations

import copy
import ctypes
import errno
import getpass
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(REPO) not in sys.path:  # `runtime` importable without an install
    sys.path.append(str(REPO))

import busybox  # noqa: E402  (tests/busybox.py)

HAKO = Path(os.environ.get("HAKO") or REPO / ".venv" / "bin" / "hako")
RUNC = Path(os.environ.get("RUNC") or "/usr/sbin/runc")
TEST_USER = os.environ.get("HAKO_TEST_USER") or "hakotest"
MARKER = "HAKO_TEST_SESSION"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TIMEOUT = 30.0
TEARDOWN_TIMEOUT = 15.0
MODES = ("root", "rootless")


class RuntimeTimeout(AssertionError):
    """A runtime call (or a whole test) exceeded its time limit."""


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


#: In a ``patch`` dict, removes the key from the config.
DELETE = _Delete()
_DEFAULT: Any = object()


# --------------------------------------------------------------------------- utils

def deep_merge(config: dict, patch: dict) -> dict:
    """Merge *patch* into *config* in place: dicts merge recursively, other values
    (lists included) replace, and ``DELETE`` removes a key."""
    for key, value in patch.items():
        if value is DELETE:
            config.pop(key, None)
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            deep_merge(config[key], value)
        else:
            config[key] = copy.deepcopy(value)
    return config


def stopped(rt: "Runtime", cid: str) -> bool:
    """Has *cid* stopped (or gone)? For wait_until."""
    r = rt.hako("state", cid)
    return r.returncode != 0 or json.loads(r.stdout)["status"] == "stopped"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll *predicate* until it returns something truthy; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _fmt_cmd(argv: Iterable[Any]) -> str:
    return " ".join(str(a) for a in argv)


def _read(f) -> str:
    f.seek(0)
    return f.read().decode("utf-8", "replace")


@dataclass(frozen=True)
class Identity:
    """Who runtime calls run as."""

    name: str
    uid: int
    gid: int
    home: str
    setpriv: bool  # switch to this user with setpriv (we are root, mode rootless)

    @classmethod
    def current(cls) -> "Identity":
        uid, gid = os.geteuid(), os.getegid()
        try:
            pw = pwd.getpwuid(uid)
            name, home = pw.pw_name, pw.pw_dir
        except KeyError:
            name, home = getpass.getuser(), os.environ.get("HOME", "/")
        return cls(name, uid, gid, home, False)

    @classmethod
    def test_user(cls, name: str = TEST_USER) -> "Identity":
        pw = pwd.getpwnam(name)  # KeyError if missing
        return cls(name, pw.pw_uid, pw.pw_gid, pw.pw_dir, True)

    def prefix(self) -> list[str]:
        if not self.setpriv:
            return []
        return ["setpriv", f"--reuid={self.name}", f"--regid={self.name}", "--init-groups", "--"]


def identity_for(mode: str) -> Identity:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "rootless" and os.geteuid() == 0:
        return Identity.test_user()
    return Identity.current()


# ------------------------------------------------------------------------ session

class Session:
    """Per-pytest-session state: the 0755 base directory and the rootfs cache."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)
        self.base = Path(tempfile.mkdtemp(prefix="hako-test-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self._tests = itertools.count(1)
        self._ids = itertools.count(1)
        self._rootfs: Path | None = None
        self._exec_checked: dict[str, str | None] = {}

    def rootfs(self) -> Path:
        """The session's cached busybox rootfs (built on first use)."""
        if self._rootfs is None:
            cache = self.base / "cache"
            cache.mkdir(mode=0o755, exist_ok=True)
            os.chmod(cache, 0o755)
            self._rootfs = busybox.build_rootfs(cache / "rootfs")
        return self._rootfs

    def new_test_dir(self) -> Path:
        d = self.base / f"t{next(self._tests):04d}"
        d.mkdir(mode=0o755)
        return d

    def new_id(self) -> str:
        return f"hk{self.token}-{next(self._ids)}"

    def hako_exec_problem(self, ident: Identity) -> str | None:
        """Why *ident* cannot run HAKO (None if it can, or if HAKO is missing)."""
        if ident.name in self._exec_checked:
            return self._exec_checked[ident.name]
        problem = None
        if HAKO.exists() and ident.setpriv:
            problem = _exec_problem(ident, HAKO)
        self._exec_checked[ident.name] = problem
        return problem

    def close(self) -> list[str]:
        """Final sweep, then remove the base directory. Returns what was left."""
        left = find_leftovers(self.base, [], self.token)
        if left:
            clean_leftovers(left)
        remove_tree(self.base)
        return [str(x) for x in left]


def _blocking_ancestor(path: Path) -> str | None:
    """First directory on the way to *path* that others cannot search."""
    p = Path("/")
    for part in path.parent.parts[1:]:
        p = p / part
        try:
            if not os.stat(p).st_mode & 0o001:
                return str(p)
        except OSError:
            return str(p)
    return None


def _exec_problem(ident: Identity, exe: Path) -> str | None:
    env = {"PATH": CLEAN_PATH, "HOME": ident.home, "LANG": "C.UTF-8"}
    r = subprocess.run(ident.prefix() + ["test", "-x", str(exe)], env=env, cwd="/",
                       capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    if r.returncode != 0:
        why = _blocking_ancestor(exe)
        hint = f" ({why} is not searchable by others)" if why else ""
        return (f"test user {ident.name} cannot execute HAKO={exe}{hint}: put the repo where "
                f"every user can reach it (chmod o+rx on its parents, `make install`) "
                f"or point HAKO at an executable it can run")
    r = subprocess.run(ident.prefix() + [str(exe), "--version"], env=env, cwd="/",
                       capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (f"test user {ident.name} cannot run HAKO={exe} ({last}); make the repo and "
                f".venv readable by others (`make install` as root does)")
    return None


# ---------------------------------------------------------------------- leftovers

@dataclass(frozen=True)
class Leftover:
    kind: str  # "state", "process", "mount", "cgroup"
    what: str  # path, pid, mount point
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.what}" + (f" ({self.detail})" if self.detail else "")


def _proc_text(pid: str, name: str) -> str:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()


def leftover_processes(base: Path) -> list[Leftover]:
    """Processes whose cmdline, environment, cwd or root refer to *base*."""
    needle = str(base)
    me = os.getpid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
            if stat[stat.rindex(")") + 2:].startswith("Z"):
                continue  # zombie: nothing left to clean but its parent's wait()
            cmdline = _proc_text(pid, "cmdline")
        except (OSError, ValueError):
            continue
        hit = needle in cmdline
        where = "cmdline"
        for name in ("environ", "cwd", "root"):
            if hit:
                break
            try:
                text = (os.readlink(f"/proc/{pid}/{name}") if name != "environ"
                        else _proc_text(pid, name))
            except OSError:
                continue
            if needle in text:
                hit, where = True, name
        if hit:
            found.append(Leftover("process", pid, f"{where}; {cmdline[:160] or '?'}"))
    return found


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo() -> list[list[str]]:
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f if line.strip()]


def leftover_mounts(base: Path) -> list[Leftover]:
    needle = str(base)
    found = []
    for fields in _mountinfo():
        root, mountpoint = _unescape_mountinfo(fields[3]), _unescape_mountinfo(fields[4])
        if mountpoint.startswith(needle) or root.startswith(needle):
            found.append(Leftover("mount", mountpoint, f"root {root}"))
    return found


def leftover_state(dirs: Iterable[Path]) -> list[Leftover]:
    found = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        for name in names:
            found.append(Leftover("state", str(d / name)))
    return found


def _cgroup_mounts() -> list[str]:
    out = []
    for fields in _mountinfo():
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if fields[sep + 1] in ("cgroup", "cgroup2"):
            out.append(_unescape_mountinfo(fields[4]))
    return out


def leftover_cgroups(token: str, max_depth: int = 5) -> list[Leftover]:
    """cgroup directories whose name contains *token* (container ids carry it)."""
    found = []

    def walk(path: str, depth: int) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            if token in e.name:
                found.append(Leftover("cgroup", e.path))
            elif depth < max_depth:
                walk(e.path, depth + 1)

    for mp in _cgroup_mounts():
        walk(mp, 1)
    return found


def find_leftovers(base: Path, state_dirs: Iterable[Path], token: str) -> list[Leftover]:
    return (leftover_state(state_dirs) + leftover_processes(base)
            + leftover_mounts(base) + leftover_cgroups(token))


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _umount_lazy(path: str) -> None:
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=TEARDOWN_TIMEOUT)


def _kill_cgroup(path: str) -> None:
    for ctl, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        try:
            with open(os.path.join(path, ctl), "w") as f:
                f.write(value)
        except OSError:
            pass
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
    except OSError:
        pass


def clean_leftovers(leftovers: list[Leftover]) -> None:
    """Kill, unmount and remove what *leftovers* lists (best effort)."""
    pids = [int(x.what) for x in leftovers if x.kind == "process"]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    s = f.read().decode("utf-8", "replace")
                if s[s.rindex(")") + 2:].startswith("Z"):
                    break
            except (OSError, ValueError):
                break
            time.sleep(0.02)
    for x in sorted((x for x in leftovers if x.kind == "mount"), key=lambda x: -len(x.what)):
        _umount_lazy(x.what)
    for x in leftovers:
        if x.kind == "state":
            remove_tree(Path(x.what))
    cgroups = sorted((x.what for x in leftovers if x.kind == "cgroup"),
                     key=lambda p: -p.count("/"))
    for path in cgroups:
        # children first: walk bottom-up, killing what lives inside
        for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
            _kill_cgroup(dirpath)
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def remove_tree(path: Path) -> None:
    """rm -rf, also when a container left files owned by ids we do not own."""
    if not os.path.lexists(path):
        return
    for fields in _mountinfo():
        mp = _unescape_mountinfo(fields[4])
        if mp == str(path) or mp.startswith(str(path) + "/"):
            _umount_lazy(mp)

    def onerror(func, p, exc_info):
        if func not in (os.unlink, os.rmdir, os.remove):
            return  # e.g. cannot open a directory: the fallback below deals with it
        try:  # a directory without write permission (e.g. made read-only)
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=onerror)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
    if os.path.lexists(path) and os.geteuid() != 0:
        # files owned by subordinate ids: remove them from a user namespace
        subprocess.run(["unshare", "--map-root-user", "--map-auto", "rm", "-rf", "--", str(path)],
                       capture_output=True, timeout=60)


# ------------------------------------------------------------------------ runtime

class Runtime:
    """The ``rt`` fixture: runs hako (the runtime under test) and runc (the
    reference) as the identity of the test's mode, with per-test state dirs."""

    def __init__(self, session: Session, mode: str, ident: Identity | None = None) -> None:
        self.session = session
        self.mode = mode
        self.rootless = mode == "rootless"
        self.user = ident or identity_for(mode)
        self.hako_path = HAKO
        self.runc_path = RUNC
        self.dir = session.new_test_dir()
        self.state_dir = self.dir / "hako"
        self.runc_state_dir = self.dir / "runc"
        self.xdg = self.dir / "xdg"
        for d in (self.state_dir, self.runc_state_dir, self.xdg):
            d.mkdir(mode=0o700)
        for d in (self.dir, self.state_dir, self.runc_state_dir, self.xdg):
            self._chown_one(d)
        self.env = {
            "PATH": CLEAN_PATH,
            "HOME": self.user.home,
            "USER": self.user.name,
            "LOGNAME": self.user.name,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            MARKER: str(session.base),
        }
        if self.rootless:
            self.env["XDG_RUNTIME_DIR"] = str(self.xdg)
        self.ids: list[str] = []
        self._used: dict[tuple[str, str], Path | None] = {}  # (runtime, id) -> root
        self._bundles = itertools.count(1)
        self._popens: list[subprocess.Popen] = []

    # -- identity / files ------------------------------------------------------

    @property
    def uid(self) -> int:
        return self.user.uid

    @property
    def gid(self) -> int:
        return self.user.gid

    def _chown_one(self, path: Path) -> None:
        if self.user.setpriv:
            os.chown(path, self.user.uid, self.user.gid, follow_symlinks=False)

    def chown(self, path: Path) -> Path:
        """chown -R *path* to the user the runtime runs as (no-op unless needed)."""
        if self.user.setpriv:
            busybox.chown_tree(Path(path), self.user.uid, self.user.gid)
        return Path(path)

    def new_id(self) -> str:
        cid = self.session.new_id()
        self.ids.append(cid)
        return cid

    # -- bundles -----------------------------------------------------------------

    def config(self, args: list[str] | None = None, *, terminal: bool = False,
               hostname: str | None = None, patch: Callable | dict | None = None,
               marker: bool = True) -> dict:
        """The config.json document rt.bundle() would write."""
        from runtime.default_spec import default_spec

        cfg = default_spec(rootless=self.rootless, args=args, uid=self.uid, gid=self.gid)
        cfg["process"]["terminal"] = terminal
        if hostname is not None:
            cfg["hostname"] = hostname
        if callable(patch):
            cfg = patch(cfg) or cfg
        elif patch:
            deep_merge(cfg, patch)
        env = cfg.get("process", {}).get("env")
        if marker and isinstance(env, list) and not any(e.startswith(MARKER + "=") for e in env):
            env.append(f"{MARKER}={self.session.base}")
        return cfg

    def bundle(self, args: list[str] | None = None, *, terminal: bool = False,
               hostname: str | None = None, patch: Callable | dict | None = None,
               marker: bool = True, hardlink: bool = False) -> Path:
        """A fresh busybox bundle (rootfs + config.json) owned by the runtime's user.

        The config is runtime.default_spec for this mode (rootless: mapping the
        test user) with process.args = *args*, terminal false, then *patch*: a
        callable (mutate and/or return the config) or a dict deep-merged into it
        (``support.DELETE`` removes a key). Unless *marker* is false,
        ``HAKO_TEST_SESSION=<base>`` is appended to process.env so a stray
        container process can be found at teardown.
        """
        cfg = self.config(args, terminal=terminal, hostname=hostname, patch=patch, marker=marker)
        path = self.dir / f"b{next(self._bundles)}"
        busybox.make_bundle(path, cfg, self.session.rootfs(), hardlink=hardlink)
        return self.chown(path)

    @staticmethod
    def write_config(bundle: Path, config: dict) -> None:
        busybox.write_config(Path(bundle), config)

    @staticmethod
    def read_config(bundle: Path) -> dict:
        return json.loads((Path(bundle) / "config.json").read_text())

    # -- running things ------------------------------------------------------------

    def _env(self, env: dict | None) -> dict:
        merged = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = str(v)
        return merged

    def run(self, argv: list, *, timeout: float = DEFAULT_TIMEOUT, input: str | bytes | None = None,
            env: dict | None = None, cwd: Path | None = None, stdin=None, stdout=None,
            stderr=None) -> subprocess.CompletedProcess:
        """Run *argv* as the mode's user with the clean environment (+ *env*;
        a None value unsets). Output is captured through files, not pipes, so a
        container that inherits stdout cannot keep the call from returning; pass a
        file object as *stdout*/*stderr* to send output there instead. Raises
        RuntimeTimeout (an AssertionError) after *timeout* seconds, having killed
        the call's process group."""
        argv = [str(a) for a in argv]
        full = self.user.prefix() + argv
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                tempfile.TemporaryFile() as inp:
            if stdin is None:
                if input is None:
                    stdin = subprocess.DEVNULL
                else:
                    inp.write(input.encode() if isinstance(input, str) else input)
                    inp.seek(0)
                    stdin = inp
            proc = subprocess.Popen(
                full, stdin=stdin, stdout=out if stdout is None else stdout,
                stderr=err if stderr is None else stderr, env=self._env(env),
                cwd=str(cwd or self.dir), process_group=0, close_fds=True,
            )
            try:
                rc = proc.wait(timeout=timeout)
            except BaseException as exc:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise RuntimeTimeout(
                        f"`{_fmt_cmd(argv)}` (as {self.user.name}) did not finish within "
                        f"{timeout}s\n--- stdout:\n{_read(out)}\n--- stderr:\n{_read(err)}"
                    ) from None
                raise
            return subprocess.CompletedProcess(
                argv, rc, _read(out) if stdout is None else "", _read(err) if stderr is None else ""
            )

    def _runtime_argv(self, name: str, exe: Path, args: tuple, root: Any) -> list:
        if root is _DEFAULT:
            root = self.state_dir if name == "hako" else self.runc_state_dir
        argv: list = [exe] + (["--root", root] if root is not None else []) + list(args)
        for a in args:
            if isinstance(a, str) and a in self.ids:
                self._used[(name, a)] = root
        return argv

    def hako(self, *args, root: Any = _DEFAULT, timeout: float = DEFAULT_TIMEOUT,
             input: str | bytes | None = None, env: dict | None = None,
             **kw) -> subprocess.CompletedProcess:
        """``hako --root <rt.state_dir> ARGS...`` (``root=None``: no --root;
        ``root=path``: that one). Returns the CompletedProcess (text)."""
        if not self.hako_path.exists():
            raise AssertionError(f"HAKO={self.hako_path} does not exist: run `make install` "
                                 f"or set HAKO to the hako executable")
        argv = self._runtime_argv("hako", self.hako_path, args, root)
        return self.run(argv, timeout=timeout, input=input, env=env, **kw)

    def runc(self, *args, root: Any = _DEFAULT, timeout: float = DEFAULT_TIMEOUT,
             input: str | bytes | None = None, env: dict | None = None,
             **kw) -> subprocess.CompletedProcess:
        """``runc --root <rt.runc_state_dir> ARGS...``, the reference runtime."""
        import pytest

        if not os.access(self.runc_path, os.X_OK):
            pytest.skip(f"reference runtime runc not found at {self.runc_path} (set RUNC)")
        argv = self._runtime_argv("runc", self.runc_path, args, root)
        return self.run(argv, timeout=timeout, input=input, env=env, **kw)

    def popen(self, argv: list, *, env: dict | None = None, cwd: Path | None = None,
              **kw) -> subprocess.Popen:
        """Start *argv* in the background as the mode's user (killed at teardown
        if still running). Use rt.hako_argv()/rt.runc_argv() to build runtime
        command lines. Always wait/communicate with a timeout."""
        argv = [str(a) for a in argv]
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.user.prefix() + argv, env=self._env(env),
                             cwd=str(cwd or self.dir), process_group=0, **kw)
        self._popens.append(p)
        return p

    def hako_argv(self, *args, root: Any = _DEFAULT) -> list:
        return [str(a) for a in self._runtime_argv("hako", self.hako_path, args, root)]

    def runc_argv(self, *args, root: Any = _DEFAULT) -> list:
        return [str(a) for a in self._runtime_argv("runc", self.runc_path, args, root)]

    # -- teardown ---------------------------------------------------------------------

    def teardown(self) -> list[Leftover]:
        """Force-delete every container id used, then return (and clean up) what
        is left: state entries, processes, mounts, cgroups."""
        for (name, cid), root in list(self._used.items()):
            exe = self.hako_path if name == "hako" else self.runc_path
            if not os.access(exe, os.X_OK):
                continue
            argv = [exe] + (["--root", root] if root is not None else []) + ["delete", "--force", cid]
            try:
                self.run(argv, timeout=TEARDOWN_TIMEOUT)
            except RuntimeTimeout:
                pass
        for p in self._popens:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    p.wait(timeout=TEARDOWN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()
        left = find_leftovers(self.session.base, [self.state_dir, self.runc_state_dir],
                              self.session.token)
        if left:
            clean_leftovers(left)
            # what survived the cleanup (e.g. a pid that was reused) does not matter
            # for the report, but must not leak into the next test
            for x in find_leftovers(self.session.base, [self.state_dir, self.runc_state_dir],
                                    self.session.token):
                if x.kind == "process":
                    try:
                        os.kill(int(x.what), signal.SIGKILL)
                    except OSError:
                        pass
        if not os.environ.get("HAKO_TEST_KEEP"):
            remove_tree(self.dir)
        return left


_IMPORTS_RUNNER = r"""
import sys
sys.path.insert(0, REPO)
before = set(sys.modules)
from runtime import cli
sys.argv = ["hako"] + ARGS
code = cli.main()
print("MODULES", " ".join(sorted(set(sys.modules) - before)))
sys.stdout.flush()
raise SystemExit(code)
"""


def imported_by(rt, *args) -> set[str]:
    """The modules one hako call (``args``, with the runtime's --root) imports,
    run as the mode's user by Debian's interpreter, the one both launchers
    run (the test user may not run ours)."""
    code = _IMPORTS_RUNNER.replace("REPO", repr(str(REPO))).replace(
        "ARGS", repr(["--root", str(rt.state_dir), *map(str, args)]))
    r = rt.run(["/usr/bin/python3", "-I", "-S", "-c", code], timeout=30)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    line = [x for x in r.stdout.splitlines() if x.startswith("MODULES")][-1]
    return set(line.split()[1:])
