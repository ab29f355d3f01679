#!/usr/bin/env python3
"""Build the single-file hako: ``dist/hako``.

1. PyInstaller analyses hako (packaging/hako.spec) and packaging/layout.py
   lays the result out as a Python prefix run by the build's own interpreter:
   ``hako`` (the interpreter), ``hako._pth``, ``lib/libhakofrozen.so`` (every
   pure-Python module, frozen into the interpreter: packaging/frozen.py),
   ``lib/python3.11/`` (extension modules, schemas), ``lib/*.so.*`` (libz,
   libexpat, libffi).
2. That directory is packed into a small archive, compressed with zlib and
   appended to the launcher (packaging/launcher.c, compiled here), followed by
   a trailer holding the payload's SHA-256.
3. On first use the launcher unpacks the payload into a private per-user
   cache and from then on execs the cached build after checking it against
   the stamp written at unpack time (see launcher.c and README.md).

Usage: build.py [--dist DIR] [--work DIR] [--variant NAME] [--keep-onedir]
Run it with the project venv's interpreter (the one PyInstaller is installed
in): ``make binary`` does.

Variants (for packaging/measure.py): ``sfx`` (default, the launcher),
``prefix`` (the unpacked prefix alone), ``onedir`` (PyInstaller's bootloader), ``onefile``, ``onefile-tmpdir`` (onefile, --runtime-tmpdir
/dev/shm), ``onefile-o2-strip``, ``onefile-plain`` and ``onedir-plain`` (no
module exclusions).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # layout.py
SPEC = HERE / "hako.spec"
LAUNCHER_C = HERE / "launcher.c"

TRAILER_MAGIC = b"HAKOSFX1"
ARCHIVE_MAGIC = b"HAKOARC1"
EXE_NAME = "hako"

#: variant -> environment for hako.spec (``HAKO_PKG_*``); "flat": base_library.zip unpacked
VARIANTS: dict[str, dict[str, str]] = {
    "sfx": {"HAKO_PKG_MODE": "python"},
    "prefix": {"HAKO_PKG_MODE": "python"},
    "onedir": {"HAKO_PKG_MODE": "onedir", "flat": "1"},
    "onedir-lean-only": {"HAKO_PKG_MODE": "onedir", "HAKO_PKG_CTYPES_HOOK": "1"},
    "onedir-plain": {"HAKO_PKG_MODE": "onedir", "HAKO_PKG_LEAN": "0"},
    "onefile": {"HAKO_PKG_MODE": "onefile"},
    "onefile-plain": {"HAKO_PKG_MODE": "onefile", "HAKO_PKG_LEAN": "0"},
    "onefile-tmpdir": {"HAKO_PKG_MODE": "onefile", "HAKO_PKG_TMPDIR": "/dev/shm"},
    "onefile-o2-strip": {"HAKO_PKG_MODE": "onefile", "HAKO_PKG_OPTIMIZE": "2",
                         "HAKO_PKG_STRIP": "1"},
}

#: never in the payload (build/test-time only)
FORBIDDEN = ("pydantic", "pydantic_core", "annotated_types", "typing_extensions",
             "spec.models", "spec.gen_schema")


def log(text: str) -> None:
    print(f"build: {text}", flush=True)


def pyinstaller(variant: str, work: Path, extra_env: dict[str, str] | None = None) -> Path:
    """Run PyInstaller; return the onedir directory or the onefile executable."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Reproducible output: the same sources give the same payload hash, hence
    # the same cache directory (set iteration order shows in marshalled code).
    env["PYTHONHASHSEED"] = "0"
    env.update({k: v for k, v in VARIANTS[variant].items() if k.startswith("HAKO_PKG_")})
    env.update(extra_env or {})
    distpath = work / "pyinstaller" / variant / "dist"
    workpath = work / "pyinstaller" / variant / "work"
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
           "--distpath", str(distpath), "--workpath", str(workpath), str(SPEC)]
    log(f"PyInstaller ({variant}): {' '.join(cmd[1:])}")
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return distpath / EXE_NAME


def modules_in(executable: Path) -> list[str]:
    """Python modules frozen into a PyInstaller executable (CArchive + PYZ)."""
    from PyInstaller.archive.readers import CArchiveReader

    arch = CArchiveReader(str(executable))
    names = list(arch.toc)
    for name in list(arch.toc):
        if name.endswith(".pyz"):
            names.extend(arch.open_embedded_archive(name).toc)
    return sorted(names)


def flatten_base_library(onedir: Path) -> None:
    """Unpack _internal/base_library.zip next to it and drop the zip.

    PyInstaller keeps the stdlib modules Python needs while starting (os, re,
    enum, collections, functools, encodings ...) in base_library.zip, read by
    the pure-Python zipimport: as plain .pyc files the ordinary path finder
    loads them (about 1 ms per call for --version, 3 ms for state). The zip is
    the first entry of sys.path, which simply stays empty.
    """
    import zipfile

    internal = onedir / "_internal"
    zpath = internal / "base_library.zip"
    if not zpath.exists():
        return
    with zipfile.ZipFile(zpath) as z:
        for info in z.infolist():
            target = (internal / info.filename).resolve()
            if internal.resolve() not in target.parents:
                raise SystemExit(f"build: unsafe name in base_library.zip: {info.filename}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if target.exists():
                raise SystemExit(f"build: base_library.zip: {info.filename} exists in _internal")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
    zpath.unlink()


def modules_of_prefix(top: Path) -> list[str]:
    """Python modules of a prefix build (packaging/layout.py): the frozen table of
    its lib/libhakofrozen.so, as the laid-out interpreter itself reports it."""
    from frozen import LIST_CODE
    r = subprocess.run([str(top / EXE_NAME), "-I", "-S", "-c", LIST_CODE], capture_output=True,
                       text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    if r.returncode != 0 or not r.stdout:
        raise SystemExit(f"build: cannot list the frozen modules of {top}:\n{r.stderr}")
    return sorted(line.split()[0] for line in r.stdout.splitlines() if line.endswith(" own"))


def check_contents(onedir: Path) -> None:
    """No build-time-only module may be frozen; the schemas must be."""
    prefix = not (onedir / "_internal").is_dir()
    if prefix:
        left = [str(p.relative_to(onedir)) for p in onedir.rglob("*") if p.suffix in (".py", ".pyc")
                and p.name != "os.pyc"]
        if left:  # the frozen table holds every module: no file for the path finder
            raise SystemExit(f"build: modules as files beside the frozen table: {', '.join(left)}")
    data = onedir / (__import__("layout").stdlib_dir() if prefix else "_internal")
    bad = [m for m in (modules_of_prefix(onedir) if prefix else modules_in(onedir / EXE_NAME))
           if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    bad += [str(p.relative_to(onedir)) for p in onedir.rglob("*")
            if any(part.split(".")[0] in FORBIDDEN for part in p.relative_to(onedir).parts)]
    if bad:
        raise SystemExit(f"build: build-time-only modules were frozen: {', '.join(bad)}")
    for schema in ("config.schema.json", "state.schema.json"):
        if not (data / "spec" / schema).is_file():
            raise SystemExit(f"build: spec/{schema} is missing from the build")


def smoke_test(top: Path) -> None:
    """The laid-out interpreter starts isolated and imports every module of hako."""
    names = [m for m in modules_of_prefix(top) if m.split(".")[0] in ("runtime", "hooks", "spec")]
    code = ("import sys\n"
            "assert sys.flags.isolated and sys.flags.no_site and sys.flags.safe_path, sys.flags\n"
            f"for n in {names!r}:\n"
            "    __import__(n)\n"
            # every module of hako frozen: no file read for an import
            "for n in ('runtime.state', 'spec.validate', 'encodings', 'encodings.utf_8', '_hako_entry'):\n"
            "    assert sys.modules[n].__spec__.origin == 'frozen', n\n"
            # __file__ where the files were: spec/validate.py reads the schemas beside it
            "import os.path\n"
            "v = sys.modules['spec.validate']\n"
            "assert v.__file__ == sys._stdlib_dir + '/spec/validate.py', v.__file__\n"
            "assert os.path.isfile(os.path.join(os.path.dirname(v.__file__), 'config.schema.json'))\n"
            "assert sys.modules['runtime'].__path__ == [sys._stdlib_dir + '/runtime']\n"
            "assert sys.frozen is True and sys.argv[0] == 'hako'\n"
            # codecs frozen too, through the lazy alias table (layout.lazy_aliases)
            "import codecs\n"
            "for n, m in (('utf8', 'utf-8'), ('latin1', 'iso8859-1'), ('ascii', 'ascii'),\n"
            "             ('iso-8859-15', 'iso8859-15'), ('cp1252', 'cp1252'), ('u8', 'utf-8')):\n"
            "    assert codecs.lookup(n).name == m, (n, codecs.lookup(n).name)\n"
            "assert 'é'.encode('latin_1') == b'\\xe9' and 'bücher.de'.encode('idna')\n"
            "assert sys.modules['encodings.latin_1'].__spec__.origin == 'frozen'\n"
            "import _json\n"  # extension modules: files beside the stdlib's place
            "assert _json.__file__.startswith(sys._stdlib_dir + '/'), _json.__file__\n"
            "print(len(sys.path))\n")
    # the entry, without running the CLI
    code = ("import sys\ncli = type(sys)('runtime.cli')\ncli.run = lambda: None\n"
            "sys.modules['runtime.cli'] = cli\nimport _hako_entry\ndel sys.modules['runtime.cli']\n"
            "assert 'encodings.aliases' not in sys.modules, 'aliases read at start'\n"
            + code)
    r = subprocess.run([str(top / EXE_NAME), "-I", "-S", "-X", "utf8", "-c", code],  # as launcher.c
                       capture_output=True, text=True,
                       cwd="/", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/nonexistent"})
    if r.returncode != 0 or r.stdout.strip() != "1":
        raise SystemExit(f"build: the laid-out interpreter fails to import hako:\n{r.stdout}{r.stderr}")
    log(f"smoke test: {len(names)} modules of hako import in the isolated interpreter")


def archive(onedir: Path) -> bytes:
    """The onedir tree as the launcher's archive: parents before children."""
    out = [ARCHIVE_MAGIC]
    entries = sorted(onedir.rglob("*"), key=lambda p: p.relative_to(onedir).parts)
    for p in entries:
        rel = p.relative_to(onedir).as_posix()
        if p.is_symlink():
            raise SystemExit(f"build: {rel} is a symlink: the launcher archive holds none")
        if any(c <= " " or c == "\x7f" for c in rel) or rel == ".stamp":
            raise SystemExit(f"build: unsupported file name {rel!r}")
        raw = rel.encode()
        st = p.stat()
        if p.is_dir():
            out.append(struct.pack("<BBHIQ", ord("d"), 0, st.st_mode & 0o7777, len(raw), 0) + raw)
        elif p.is_file():
            data = p.read_bytes()
            out.append(struct.pack("<BBHIQ", ord("f"), 0, st.st_mode & 0o7777, len(raw), len(data))
                       + raw + data)
        else:
            raise SystemExit(f"build: {rel}: not a file or directory")
    out.append(struct.pack("<BBHIQ", ord("e"), 0, 0, 0, 0))
    return b"".join(out)


def _libz_a() -> str | None:
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if os.path.exists(f"{d}/libz.a"):
            return f"{d}/libz.a"
    return None


def compile_launcher(work: Path) -> Path:
    """The launcher, static against musl when musl-gcc is there (musl-tools).

    Every call runs it, so what it costs before its own first line counts: a
    dynamic glibc executable pays ld.so (mapping and relocating libc) on every
    call; the static musl one (~130 KiB) starts ~0.25 ms sooner here. Static
    glibc would too, but is ~1 MiB and its getpwuid needs glibc's NSS modules
    of the same version at run time; musl reads /etc/passwd itself (used only
    when HOME is unset). Otherwise: dynamic against glibc, zlib static."""
    out = work / "launcher"
    musl, libz = shutil.which("musl-gcc"), _libz_a()
    if musl and libz and not os.environ.get("CC"):
        # kernel (linux/fs.h) and zlib headers after musl's own
        cmd = [musl, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-static", "-s",
               "-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu",
               "-o", str(out), str(LAUNCHER_C), libz]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            if r.stderr.strip():
                print(r.stderr, file=sys.stderr)
            log("launcher: static (musl)")
            return out
        log(f"launcher: musl-gcc failed, falling back to the C compiler:\n{r.stderr}")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("build: no C compiler (cc/gcc) for packaging/launcher.c: "
                         "apt-get install gcc libc6-dev zlib1g-dev")
    base = [cc, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-s", "-o", str(out), str(LAUNCHER_C)]
    # zlib linked in statically where possible: the launcher then needs only libc
    for libs in (["-Wl,-Bstatic", "-lz", "-Wl,-Bdynamic"], ["-lz"]):
        r = subprocess.run(base + libs, capture_output=True, text=True)
        if r.returncode == 0:
            if r.stderr.strip():
                print(r.stderr, file=sys.stderr)
            log("launcher: dynamic (glibc; no musl-gcc)")
            return out
    raise SystemExit(f"build: compiling the launcher failed (needs zlib1g-dev):\n{r.stderr}")


def write_sfx(launcher: Path, payload_raw: bytes, dest: Path) -> str:
    payload = zlib.compress(payload_raw, 9)
    digest = hashlib.sha256(payload).digest()
    stub = launcher.read_bytes()
    trailer = TRAILER_MAGIC + struct.pack("<QQQ", len(stub), len(payload), len(payload_raw)) + digest
    assert len(trailer) == 64
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(stub + payload + trailer)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)  # atomic: running copies keep their inode
    return digest.hex()


def human(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", type=Path, default=REPO / "dist")
    ap.add_argument("--work", type=Path, default=REPO / "build")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="sfx")
    ap.add_argument("--output", type=Path, help="where the result goes (default DIST/hako)")
    a = ap.parse_args()
    a.dist.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    dest = a.output or a.dist / EXE_NAME

    built = pyinstaller(a.variant, a.work)
    if VARIANTS[a.variant].get("flat"):
        flatten_base_library(built)
    if a.variant.startswith("onefile"):
        shutil.copy2(built, dest)
        result = dest
    elif a.variant.startswith("onedir") or a.variant == "prefix":
        check_contents(built)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        shutil.copytree(built, dest, symlinks=True)
        result = dest / EXE_NAME
    else:
        check_contents(built)
        smoke_test(built)
        launcher = compile_launcher(a.work)
        raw = archive(built)
        digest = write_sfx(launcher, raw, dest)
        result = dest
        log(f"payload: {human(len(raw))} unpacked, sha256 {digest}")
        log(f"launcher: {launcher.stat().st_size // 1024} KiB")
    if result.is_file():
        size = result.stat().st_size
    else:
        size = sum(p.stat().st_size for p in result.parent.rglob("*") if p.is_file())
    if dest.is_dir():
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    log(f"{result}: {human(size)} ({size} bytes), Python {sys.version.split()[0]} "
        f"({sys.implementation.cache_tag}, {os.uname().machine}), "
        f"PyInstaller {__import__('PyInstaller').__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
