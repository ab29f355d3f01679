#!/usr/bin/env python3
"""Per-call cost of the ways to ship hako as one executable (packaging/README.md).

Builds every variant of packaging/build.py into build/variants/ (unless
--no-build), then times ``--version`` and ``--root DIR state nope`` of each,
interleaved round-robin (so load from other work on the machine hits all
variants alike), and prints a Markdown table of medians (p10-p90).

Run with the project venv: ``env -u PYTHONDONTWRITEBYTECODE .venv/bin/python
packaging/measure.py [--rounds 30]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "build" / "variants"

# A POSIX sh launcher with the same stamp check as launcher.c (one `stat` for
# every cached entry, compared with a stamp file), to price sh against C.
SH_LAUNCHER = r"""#!/bin/sh
d=@DIR@
cd "$d" 2>/dev/null || exit 97
fp=$(stat -c '%n %f %u %g %h %s %i %.9Y %.9Z' -- @FILES@) || exit 98
s=
while IFS= read -r l; do s="$s$l
"; done <.shstamp
[ "$s" = "$fp
" ] || { echo "hako: cache changed" >&2; exit 99; }
exec "$d/hako" -I -S -X utf8 -c "import _hako_entry" "$@"
"""


def build(variant: str, dest: Path) -> None:
    subprocess.run([sys.executable, str(HERE / "build.py"), "--variant", variant,
                    "--work", str(REPO / "build"), "--output", str(dest)], check=True)


def size_of(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def sh_launcher(cache_dir: Path) -> Path:
    files = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*")
                   if p.name not in (".stamp", ".shstamp"))
    script = OUT / "sh-launcher"
    script.write_text(SH_LAUNCHER.replace("@DIR@", str(cache_dir))
                      .replace("@FILES@", " ".join(files)))
    script.chmod(0o755)
    stamp = subprocess.run(["stat", "-c", "%n %f %u %g %h %s %i %.9Y %.9Z", "--", *files],
                           cwd=cache_dir, capture_output=True, text=True, check=True).stdout
    shstamp = cache_dir / ".shstamp"
    if not shstamp.exists():  # root's cache subdirs are immutable; the top is not
        shstamp.write_text(stamp)
    return script


def time_once(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
    os.waitpid(pid, 0)
    return (time.perf_counter() - t) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    variants = ["onefile-plain", "onefile", "onefile-tmpdir", "onefile-o2-strip",
                "onedir-plain", "onedir-lean-only", "onedir", "prefix", "sfx"]
    if not a.no_build:
        for v in variants:
            build(v, OUT / v)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cache = Path(tempfile.mkdtemp(prefix="hako-measure-cache-"))
    env["HAKO_CACHE_DIR"] = str(cache)
    state_root = tempfile.mkdtemp(prefix="hako-measure-root-")
    subprocess.run([str(OUT / "sfx"), "--version"], env=env, check=True, capture_output=True)
    cached = next(p for p in cache.iterdir() if not p.name.startswith("."))

    rows: list[tuple[str, list[str], str]] = [  # (label, argv head, size description)
        ("floor: `python3 -I -S -c pass` (the bare interpreter; no hako)",
         [os.path.realpath("/usr/bin/python3"), "-I", "-S", "-c", "pass"], "-"),
        ("venv: .venv/bin/hako (python3.11 -I -S launcher script)", [str(REPO / ".venv/bin/hako")], "-"),
    ]
    entry = ["-I", "-S", "-X", "utf8", "-c", "import _hako_entry"]
    labels = {
        "onefile-plain": "PyInstaller onefile, defaults (no exclusions)",
        "onefile": "onefile, lean (exclusions, no inspect/ctypes hooks, no libcrypto)",
        "onefile-tmpdir": "onefile, lean, --runtime-tmpdir /dev/shm",
        "onefile-o2-strip": "onefile, lean, optimize=2 (-OO), --strip",
        "onedir-plain": "PyInstaller onedir, defaults",
        "onedir-lean-only": "onedir, lean: stdlib exclusions (no inspect rthook, no libcrypto)",
        "onedir": "onedir, lean + no ctypes bootstrap hook + base_library.zip unpacked "
                  "(the payload until issue 15)",
        "prefix": "no bootloader: the build's interpreter + frozen modules (layout.py), run directly",
        "sfx": "**single file: C launcher + cached interpreter prefix (chosen, `dist/hako`)**",
    }
    for v in variants:
        p = OUT / v
        exe = [str(p / "hako")] + (entry if v == "prefix" else []) if p.is_dir() else [str(p)]
        rows.append((labels[v], exe, f"{size_of(p) / 1048576:.1f} MiB"
                     + (" (dir)" if p.is_dir() else "")))
    rows.append(("sh launcher (same stamp check with `stat`) + cached prefix",
                 [str(sh_launcher(cached))], "-"))

    cmds = {"--version": ["--version"], "state": ["--root", state_root, "state", "nope"]}
    samples: dict[tuple[int, str], list[float]] = {}
    for r in range(a.warmup + a.rounds):
        for i, (_, exe, _) in enumerate(rows):
            for c, args in cmds.items():
                if i == 0 and c != "--version":
                    continue  # the floor runs once per round
                ms = time_once([*exe, *args], env)
                if r >= a.warmup:
                    samples.setdefault((i, c), []).append(ms)

    # first call: unpacking into an empty cache (launcher only)
    cold = []
    for _ in range(max(5, a.rounds // 3)):
        d = Path(tempfile.mkdtemp(prefix="hako-measure-cold-"))
        cold.append(time_once([str(OUT / "sfx"), "--version"], dict(env, HAKO_CACHE_DIR=str(d / "c"))))
        shutil.rmtree(d, ignore_errors=True)
    hashing = []
    files = [str(p) for p in cached.rglob("*") if p.is_file()]
    for _ in range(10):
        hashing.append(time_once(["/usr/bin/sha256sum", *files], env))

    def cell(xs: list[float]) -> str:
        q = statistics.quantiles(xs, n=10)
        return f"{statistics.median(xs):.1f} ({q[0]:.1f}-{q[-1]:.1f})"

    print(f"\n{a.rounds} interleaved rounds, median (p10-p90) ms; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n")
    print("| option | `--version` ms | `state nope` ms | size |")
    print("|---|---:|---:|---:|")
    for i, (label, _, size) in enumerate(rows):
        state = cell(samples[(i, "state")]) if (i, "state") in samples else "-"
        print(f"| {label} | {cell(samples[(i, '--version')])} | {state} | {size} |")
    print(f"| single file, first call (unpacks into an empty cache) | {cell(cold)} | - | - |")
    print(f"| (sha256sum of the unpacked cache alone, per call if hashed) | {cell(hashing)} "
          f"| - | - |")
    for d in (cache, Path(state_root)):
        subprocess.run(["chattr", "-R", "-i", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
