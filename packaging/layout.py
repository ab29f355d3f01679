"""The payload of ``dist/hako``: a relocatable Python prefix, run by the real interpreter.

PyInstaller's analysis (packaging/hako.spec) decides *what* is collected: every
module hako can import (lean exclusions included), the extension modules and the
shared libraries they need, the schemas. This module decides *how* it runs:
instead of PyInstaller's bootloader (which re-execs itself to set
LD_LIBRARY_PATH, dlopens libpython and runs a Python-level bootstrap with its
own importer: ~8 ms per call here), the launcher execs the build's own
interpreter directly, laid out as an ordinary prefix::

    hako                 the interpreter (the build's executable, libpython linked in
                         statically on Debian; RPATH $ORIGIN/lib)
    hako._pth            "lib/python3.11": the whole sys.path (no PYTHONPATH, no user
                         site, no cwd), whatever the command line
    lib/*.so.*           shared libraries the interpreter and extension modules need
                         that are not part of glibc (libz, libexpat, libffi)
    lib/libhakofrozen.so every pure-Python module's marshalled code (runtime, hooks,
                         spec, jeepney, the stdlib modules the interpreter has not
                         frozen itself, encodings, _hako_entry) and the table that
                         makes them frozen modules of the interpreter
                         (packaging/frozen.py): a DT_NEEDED library of ``hako``
    lib/python3.11/os.pyc
                         the landmark from which the interpreter finds its prefix
                         (``os`` itself is frozen into the interpreter; never loaded)
    lib/python3.11/*.so, spec/*.json
                         extension modules and data, as files

The launcher runs ``<cache>/<build>/hako -I -S -X utf8 -c "import _hako_entry" ARGS...``
(-I as well: hako._pth makes the interpreter isolated only after it has read
PYTHONVERBOSE, PYTHONWARNINGS, PYTHONINSPECT and the like).
"""

from __future__ import annotations

import importlib._bootstrap_external as _bx
import os
import shutil
import subprocess
from pathlib import Path

import frozen

ENTRY_MODULE = "_hako_entry"
#: first in the frozen table (looked up by a linear scan): the interpreter's
#: start (UTF-8 mode, see launcher.c), then the entry
STARTUP_MODULES = ("encodings", "encodings.utf_8", ENTRY_MODULE)
LANDMARK = "os"
EXE_NAME = "hako"

#: part of glibc (or the kernel): always the host's, never bundled
SYSTEM_LIBS = ("linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so",
               "librt.so", "libutil.so", "libresolv.so", "libmvec.so")


def stdlib_dir() -> str:
    import sys
    return f"lib/python{sys.version_info.major}.{sys.version_info.minor}"


def pyc_bytes(source: Path, shown_name: str, optimize: int) -> bytes:
    """Sourceless bytecode of *source*: no mtime, no size (reproducible; nothing to check)."""
    code = compile(source.read_bytes(), shown_name, "exec", dont_inherit=True, optimize=optimize)
    return bytes(_bx._code_to_timestamp_pyc(code, 0, 0))


def lazy_aliases(src: Path, rel: str, optimize: int, modules) -> bytes:
    """encodings/__init__ that imports encodings.aliases only when a name needs it.

    The stock package imports its alias table (~300 entries, ~0.3 ms) at the
    interpreter's start, to look up "utf_8". Here a name that is the name of a
    bundled codec module and no alias (every name the interpreter itself asks
    for in UTF-8 mode) goes straight to the module; any other name reads the
    table first, as before, so every lookup resolves as in the stock package.
    If this Python's source differs from the expected text, it stays stock."""
    text = src.read_text()
    codecs = sorted(n.split(".", 1)[1] for n, _, t in modules
                    if n.startswith("encodings.") and n.count(".") == 1 and n != "encodings.aliases")
    reps = [
        ("from . import aliases\n", ""),
        ("_aliases = aliases.aliases\n",
         "_aliases = None\n"
         "# hako (packaging/layout.py): codec modules no alias redirects, looked up\n"
         "# without reading encodings.aliases\n"
         "_DIRECT = frozenset(@DIRECT@)\n\n\n"
         "def _load_aliases():\n"
         "    global _aliases\n"
         "    if _aliases is None:\n"
         "        from . import aliases\n"
         "        _aliases = aliases.aliases\n"
         "    return _aliases\n"),
        ("    aliased_encoding = _aliases.get(norm_encoding) or \\\n"
         "                       _aliases.get(norm_encoding.replace('.', '_'))",
         "    if norm_encoding in _DIRECT:\n"
         "        aliased_encoding = None\n"
         "    else:\n"
         "        aliased_encoding = _load_aliases().get(norm_encoding) or \\\n"
         "                           _load_aliases().get(norm_encoding.replace('.', '_'))"),
        ("            if alias not in _aliases:\n",
         "            if alias not in _load_aliases():\n"),
    ]
    if not all(text.count(old) == 1 for old, _ in reps):
        print("layout: encodings/__init__.py is not the expected text: left as it is")
        return pyc_bytes(src, rel, optimize)
    # the alias table of this very Python: a name in it is never sent straight
    import encodings.aliases
    direct = [c for c in codecs if c not in encodings.aliases.aliases]
    for old, new in reps:
        text = text.replace(old, new.replace("@DIRECT@", repr(direct)))
    code = compile(text, rel, "exec", dont_inherit=True, optimize=optimize)
    return bytes(_bx._code_to_timestamp_pyc(code, 0, 0))


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise SystemExit(f"layout: {path} collected twice")
    path.write_bytes(data)
    path.chmod(mode)


def _needed_libs(elf: Path) -> dict[str, str]:
    """soname -> path of the non-glibc libraries *elf* needs (transitively, per ldd)."""
    r = subprocess.run(["ldd", str(elf)], capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            if not parts[0].startswith(SYSTEM_LIBS):
                out[parts[0]] = parts[2]
        elif "not found" in line:
            raise SystemExit(f"layout: {elf}: {line.strip()}")
    return out


def python_executable() -> Path:
    """The build interpreter's real executable (through the venv's symlinks)."""
    import sys
    exe = Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))
    if not exe.is_file():
        raise SystemExit(f"layout: cannot find the interpreter's executable ({exe})")
    return exe


def build(modules, binaries, datas, dest: Path, entry: Path, optimize: int = 0) -> Path:
    """Write the prefix into *dest* (removed first); return the executable.

    *modules*: (name, source path, typecode) of every pure module; *binaries*,
    *datas*: PyInstaller TOCs (destination name, source path, typecode)."""
    if dest.exists():
        shutil.rmtree(dest)
    lib = dest / "lib"
    std = dest / stdlib_dir()
    std.mkdir(parents=True)

    seen = set()
    own = frozen.interpreter_frozen()
    table: list[tuple[str, bool, bytes]] = []
    for name, src, typecode in sorted(modules):
        if name in seen or typecode != "PYMODULE":
            continue
        seen.add(name)
        if src in (None, "-"):  # namespace package: a directory is enough
            (std / name.replace(".", "/")).mkdir(parents=True, exist_ok=True)
            continue
        src = Path(src)
        if src.suffix != ".py":
            raise SystemExit(f"layout: {name}: no source ({src}) to compile")
        package = src.name == "__init__.py"
        rel = name.replace(".", "/") + ("/__init__.py" if package else ".py")
        pyc = (lazy_aliases(src, rel, optimize, modules) if name == "encodings"
               else pyc_bytes(src, rel, optimize))
        if name == LANDMARK:
            _write(std / (rel + "c"), pyc)
        if name not in own:
            table.append((name, package, pyc[16:]))  # the code, without the pyc header
    if LANDMARK not in seen:
        raise SystemExit(f"layout: {LANDMARK} was not collected")
    table.append((ENTRY_MODULE, False, pyc_bytes(entry, f"{ENTRY_MODULE}.py", optimize)[16:]))
    # look_up_frozen scans the table in order: the start's modules first, then hako's
    order = {n: i for i, n in enumerate(STARTUP_MODULES)}
    table.sort(key=lambda m: (order.get(m[0], len(order)),
                              m[0].split(".")[0] not in ("runtime", "spec", "hooks"), m[0]))
    names = frozen.build(table, lib / frozen.LIBRARY, Path(f"{dest}.frozen"))
    Path(f"{dest}.frozen", "modules.txt").write_text("\n".join(names) + "\n")

    libs: dict[str, str] = {}
    prefix = f"python{stdlib_dir().rsplit('python', 1)[1]}/lib-dynload/"
    for name, src, typecode in sorted(binaries):
        if typecode == "EXTENSION":
            rel = name[len(prefix):] if name.startswith(prefix) else name
            _write(std / rel, Path(src).read_bytes(), 0o755)
            libs.update(_needed_libs(Path(src)))
        elif not Path(name).name.startswith("libpython"):
            # libpython only if the interpreter below needs it (ldd)
            libs[Path(name).name] = src
    exe = dest / EXE_NAME
    python = python_executable()
    shutil.copyfile(python, exe)
    exe.chmod(0o755)
    # Debian's links libpython in statically (non-PIE: ~2.6 ms faster per start than
    # the PIC libpython3.x.so); an interpreter linked to the shared one gets it in lib/
    libs.update(_needed_libs(python))
    for soname, src in sorted(libs.items()):
        _write(lib / soname, Path(src).read_bytes(), 0o755)
    # DT_RPATH (not RUNPATH): also searched for the dependencies of dlopened
    # extension modules (_ctypes -> libffi); no LD_LIBRARY_PATH, which would leak
    # into every program hako starts
    subprocess.run(["patchelf", "--force-rpath", "--set-rpath", "$ORIGIN/lib", str(exe)], check=True)
    # the frozen modules' table, found through that RPATH; loaded (and its
    # constructor run) before the interpreter's main
    subprocess.run(["patchelf", "--add-needed", frozen.LIBRARY, str(exe)], check=True)

    for name, src, typecode in sorted(datas):
        if typecode == "DATA" and name != "base_library.zip":
            _write(std / name, Path(src).read_bytes())
    (dest / f"{EXE_NAME}._pth").write_text(stdlib_dir() + "\n")
    return exe
