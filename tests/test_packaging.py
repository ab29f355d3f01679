"""The frozen single-file hako (``make binary`` -> dist/hako, packaging/README.md).

Skipped unless dist/hako exists or HAKO_BINARY names such an executable. Most
tests give the launcher a private cache (HAKO_CACHE_DIR) so they neither see
nor disturb the real per-user caches; the default locations are checked too.
"""

from __future__ import annotations

import array
import fcntl
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import support

BINARY = Path(os.environ.get("HAKO_BINARY") or support.REPO / "dist" / "hako")
NAME_LEN = 32  # cache directory name: hex digits of the payload hash

pytestmark = pytest.mark.skipif(
    not (BINARY.is_file() and os.access(BINARY, os.X_OK)),
    reason=f"no frozen hako at {BINARY} (run `make binary`, or set HAKO_BINARY)")

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x10


def run(*args: str, cache: Path | None = None, env: dict | None = None,
        user: support.Identity | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = {"PATH": support.CLEAN_PATH, "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    if user is not None:
        e.update(HOME=user.home, USER=user.name)
    if cache is not None:
        e["HAKO_CACHE_DIR"] = str(cache)
    e.update(env or {})
    prefix = user.prefix() if user is not None else []
    return subprocess.run(prefix + [str(BINARY), *args], env=e, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def build_dir(cache: Path) -> Path:
    dirs = [p for p in cache.iterdir() if len(p.name) == NAME_LEN and p.is_dir()]
    assert len(dirs) == 1, f"expected one unpacked build in {cache}: {sorted(os.listdir(cache))}"
    return dirs[0]


def immutable(path: Path) -> bool | None:
    """The immutable attribute of *path*, None if the filesystem has no such flag."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return bool(buf[0] & FS_IMMUTABLE_FL)
    except OSError:
        return None
    finally:
        os.close(fd)


def make_mutable(tree: Path) -> None:
    """Clear the immutable attribute (root's caches) so a test can tamper or clean up."""
    for p in [tree, *tree.rglob("*")]:
        if p.is_symlink():
            continue
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            buf = array.array("i", [0])
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
            if buf[0] & FS_IMMUTABLE_FL:
                buf[0] &= ~FS_IMMUTABLE_FL
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf, True)
        except OSError:
            pass
        finally:
            os.close(fd)


@pytest.fixture
def cache(tmp_path):
    c = tmp_path / "cache"
    yield c
    if c.exists():
        make_mutable(c)


def snapshot(tree: Path) -> dict[str, tuple]:
    return {str(p.relative_to(tree)): (p.lstat().st_ino, p.lstat().st_mtime_ns, p.lstat().st_ctime_ns)
            for p in [tree, *tree.rglob("*")]}


def test_version(cache):
    r = run("--version", cache=cache)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hako version "), r.stdout
    assert r.stderr == ""


def test_missing_container_fails_cleanly(cache, tmp_path):
    r = run("--root", str(tmp_path / "state"), "state", "nope", cache=cache)
    assert r.returncode == 1
    assert "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_spec_writes_a_config(cache, tmp_path):
    r = subprocess.run([str(BINARY), "spec"], cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": support.CLEAN_PATH, "HAKO_CACHE_DIR": str(cache)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"ociVersion"' in (tmp_path / "config.json").read_text()


def test_interpreter_ignores_python_environment_and_cwd(cache, tmp_path):
    """The bundled interpreter is isolated whatever the caller's environment
    (hako._pth: no PYTHON* variables, no user site, nothing from the cwd)."""
    planted = tmp_path / "planted"
    (planted / "runtime").mkdir(parents=True)
    for f in (planted / "runtime" / "__init__.py", planted / "runtime" / "cli.py",
              planted / "sitecustomize.py", planted / "usercustomize.py", planted / "startup.py",
              planted / "encodings.py"):
        f.write_text("raise SystemExit('pwned')\n")
    env = {"PYTHONPATH": str(planted), "PYTHONSTARTUP": str(planted / "startup.py"),
           "PYTHONINSPECT": "1", "PYTHONHOME": str(planted), "PYTHONUSERBASE": str(planted),
           "PYTHONWARNINGS": "error", "PYTHONVERBOSE": "1"}
    r = subprocess.run([str(BINARY), "--version"], env={"PATH": support.CLEAN_PATH,
                       "HAKO_CACHE_DIR": str(cache), **env}, cwd=planted, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.startswith("hako version ") and "pwned" not in r.stdout


@pytest.mark.parametrize("lang", ["C", "POSIX", "C.UTF-8", "en_US.ISO-8859-1", "de_DE@euro", ""])
def test_any_locale(cache, lang):
    """The interpreter starts in UTF-8 mode whatever the locale (only utf_8 is
    loaded at start; every other codec is frozen too, lib/libhakofrozen.so)."""
    r = subprocess.run([str(BINARY), "--root", "/nonexistent/\u00e9", "state", "caf\u00e9"],
                       env={"PATH": support.CLEAN_PATH, "HAKO_CACHE_DIR": str(cache),
                            "LANG": lang, "LC_ALL": lang}, capture_output=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.decode("utf-8").startswith("hako: ") and "Fatal" not in r.stderr.decode()


@pytest.mark.parametrize("launcher", ["frozen", "venv"])
def test_exit_codes_and_output_survive_the_fast_exit(cache, tmp_path, launcher):
    """runtime.cli.run skips the interpreter's teardown (os._exit): stdout is
    flushed whole and the exit code kept, through a pipe as from a terminal."""
    exe = str(BINARY) if launcher == "frozen" else str(support.REPO / ".venv" / "bin" / "hako")
    env = {"PATH": support.CLEAN_PATH, "HAKO_CACHE_DIR": str(cache)}
    cases = [(["--version"], 0), (["features"], 0), (["no-such-verb"], 2),
             (["--root", str(tmp_path / "state"), "state", "nope"], 1), (["state"], 2)]
    for args, code in cases:
        r = subprocess.run([exe, *args], env=env, capture_output=True, timeout=60, cwd="/")
        assert r.returncode == code, (args, r.stderr)
        if args == ["features"]:
            import json
            assert json.loads(r.stdout)["ociVersionMax"]  # complete JSON, ~2 KB
        if code:
            assert r.stderr.startswith(b"hako: ") and r.stderr.endswith(b"\n"), r.stderr


@pytest.mark.parametrize("pending", ["atexit", "thread", "nothing"])
def test_fast_exit_runs_the_teardown_when_something_needs_it(pending):
    """runtime.cli.run skips the teardown only when nothing is pending: an atexit
    callback or a non-daemon thread still gets it (sys.exit path)."""
    setup = {
        "atexit": "import atexit; atexit.register(lambda: print('teardown ran'))",
        "thread": ("import threading, time\n"
                   "threading.Thread(target=lambda: (time.sleep(0.2), print('teardown ran'))).start()"),
        "nothing": "import weakref  # a module, no callback",
    }[pending]
    code = (f"import sys\nsys.path.insert(0, {str(support.REPO)!r})\n{setup}\n"
            "from runtime.cli import run\nrun(['--version'])\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hako version ")
    assert ("teardown ran" in r.stdout) == (pending != "nothing"), r.stdout


def test_second_call_does_not_unpack_again(cache):
    assert run("--version", cache=cache).returncode == 0
    before = snapshot(cache)
    r = run("--version", cache=cache, env={"HAKO_LAUNCHER_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert "unpacking" not in r.stderr and "running " in r.stderr, r.stderr
    assert snapshot(cache) == before


def test_cache_is_private(cache):
    """Users: 0700, files 0500/0400. Root: root-owned, writable by no one else, but
    readable (0755, 0555/0444): a container init in a user namespace mapped to other
    host uids imports from the build it was forked from."""
    assert run("--version", cache=cache).returncode == 0
    uid = os.geteuid()
    dir_mode, forbidden = (0o755, 0o022) if uid == 0 else (0o700, 0o077)
    for d in (cache, build_dir(cache)):
        st = d.lstat()
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == uid
        assert stat.S_IMODE(st.st_mode) == dir_mode, f"{d}: {oct(st.st_mode)}"
    for p in build_dir(cache).rglob("*"):
        st = p.lstat()
        assert not stat.S_ISLNK(st.st_mode), p
        assert st.st_uid == uid, p
        assert stat.S_IMODE(st.st_mode) & forbidden == 0, f"{p}: {oct(st.st_mode)}"
        if stat.S_ISREG(st.st_mode):
            assert stat.S_IMODE(st.st_mode) & 0o222 == 0, f"{p} is writable: {oct(st.st_mode)}"


@pytest.mark.skipif(os.geteuid() != 0, reason="root's cache only")
def test_root_cache_is_readable_by_other_uids():
    """What `run` of a user-namespaced container (uid 0 -> host 300000) needs: its
    init is forked from hako and imports from the cached build as that uid."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="hako-pkg-"))  # /tmp: searchable by others
    try:
        base.chmod(0o755)
        cache = base / "cache"
        assert run("--version", cache=cache).returncode == 0
        exe = build_dir(cache) / "hako"
        r = subprocess.run(["setpriv", "--reuid=300000", "--regid=300000", "--clear-groups",
                            "--", "head", "-c", "4", str(exe)], capture_output=True, timeout=30)
        assert r.returncode == 0 and r.stdout == b"\x7fELF", r.stderr
    finally:
        make_mutable(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the binary as the unprivileged test user")
def test_roots_cache_is_used_read_only_by_others():
    """A hook run by the frozen hako in a container's user namespace (or any uid
    pointed at it) runs root's verified build without writing to it."""
    import tempfile
    try:
        user = support.Identity.test_user()
    except KeyError:
        pytest.skip(f"no user {support.TEST_USER}")
    base = Path(tempfile.mkdtemp(prefix="hako-pkg-"))
    try:
        base.chmod(0o755)
        cache = base / "cache"
        r = run("--version", user=user, cache=cache)  # root has not unpacked it yet
        assert r.returncode == 1, r.stderr
        assert r.stderr.count("\n") < 10
        os.rmdir(cache) if cache.exists() and not os.listdir(cache) else None
        assert run("--version", cache=cache).returncode == 0  # root unpacks
        before = snapshot(cache)
        r = run("--version", user=user, cache=cache, env={"HAKO_LAUNCHER_DEBUG": "1"})
        assert r.returncode == 0, r.stderr
        assert "running " in r.stderr and "unpacking" not in r.stderr, r.stderr
        assert snapshot(cache) == before
        d = build_dir(cache)
        make_mutable(d)
        (d / "lib" / "python3.11" / "spec" / "planted").write_text("x")
        r = run("--version", user=user, cache=cache)
        assert r.returncode == 1 and "used read-only" in r.stderr, r.stderr
    finally:
        make_mutable(base)
        shutil.rmtree(base, ignore_errors=True)


def test_cache_of_an_older_launcher_is_replaced_quietly(cache):
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    make_mutable(d)
    stamp = d / ".stamp"
    text = stamp.read_text()
    stamp.chmod(0o600)
    magic, version, rest = text.split(" ", 2)
    stamp.write_text(f"{magic} {int(version) - 1} {rest}")
    r = run("--version", cache=cache)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (build_dir(cache) / ".stamp").read_text().startswith(f"{magic} {version} ")


@pytest.mark.skipif(os.geteuid() != 0, reason="the immutable attribute is set for root only")
def test_root_cache_is_immutable(cache):
    assert run("--version", cache=cache).returncode == 0
    exe = build_dir(cache) / "hako"
    flag = immutable(exe)
    if flag is None:
        pytest.skip(f"{cache} is on a filesystem without the immutable attribute")
    assert flag, f"{exe} is not immutable"
    with pytest.raises(PermissionError):
        open(exe, "r+b").close()


@pytest.mark.parametrize("victim", ["hako", "hako._pth", "lib/libz.so.1", "lib/python3.11/spec",
                                    "lib/libhakofrozen.so", "lib/python3.11/os.pyc",
                                    "lib/python3.11/_json.cpython-311-x86_64-linux-gnu.so"])
def test_tampered_cache_is_detected_and_replaced(cache, victim):
    assert run("--version", cache=cache).returncode == 0
    old = build_dir(cache)
    make_mutable(old)
    target = old / victim
    if target.is_dir():
        (target / "planted.py").write_text("raise SystemExit('pwned')\n")
    elif victim == "hako":
        original = target.read_bytes()
        target.chmod(0o700)
        target.write_text("#!/bin/sh\necho pwned\n")
    else:
        target.chmod(0o600)
        with open(target, "r+b") as f:  # same size, same mtime: only the ctime tells
            st = os.fstat(f.fileno())
            # the frozen modules' code is the library's bulk: patch one of them
            f.seek(st.st_size // 2 if victim.endswith("frozen.so") else min(100, st.st_size - 1))
            f.write(b"\xcc")
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        target.chmod(0o500)
    r = run("--version", cache=cache)
    assert r.returncode == 0, r.stderr
    assert "pwned" not in r.stdout + r.stderr
    assert r.stdout.startswith("hako version ")
    assert "failed verification" in r.stderr, r.stderr
    if os.geteuid() != 0:  # root's make_mutable changed every ctime: the first entry is named
        assert victim.split("/")[-1] in r.stderr, r.stderr
    new = build_dir(cache)
    assert new.name == old.name
    if victim == "hako":
        assert (new / "hako").read_bytes() == original
    # quiet again afterwards
    r = run("--version", cache=cache)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("damage", ["no stamp", "half the frozen modules", "no frozen modules"])
def test_half_written_cache_is_rebuilt(cache, damage):
    """A build directory cut short (a crash, a full disk, a hand-made copy) is
    never run: the next call moves it aside and unpacks again."""
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    make_mutable(d)
    modules = d / "lib" / "libhakofrozen.so"
    if damage == "no stamp":
        (d / ".stamp").unlink()
    elif damage == "half the frozen modules":
        modules.chmod(0o600)
        os.truncate(modules, modules.stat().st_size // 2)
    else:
        modules.unlink()
    r = run("--root", "/nonexistent", "state", "nope", cache=cache)
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    assert "failed verification" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert modules.is_file() and (build_dir(cache) / ".stamp").is_file()
    r = run("--version", cache=cache)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_stamp_of_another_build_is_not_trusted(cache):
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    make_mutable(d)
    stamp = d / ".stamp"
    text = stamp.read_text()
    stamp.chmod(0o600)
    stamp.write_text(text.replace(text.split()[2], "0" * 64, 1))
    r = run("--version", cache=cache)
    assert r.returncode == 0 and "failed verification" in r.stderr, r.stderr


def test_unsafe_cache_roots_are_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by everyone, not sticky: anyone could swap our cache
    r = run("--version", cache=shared / "cache")
    assert r.returncode == 1
    assert "writable by group or others" in r.stderr, r.stderr
    assert not (shared / "cache").exists()
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: fine
    r = run("--version", cache=sticky / "cache")
    assert r.returncode == 0, r.stderr
    make_mutable(sticky / "cache")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another owner")
def test_cache_root_owned_by_someone_else_is_refused(tmp_path):
    c = tmp_path / "theirs"
    c.mkdir(mode=0o700)
    os.chown(c, 65534, 65534)
    r = run("--version", cache=c)
    assert r.returncode == 1
    assert "owned by uid 65534" in r.stderr, r.stderr


def test_symlinked_cache_dir_is_refused(cache, tmp_path):
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    elsewhere = tmp_path / "elsewhere"
    make_mutable(d)
    d.rename(elsewhere)
    d.symlink_to(elsewhere)
    r = run("--version", cache=cache)
    assert r.returncode == 0, r.stderr       # unpacked again, next to the symlink
    assert not build_dir(cache).is_symlink()
    make_mutable(elsewhere)


def test_concurrent_first_calls(cache):
    env = {"PATH": support.CLEAN_PATH, "HAKO_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([str(BINARY), "--version"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.startswith("hako version ")
    build_dir(cache)
    assert not [n for n in os.listdir(cache) if n.startswith(".tmp-")]


def test_payload_has_no_pydantic(cache):
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    names = [str(p.relative_to(d)) for p in d.rglob("*")]
    assert not [n for n in names if "pydantic" in n.lower()]
    std = d / "lib" / "python3.11"
    assert (std / "spec" / "config.schema.json").is_file()
    # every module frozen: no source or bytecode file for the path finder
    assert not [n for n in names if n.endswith((".py", ".pyc")) and not n.endswith("/os.pyc")]
    modules = frozen_modules(d)
    assert {"runtime.cli", "spec.validate", "encodings", "encodings.utf_8", "jeepney",
            "_hako_entry"} <= set(modules), sorted(modules)
    assert modules["runtime"] == (True, "own") and modules["runtime.cli"] == (False, "own")
    # the interpreter's own (deep-)frozen stdlib stays its own, listed first
    assert modules["os"] == (False, "interpreter") and modules["codecs"][1] == "interpreter"
    assert list(modules.values()).index((False, "own")) > list(modules).index("os")
    assert not [m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")
                or m in ("spec.models", "spec.gen_schema")]


def cached_python(d: Path, code: str, **kw) -> subprocess.CompletedProcess:
    """*code* run by the cached interpreter as the launcher runs it (flags, cwd)."""
    return subprocess.run([str(d / "hako"), "-I", "-S", "-X", "utf8", "-c", code],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={"PATH": support.CLEAN_PATH}, **kw)


def frozen_modules(d: Path) -> dict[str, tuple[bool, str]]:
    """name -> (is package, "own" or "interpreter"), of the table the cached
    interpreter runs with, in its order."""
    sys.path.insert(0, str(support.REPO / "packaging"))
    try:
        from frozen import LIST_CODE
    finally:
        sys.path.pop(0)
    r = cached_python(d, LIST_CODE)
    assert r.returncode == 0, r.stderr
    return {n: (p == "1", w) for n, p, w in (line.split() for line in r.stdout.splitlines())}


def test_frozen_modules_keep_the_semantics_the_runtime_needs(cache):
    """FrozenImporter's __file__/__path__ are where the files were (spec/validate.py
    reads its schemas beside __file__), tracebacks name the module's file."""
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    code = (
        "import sys, os.path, traceback\n"
        "import spec.validate as v, runtime, runtime.fastjson as fj\n"
        "std = sys._stdlib_dir\n"
        f"assert std == {str(d / 'lib' / 'python3.11')!r}, std\n"
        "assert v.__spec__.origin == 'frozen' and v.__file__ == std + '/spec/validate.py'\n"
        "assert v.SCHEMA_DIR == std + '/spec' and os.path.isfile(v.SCHEMA_DIR + '/config.schema.json')\n"
        "assert runtime.__file__ == std + '/runtime/__init__.py', runtime.__file__\n"
        "assert runtime.__path__ == [std + '/runtime'], runtime.__path__\n"
        "try:\n"
        "    fj.loads('{')\n"
        "except Exception:\n"
        "    tb = traceback.format_exc()\n"
        "assert 'runtime/fastjson.py' in tb, tb\n"
        "print('ok')\n")
    r = cached_python(d, code)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged uid")
def test_imports_need_no_file_access(cache):
    """The forked container init imports lazily after closing every fd and after
    switching to the container's uid (which may not read the user's 0700 cache):
    frozen modules are in the interpreter's memory, so that still works.
    (Extension modules are files: hako loads those it needs before forking.)"""
    assert run("--version", cache=cache).returncode == 0
    d = build_dir(cache)
    code = ("import os, _ctypes, termios, resource, _json\n"
            "os.closerange(3, 1 << 16)\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            f"assert not os.access({str(d / 'lib')!r}, os.R_OK)\n"
            "import runtime.init, runtime.terminal, runtime.hooks, hooks.network.hook\n"
            "import encodings.latin_1\n"
            "print('ok')\n")
    os.chmod(cache, 0o700)  # root's caches are 0755: private here, like a user's
    try:
        r = cached_python(d, code)
    finally:
        os.chmod(cache, 0o755)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the binary as the unprivileged test user")
def test_unprivileged_user_gets_its_own_cache():
    try:
        user = support.Identity.test_user()
    except KeyError:
        pytest.skip(f"no user {support.TEST_USER}")
    r = subprocess.run(user.prefix() + ["test", "-x", str(BINARY)], capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"user {user.name} cannot execute {BINARY}: make the repo searchable by others")
    r = run("--version", user=user)
    assert r.returncode == 0, r.stderr
    cache = Path(user.home) / ".cache" / "hako"
    st = cache.stat()
    assert st.st_uid == user.uid and stat.S_IMODE(st.st_mode) == 0o700
    d = build_dir_of(cache, BINARY)
    assert d.stat().st_uid == user.uid and stat.S_IMODE(d.stat().st_mode) == 0o700
    assert (d / ".stamp").stat().st_uid == user.uid


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the binary as the unprivileged test user")
def test_root_of_a_user_namespace_shares_the_users_cache():
    """Rootless Podman runs the runtime as uid 0 of a user namespace: same cache as
    the user's own calls, no unpacking back and forth, modes stay private."""
    try:
        user = support.Identity.test_user()
    except KeyError:
        pytest.skip(f"no user {support.TEST_USER}")
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    env = {"PATH": support.CLEAN_PATH, "HOME": user.home, "HAKO_LAUNCHER_DEBUG": "1"}
    plain = user.prefix() + [str(BINARY), "--version"]
    in_ns = user.prefix() + ["unshare", "--user", "--map-root-user", str(BINARY), "--version"]
    for argv in (plain, in_ns, plain, in_ns):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0, r.stderr
    for argv in (in_ns, plain):  # warm now: both just run
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0 and "unpacking" not in r.stderr, r.stderr
        assert "running /home" in r.stderr or f"running {user.home}" in r.stderr, r.stderr
    cache = Path(user.home) / ".cache" / "hako"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(build_dir_of(cache, BINARY).stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the binary as the unprivileged test user")
def test_without_home_the_cache_is_found_through_passwd():
    """Hooks run the frozen hako with the hook's environment (no HOME): the
    launcher (static, musl: no NSS) reads the user's home from /etc/passwd."""
    try:
        user = support.Identity.test_user()
    except KeyError:
        pytest.skip(f"no user {support.TEST_USER}")
    r = subprocess.run(user.prefix() + [str(BINARY), "--version"], cwd="/", timeout=60,
                       env={"PATH": support.CLEAN_PATH, "HAKO_LAUNCHER_DEBUG": "1"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"running {user.home}/.cache/hako/" in r.stderr, r.stderr


def build_dir_of(cache: Path, binary: Path) -> Path:
    """The cache directory of *binary*'s own build (the trailer holds its hash)."""
    with open(binary, "rb") as f:
        f.seek(-32, os.SEEK_END)
        return cache / f.read(32).hex()[:NAME_LEN]


@pytest.mark.skipif(os.geteuid() != 0, reason="root's default cache is /var/cache/hako")
def test_root_default_cache_location():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    root = Path("/var/cache/hako")
    st = root.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755
    assert build_dir_of(root, BINARY).is_dir()


def test_no_pyinstaller_environment_reaches_the_container(rt):
    """A container made by the frozen hako sees its config's environment only."""
    rt.hako_path = BINARY
    r = rt.hako("run", "--bundle", rt.bundle(["env"]), rt.new_id())
    assert r.returncode == 0, r.stderr
    leaked = [l for l in r.stdout.splitlines()
              if l.startswith(("LD_LIBRARY_PATH", "_PYI_", "HAKO_CACHE_DIR", "HAKO_LAUNCHER"))]
    assert not leaked


def test_frozen_lifecycle(rt):
    """create/start/state/kill/delete with the frozen binary: the forked init must
    find everything it imports before pivot_root in the frozen build too."""
    rt.hako_path = BINARY
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"])
    r = rt.hako("create", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert '"created"' in rt.hako("state", cid).stdout
    assert rt.hako("start", cid).returncode == 0
    support.wait_until(lambda: '"running"' in rt.hako("state", cid).stdout, what="running")
    assert rt.hako("kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: '"stopped"' in rt.hako("state", cid).stdout, what="stopped")
    assert rt.hako("delete", cid).returncode == 0
    r = rt.hako("run", "--bundle", rt.bundle(["sh", "-c", "echo frozen; exit 7"]), rt.new_id())
    assert (r.returncode, r.stdout) == (7, "frozen\n"), r.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
