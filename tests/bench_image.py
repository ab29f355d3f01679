#!/usr/bin/env python3
"""Image timings (not run by pytest): first and second start of an image, and
each rootfs driver.

    .venv/bin/python tests/bench_image.py [--rounds N] [--files N] [--json FILE]

The image: busybox plus a layer of ``--files`` small files in 40 directories
and one 32 MiB file, plus a layer replacing, deleting (whiteouts) and making
opaque some of them (gzip). For each mode (root; rootless as the test user
when run as root, or as yourself otherwise):

- ``bundle cold``: ``hako bundle`` into an empty store (every layer unpacked);
- ``bundle warm``: the same image again (layers reused: nothing unpacked);
- ``first start``: cold bundle + ``hako run`` of /bin/true, i.e. an image to a
  finished container with an empty store; ``second start``: the same with the
  store filled;
- ``run <driver>``: ``hako run`` of /bin/true (create, mount, start, wait,
  delete with the read-write layer) for a plain directory bundle and for each
  driver, median and p10-p90 of ``--rounds`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import busybox  # noqa: E402
import imagebuild as ib  # noqa: E402
from runtime.default_spec import default_spec  # noqa: E402

HAKO = os.environ.get("HAKO") or str(REPO / ".venv" / "bin" / "hako")
DRIVERS = ("overlay", "fuse-overlayfs", "vfs")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Mode:
    def __init__(self, name: str, base: Path, user: str | None) -> None:
        self.name = name
        self.dir = base / name
        self.dir.mkdir(mode=0o755)
        self.user = user
        self.prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] \
            if user else []
        home = pwd.getpwnam(user).pw_dir if user else os.environ.get("HOME", "/")
        self.env = {"PATH": CLEAN_PATH, "HOME": home, "LANG": "C.UTF-8"}
        if name == "rootless":
            xdg = self.dir / "xdg"
            xdg.mkdir(mode=0o700)
            self.env["XDG_RUNTIME_DIR"] = str(xdg)
        self.state = self.dir / "state"
        self.n = 0
        if user:
            pw = pwd.getpwnam(user)
            for p in (self.dir, *self.dir.iterdir()):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def hako(self, *args, check: bool = True) -> float:
        argv = self.prefix + [HAKO, "--root", str(self.state), *map(str, args)]
        t0 = time.perf_counter()
        r = subprocess.run(argv, env=self.env, cwd=self.dir, capture_output=True, text=True,
                           timeout=600)
        dt = time.perf_counter() - t0
        if check and r.returncode != 0:
            raise SystemExit(f"{self.name}: {' '.join(map(str, args))}: {r.stderr.strip()}")
        return dt

    def bundle(self, ref: str, store: Path, driver: str | None = None) -> tuple[Path, float]:
        self.n += 1
        b = self.dir / f"b{self.n}"
        extra = ["--driver", driver] if driver else []
        dt = self.hako("bundle", "--image", ref, "--store", store, *extra, b, "--", "/bin/true")
        cfgp = b / "config.json"
        cfg = json.loads(cfgp.read_text())
        cfg["process"]["user"] = {"uid": 0, "gid": 0}
        cfg["process"]["cwd"] = "/"
        tmp = b / "config.json.new"
        tmp.write_text(json.dumps(cfg))
        os.replace(tmp, cfgp)
        return b, dt

    def run(self, bundle: Path) -> float:
        self.n += 1
        return self.hako("run", "--bundle", bundle, f"bench-{os.getpid()}-{self.n}")


def build_image(base: Path, files: int) -> Path:
    rootfs = busybox.build_rootfs(base / "rootfs")
    l0 = ib.layer_tar(None, base_dir=rootfs)
    entries = [("dir", "data")] + [("dir", f"data/d{i}") for i in range(40)]
    entries += [("file", f"data/d{i % 40}/f{i}", os.urandom(1024 + (i * 7919) % 7168))
                for i in range(files)]
    entries.append(("file", "data/big", os.urandom(32 << 20)))
    l1 = ib.layer_tar(entries)
    l2 = [("dir", "data")] + [("file", f"data/d{i % 40}/f{i}", f"new {i}")
                              for i in range(0, files, 20)]
    l2 += [("whiteout", f"data/d{i % 40}/f{i}") for i in range(1, files, 20)]
    l2 += [("dir", "data/d0"), ("opaque", "data/d0"), ("file", "data/d0/only", "o")]
    img = ib.Image([l0, l1, ib.layer_tar(l2)])
    layout = ib.write_oci(base / "image", [("bench", img)], compression="gzip")
    for p in [layout, *layout.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return layout


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    q = lambda f: xs[min(len(xs) - 1, int(f * (len(xs) - 1) + 0.5))]  # noqa: E731
    return {"median": statistics.median(xs), "p10": q(0.1), "p90": q(0.9), "n": len(xs)}


def fmt(s: float) -> str:
    return f"{s * 1000:7.1f} ms" if s < 10 else f"{s:7.2f} s "


def bench_mode(m: Mode, layout: Path, rounds: int) -> dict:
    ref = f"oci:{layout}:bench"
    res: dict = {}
    # first start: cold store; second start: warm
    first, second, cold, warm = [], [], [], []
    for i in range(max(1, rounds // 5)):
        store = m.dir / f"store-cold{i}"
        b, dt = m.bundle(ref, store)
        cold.append(dt)
        first.append(dt + m.run(b))
        b, dt = m.bundle(ref, store)
        warm.append(dt)
        second.append(dt + m.run(b))
    res["bundle cold (unpack)"] = stats(cold)
    res["bundle warm (reuse)"] = stats(warm)
    res["first start (cold bundle + run)"] = stats(first)
    res["second start (warm bundle + run)"] = stats(second)
    # plain bundle baseline
    plain = m.dir / "plain"
    cfg = default_spec(rootless=m.name == "rootless", args=["/bin/true"],
                       uid=pwd.getpwnam(m.user).pw_uid if m.user else None,
                       gid=pwd.getpwnam(m.user).pw_gid if m.user else None)
    cfg["process"]["terminal"] = False
    busybox.make_bundle(plain, cfg, m.dir.parent / "rootfs")
    if m.user:
        pw = pwd.getpwnam(m.user)
        busybox.chown_tree(plain, pw.pw_uid, pw.pw_gid)
    res["run: plain directory bundle"] = stats([m.run(plain) for _ in range(rounds)])
    store = m.dir / "store-cold0"
    for d in DRIVERS:
        try:
            b, _ = m.bundle(ref, store, d)
        except SystemExit as e:
            res[f"run: {d}"] = {"error": str(e)}
            continue
        m.run(b)  # warm-up
        res[f"run: {d}"] = stats([m.run(b) for _ in range(rounds)])
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--json")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hako-bench-image-", dir="/tmp"))
    os.chmod(base, 0o755)
    out: dict = {"image": {}, "modes": {}}
    try:
        t0 = time.perf_counter()
        layout = build_image(base, a.files)
        out["image"] = {"files": a.files + 2, "build_s": time.perf_counter() - t0,
                        "blobs_bytes": sum(p.stat().st_size for p in
                                           (layout / "blobs" / "sha256").iterdir())}
        modes = []
        if os.geteuid() == 0:
            modes.append(Mode("root", base, None))
            try:
                pwd.getpwnam("hakotest")
                modes.append(Mode("rootless", base, "hakotest"))
            except KeyError:
                pass
        else:
            modes.append(Mode("rootless", base, None))
        print(f"image: busybox + {a.files} files + 32 MiB, 3 layers, "
              f"{out['image']['blobs_bytes'] / (1 << 20):.1f} MiB of blobs; "
              f"{a.rounds} rounds; kernel {os.uname().release}")
        for m in modes:
            res = bench_mode(m, layout, a.rounds)
            out["modes"][m.name] = res
            print(f"\n== {m.name}")
            for k, v in res.items():
                if "error" in v:
                    print(f"  {k:<36} {v['error']}")
                else:
                    print(f"  {k:<36} {fmt(v['median'])}   (p10 {fmt(v['p10']).strip()}, "
                          f"p90 {fmt(v['p90']).strip()}, n={v['n']})")
    finally:
        # stores of rootless runs hold subordinate ids' files: root removes them,
        # an ordinary user through hako itself
        for st in base.glob("*/store-*"):
            if os.geteuid() != 0:
                for b in st.parent.glob("b*"):
                    shutil.rmtree(b, ignore_errors=True)
                subprocess.run([HAKO, "layers", "prune", "--all", "--store", str(st)],
                               capture_output=True, timeout=300)
        shutil.rmtree(base, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
