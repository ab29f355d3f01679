#!/usr/bin/env python3
"""Side-by-side timings of hako, runc and crun (`make bench`).

For every runtime, interleaved within each round so that machine noise hits
all of them alike: ``run`` of /bin/true, then ``create``, ``start``,
``exec`` (of /bin/true, as containerd's shim calls it: ``--process FILE
--detach --pid-file F``), ``state``, ``kill`` and ``delete`` of a sleeping
container. Each round also
times the floor, ``python3 -I -S -c pass`` (the bare interpreter hako runs
on: what no Python runtime can go under). Reports the median and the p10–p90
spread of each, the ratios to runc's and crun's medians, for the hot verbs
(start/state/kill/delete) hako's cost above the floor, the peak RSS of the
runtime process and the RSS of the waiting init. Also writes the numbers as
JSON (``--json FILE``).

As root it measures rootful containers and, when the test user exists,
re-runs itself as that user for the rootless numbers. crun 1.8 refuses
hybrid cgroup hosts, so (as root) the benchmark runs in a private mount
namespace where /sys/fs/cgroup/unified/cgroup.controllers is empty, the
workaround ../shared/ENGINES.md describes; hako and runc run there too.
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import busybox  # noqa: E402
from runtime.default_spec import default_spec  # noqa: E402

VERBS = ["run", "create", "start", "exec", "state", "kill", "delete"]
HOT = ("start", "state", "kill", "delete")
#: the interpreter .venv/bin/hako runs and dist/hako bundles (Debian's)
FLOOR_PYTHON = "/usr/bin/python3"


BUSYBOX = "/bin/busybox"


def spawn(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, float]:
    """(seconds, exit code, peak RSS in KiB, CPU seconds) of one runtime call.

    The call runs under ``busybox time -f %M``: wait4's ru_maxrss of a direct
    child of this (Python, ~15 MiB) process would report *our* high-water mark,
    which exec inherits from the vfork/fork copy; busybox is small, so its child's
    figure is the runtime's own. (busybox reports ru_maxrss as if it were pages:
    4x KiB, corrected below. Every runtime pays the same ~1 ms for busybox.)
    The CPU time (user + system, the runtime's and the children it waited for)
    varies much less with the load of a shared machine than the wall time."""
    import tempfile
    devnull = os.open(os.devnull, os.O_RDWR)
    with tempfile.TemporaryFile() as err:
        wrapped = [BUSYBOX, "time", "-f", "%M", *argv] if os.path.exists(BUSYBOX) else argv
        t0 = time.perf_counter()
        pid = os.posix_spawn(wrapped[0], wrapped, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status, ru = os.wait4(pid, 0)
        dt = time.perf_counter() - t0
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()
    os.close(devnull)
    rss = int(tail[-1]) // 4 if wrapped is not argv and tail and tail[-1].isdigit() else 0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:  # why, for the failures line (busybox's last line is the RSS)
        msg = [line for line in tail if not line.isdigit() and not line.startswith("Command exited")]
        Subject.last_error = msg[-1][:120] if msg else ""
    return dt, code, rss, ru.ru_utime + ru.ru_stime


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Subject:
    last_error = ""

    def __init__(self, name: str, exe: str, root: Path) -> None:
        self.name = name
        self.exe = exe
        self.root = root
        self.samples: dict[str, list[float]] = {v: [] for v in VERBS}
        self.rss: dict[str, list[int]] = {v: [] for v in VERBS}
        self.cpu: dict[str, list[float]] = {v: [] for v in VERBS}
        self.init_rss: list[int] = []
        self.failures: list[str] = []

    def call(self, verb: str, args: list[str], env: dict[str, str], record: bool = True) -> int:
        dt, code, rss, cpu = spawn([self.exe, "--root", str(self.root), *args], env)
        if record and code == 0:
            self.samples[verb].append(dt)
            self.rss[verb].append(rss)
            self.cpu[verb].append(cpu)
        if code != 0 and record:
            self.failures.append(f"{verb} exit {code}: {Subject.last_error}")
        return code


def wait_stopped(s: Subject, cid: str, env: dict[str, str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([s.exe, "--root", str(s.root), "state", cid], env=env,
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0 or json.loads(r.stdout).get("status") == "stopped":
            return
        time.sleep(0.005)


def round_for(s: Subject, bundles: dict[str, Path], n: int, env: dict[str, str]) -> None:
    cid = f"bench-{os.getpid()}-{n}"
    s.call("run", ["run", "--bundle", str(bundles["true"]), cid + "r"], env)
    pidfile = s.root / f"{cid}.pid"
    if s.call("create", ["create", "--bundle", str(bundles["sleep"]), "--pid-file",
                         str(pidfile), cid], env) != 0:
        s.call("delete", ["delete", "--force", cid], env, record=False)
        return
    try:
        s.init_rss.append(rss_kib(int(pidfile.read_text())))
    except (OSError, ValueError):
        pass
    s.call("start", ["start", cid], env)
    s.call("exec", ["exec", "--process", str(bundles["process"]), "--detach", "--pid-file",
                    str(s.root / f"{cid}.exec.pid"), cid], env)
    s.call("state", ["state", cid], env)
    s.call("kill", ["kill", cid, "KILL"], env)
    wait_stopped(s, cid, env)
    s.call("delete", ["delete", cid], env)
    s.call("delete", ["delete", "--force", cid], env, record=False)


def crun_workaround() -> None:
    """Private mount namespace with an empty unified cgroup.controllers."""
    if os.geteuid() != 0 or not os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        return
    from runtime.syscalls import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, SYS
    SYS.unshare(CLONE_NEWNS)
    SYS.mount(None, "/", None, MS_REC | MS_PRIVATE)
    empty = tempfile.NamedTemporaryFile(prefix="hako-bench-empty-", delete=False)
    empty.close()
    os.chmod(empty.name, 0o444)  # the rootless half (same namespace) reads it as the test user
    SYS.mount(empty.name, "/sys/fs/cgroup/unified/cgroup.controllers", None, MS_BIND)
    os.unlink(empty.name)


def fmt_ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def measure(mode: str, runtimes: list[tuple[str, str]], rounds: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="hako-bench-"))
    os.chmod(base, 0o755)
    try:
        rootfs = busybox.build_rootfs(base / "rootfs-cache")
        bundles = {}
        for name, args in (("true", ["/bin/true"]), ("sleep", ["sleep", "1000"])):
            cfg = default_spec(rootless=(mode == "rootless"), args=args)
            cfg["process"]["terminal"] = False
            # crun 1.8 refuses "1.3.0" ("unknown version specified"); every runtime
            # gets the same bundle, so use the version runc's own spec writes
            cfg["ociVersion"] = "1.0.2-dev"
            busybox.make_bundle(base / name, cfg, rootfs)
            bundles[name] = base / name
            if name == "true":  # exec's --process: the process section of a bundle
                (base / "process.json").write_text(json.dumps(cfg["process"]))
                os.chmod(base / "process.json", 0o644)
                bundles["process"] = base / "process.json"
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}
        if "XDG_RUNTIME_DIR" in os.environ:
            env["XDG_RUNTIME_DIR"] = os.environ["XDG_RUNTIME_DIR"]
        subjects = []
        for name, exe in runtimes:
            root = base / f"state-{name.replace(' ', '-')}"
            root.mkdir()
            subjects.append(Subject(name, exe, root))
        for s in subjects:  # warm-up (page cache), not recorded
            round_for(s, bundles, -1, env)
            for v in VERBS:
                s.samples[v].clear()
                s.rss[v].clear()
                s.cpu[v].clear()
            s.init_rss.clear()
            s.failures.clear()
        floor: list[float] = []
        floor_cpu: list[float] = []
        floor_argv = [os.path.realpath(FLOOR_PYTHON), "-I", "-S", "-c", "pass"]
        for n in range(rounds):
            dt, code, _, cpu = spawn(floor_argv, env)
            if code == 0:
                floor.append(dt)
                floor_cpu.append(cpu)
            for s in subjects:
                round_for(s, bundles, n, env)
        out = {s.name: {
            "exe": s.exe,
            "verbs": {v: {"median_ms": statistics.median(s.samples[v]) * 1000 if s.samples[v] else None,
                          "p10_ms": _q(s.samples[v], 0.1), "p90_ms": _q(s.samples[v], 0.9),
                          "n": len(s.samples[v]),
                          "cpu_ms": statistics.median(s.cpu[v]) * 1000 if s.cpu[v] else None,
                          "peak_rss_kib": max(s.rss[v]) if s.rss[v] else None}
                      for v in VERBS},
            "init_rss_kib": statistics.median(s.init_rss) if s.init_rss else None,
            "failures": sorted(set(s.failures)),
        } for s in subjects}
        out["floor"] = {"exe": " ".join(floor_argv),
                        "median_ms": statistics.median(floor) * 1000 if floor else None,
                        "p10_ms": _q(floor, 0.1), "p90_ms": _q(floor, 0.9), "n": len(floor),
                        "cpu_ms": statistics.median(floor_cpu) * 1000 if floor_cpu else None}
        return out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _q(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def _ratio(d: dict, ref: dict | None, verb: str) -> str:
    r = ref and ref["verbs"][verb]["median_ms"]
    return f"{d['median_ms'] / r:.2f}x" if r and d["median_ms"] else "-"


def table(mode: str, res: dict) -> str:
    """One row per verb and runtime; the floor and hako's cost above it."""
    names = [n for n in res if n != "floor"]
    runc, crun = res.get("runc"), res.get("crun")
    floor = res.get("floor", {}).get("median_ms")
    out = [f"\n== {mode}: wall ms, median (p10-p90) of one interleaved run ({os.cpu_count()} CPUs, "
           f"load {os.getloadavg()[0]:.1f}); ratios to runc's and crun's medians; hot verbs' "
           f"cost above the floor; median CPU ms (user+sys); peak RSS"]
    if floor:
        f = res["floor"]
        out.append(f"floor ({f['exe']}): {floor:.1f} ({f['p10_ms']:.1f}-{f['p90_ms']:.1f}) ms, "
                   f"CPU {f['cpu_ms']:.1f} ms")
    out.append(f"{'verb':<7} {'runtime':<14} {'median (p10-p90)':>20} {'/runc':>7} {'/crun':>7}"
               f" {'-floor':>7} {'CPU':>6} {'peak RSS':>9}")
    for v in VERBS:
        for i, n in enumerate(names):
            d = res[n]["verbs"][v]
            head = f"{v if i == 0 else '':<7} {n:<14}"
            if d["median_ms"] is None:
                out.append(f"{head} {'failed':>20}")
                continue
            spread = f"{d['median_ms']:.1f} ({d['p10_ms']:.1f}-{d['p90_ms']:.1f})"
            above = (f"{d['median_ms'] - floor:+.1f}" if floor and v in HOT and n.startswith("hako")
                     else "")
            rss = f"{d['peak_rss_kib'] / 1024:.1f}M" if d["peak_rss_kib"] else ""
            cpu = f"{d['cpu_ms']:.1f}" if d.get("cpu_ms") is not None else ""
            out.append(f"{head} {spread:>20} {_ratio(d, runc, v):>7} {_ratio(d, crun, v):>7}"
                       f" {above:>7} {cpu:>6} {rss:>9}")
    out.append("init RSS (the waiting container init): " + ", ".join(
        f"{n} {res[n]['init_rss_kib'] / 1024:.1f} MiB" if res[n]["init_rss_kib"] else f"{n} n/a"
        for n in names))
    for n in names:
        if res[n]["failures"]:
            out.append(f"  {n}: failures: {', '.join(res[n]['failures'])}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 15)))
    ap.add_argument("--mode", choices=["auto", "root", "rootless"], default="auto")
    ap.add_argument("--json", default=None, help="write results as JSON here")
    ap.add_argument("--user", default=os.environ.get("HAKO_TEST_USER", "hakotest"))
    ap.add_argument("--also", action="append", default=[], metavar="NAME=EXE",
                    help="another runtime in the same interleaved run (e.g. an older build)")
    a = ap.parse_args()
    venv_hako = str(REPO / ".venv" / "bin" / "hako")
    runtimes = [("runc", shutil.which("runc") or "/usr/sbin/runc"),
                ("crun", shutil.which("crun") or "/usr/bin/crun"),
                ("hako (venv)", venv_hako)]
    frozen = REPO / "dist" / "hako"
    if frozen.exists():
        runtimes.append(("hako (frozen)", str(frozen)))
        newest = max((p.stat().st_mtime, p) for top in ("runtime", "hooks", "spec", "packaging")
                      for p in (REPO / top).rglob("*.py"))
        if newest[0] > frozen.stat().st_mtime:
            print(f"warning: dist/hako is older than {newest[1].relative_to(REPO)}: it runs older "
                  "code than the venv (make binary; make bench rebuilds it)", file=sys.stderr)
    runtimes += [tuple(x.split("=", 1)) for x in a.also]
    runtimes = [(n, e) for n, e in runtimes if os.path.exists(e)]
    results: dict[str, dict] = {}
    mode = a.mode if a.mode != "auto" else ("root" if os.geteuid() == 0 else "rootless")
    if mode == "root":
        crun_workaround()
    results[mode] = measure(mode, runtimes, a.rounds)
    print(table(mode, results[mode]))
    if a.mode == "auto" and os.geteuid() == 0:
        import pwd
        try:
            pw = pwd.getpwnam(a.user)
        except KeyError:
            print(f"\n(rootless skipped: no user {a.user}; `make host-deps` creates it)")
        else:
            with tempfile.NamedTemporaryFile(prefix="hako-bench-", suffix=".json") as tf:
                os.chmod(tf.name, 0o666)
                xdg = tempfile.mkdtemp(prefix="hako-bench-xdg-")
                os.chown(xdg, pw.pw_uid, pw.pw_gid)
                env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": pw.pw_dir,
                       "XDG_RUNTIME_DIR": xdg, "LANG": "C.UTF-8"}
                r = subprocess.run(["setpriv", f"--reuid={a.user}", f"--regid={a.user}",
                                    "--init-groups", "--", sys.executable, __file__,
                                    "--mode", "rootless", "--rounds", str(a.rounds),
                                    "--json", tf.name,
                                    *[f"--also={x}" for x in a.also]], env=env, cwd="/", timeout=1800)
                shutil.rmtree(xdg, ignore_errors=True)
                if r.returncode == 0:
                    results.update(json.load(open(tf.name)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
