#!/usr/bin/env python3
"""Pull timings (not run by pytest): `hako images pull` against
`skopeo copy docker://... oci:...` from a local registry.

    .venv/bin/python tests/bench_pull.py [--rounds N] [--json FILE]

A docker-registry (tests/registry_kit.py) on 127.0.0.1 serves a ~50 MB image
(gzip): busybox, the host's /usr/lib/python3.11 tree (many small files), and
32 MiB of random data. For each mode (root; rootless as the test user when run
as root, or as yourself otherwise), each round, alternating which goes first:

- ``hako pull``: `hako images pull` into an empty store (download and verify
  every blob into the store's content area, record the image);
- ``hako bundle``: then `hako bundle --pull never` from that store (unpack
  every layer from its blob, both digests checked, syncfs; write the bundle);
  ``hako pull+bundle`` is their sum: the time from a name to a runnable bundle;
- ``hako warm``: the pull again (manifest and config only: the layers are in
  the store);
- ``skopeo``: `skopeo copy` into an empty OCI layout (download and verify,
  no unpacking);
- ``skopeo+bundle``: that, plus `hako bundle` from the OCI layout into an empty
  store: the same two steps the way one would do them without `hako images pull`.

Prints medians and the ratios hako pull / skopeo (the goal: <= 1.0x) and
hako pull+bundle / skopeo+bundle.
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
import registry_kit as K  # noqa: E402

HAKO = os.environ.get("HAKO") or str(REPO / ".venv" / "bin" / "hako")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TEST_USER = os.environ.get("HAKO_TEST_USER") or "hakotest"
TIMEOUT = 600


def build_image(d: Path) -> Path:
    rootfs = busybox.build_rootfs(d / "rootfs")
    layers = [ib.layer_tar(None, base_dir=rootfs)]
    py = Path("/usr/lib/python3.11")
    if py.is_dir():
        stage = d / "py"
        shutil.copytree(py, stage / "usr" / "lib" / "python3.11", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        layers.append(ib.layer_tar(None, base_dir=stage))
        shutil.rmtree(stage)
    layers.append(ib.layer_tar([("dir", "data"),
                                ("file", "data/random", os.urandom(32 << 20))]))
    img = ib.Image(layers, config={"Cmd": ["sh"]})
    return ib.write_oci(d / "layout", [("bench", img)], compression="gzip")


class Mode:
    def __init__(self, name: str, base: Path, user: str | None) -> None:
        self.name = name
        self.dir = base / name
        self.dir.mkdir(mode=0o755)
        self.user = user
        self.prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] \
            if user else []
        home = self.dir / "home"
        home.mkdir(mode=0o700)
        (self.dir / "registries.conf").write_text("")
        self.env = {"PATH": CLEAN_PATH, "HOME": str(home), "LANG": "C.UTF-8",
                    "XDG_RUNTIME_DIR": str(home),
                    "CONTAINERS_REGISTRIES_CONF": str(self.dir / "registries.conf")}
        if user:
            pw = pwd.getpwnam(user)
            for p in (self.dir, home):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def timed(self, argv: list[str]) -> float:
        t0 = time.perf_counter()
        r = subprocess.run(self.prefix + argv, env=self.env, cwd=self.dir, capture_output=True,
                           text=True, timeout=TIMEOUT)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} ({self.name}): exit {r.returncode}: "
                             f"{r.stderr.strip()[-2000:]}")
        return dt

    def clean(self, path: Path) -> None:
        if path.exists():
            if self.user or os.geteuid() != 0:
                # rootless stores hold files of subordinate ids: hako removes them
                subprocess.run(self.prefix + [HAKO, "layers", "prune", "--all", "--store",
                                              str(path)], env=self.env, capture_output=True,
                               timeout=TIMEOUT)
            shutil.rmtree(path, ignore_errors=True)


def bench_mode(mode: Mode, ref: str, rounds: int) -> dict:
    res: dict[str, list[float]] = {k: [] for k in (
        "hako pull", "hako bundle", "hako pull+bundle", "hako warm", "skopeo",
        "bundle from oci", "skopeo+bundle")}
    store, oci, store2 = mode.dir / "store", mode.dir / "oci", mode.dir / "store2"
    unpack = [HAKO, "bundle", "--image", f"oci:{oci}:bench", "--store", str(store2),
              str(mode.dir / "bundle2"), "--", "true"]
    hako_pull = [HAKO, "images", "pull", "--quiet", "--store", str(store), ref]
    hako_bundle = [HAKO, "bundle", "--image", ref, "--pull", "never", "--store", str(store),
                   str(mode.dir / "bundle"), "--", "true"]
    skopeo = [K.SKOPEO, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
              f"docker://{ref}", f"oci:{oci}:bench"]
    for i in range(rounds + 1):  # round 0 warms the page cache and the registry
        order = ("hako", "skopeo") if i % 2 else ("skopeo", "hako")
        for what in order:
            if what == "hako":
                mode.clean(store)
                shutil.rmtree(mode.dir / "bundle", ignore_errors=True)
                t = {"hako pull": mode.timed(hako_pull), "hako bundle": mode.timed(hako_bundle),
                     "hako warm": mode.timed(hako_pull)}
                t["hako pull+bundle"] = t["hako pull"] + t["hako bundle"]
            else:
                shutil.rmtree(oci, ignore_errors=True)
                mode.clean(store2)
                shutil.rmtree(mode.dir / "bundle2", ignore_errors=True)
                t = {"skopeo": mode.timed(skopeo), "bundle from oci": mode.timed(unpack)}
                t["skopeo+bundle"] = t["skopeo"] + t["bundle from oci"]
            if i:
                for k, v in t.items():
                    res[k].append(v)
    mode.clean(store)
    mode.clean(store2)
    shutil.rmtree(oci, ignore_errors=True)
    out = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
           for k, v in res.items()}
    out["ratio"] = out["hako pull"]["median"] / out["skopeo"]["median"]
    out["ratio pull+bundle"] = (out["hako pull+bundle"]["median"]
                                / out["skopeo+bundle"]["median"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    missing = K.missing_tools()
    if missing:
        print(f"bench_pull: skipped: needs {', '.join(missing)} (make host-deps)")
        return 0
    base = Path(tempfile.mkdtemp(prefix="hako-bench-pull-", dir="/tmp"))
    os.chmod(base, 0o755)
    reg = None
    try:
        layout = build_image(base / "image")
        size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        reg = K.Registry(base / "registry")
        ref = f"{reg.host}/bench/image:1"
        K.push(layout, "bench", ref)
        shutil.rmtree(base / "image")
        modes = []
        if os.geteuid() == 0:
            modes.append(Mode("root", base, None))
            try:
                pwd.getpwnam(TEST_USER)
                modes.append(Mode("rootless", base, TEST_USER))
            except KeyError:
                print(f"bench_pull: no user {TEST_USER}: rootless skipped")
        else:
            modes.append(Mode("rootless", base, None))
        results = {"image_bytes": size, "rounds": a.rounds, "modes": {}}
        print(f"pull of a {size / (1 << 20):.1f} MiB image (gzip, 3 layers) from "
              f"docker-registry on 127.0.0.1, median of {a.rounds} rounds")
        for m in modes:
            r = bench_mode(m, ref, a.rounds)
            results["modes"][m.name] = r
            med = {k: v["median"] for k, v in r.items() if isinstance(v, dict)}
            print(f"  {m.name:<9} hako pull {med['hako pull']:.2f}s  skopeo copy "
                  f"{med['skopeo']:.2f}s  ratio {r['ratio']:.2f}x   |  to a runnable bundle: "
                  f"hako pull+bundle {med['hako pull+bundle']:.2f}s (bundle "
                  f"{med['hako bundle']:.2f}s)  skopeo+bundle {med['skopeo+bundle']:.2f}s "
                  f"(bundle {med['bundle from oci']:.2f}s)  ratio "
                  f"{r['ratio pull+bundle']:.2f}x  |  warm pull {med['hako warm']:.2f}s")
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    finally:
        if reg is not None:
            reg.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
