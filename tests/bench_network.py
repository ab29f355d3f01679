#!/usr/bin/env python3
"""Throughput and connect latency of hako's rootless networking (not run by pytest).

For slirp4netns and pasta, against plain host loopback as the baseline:

- host -> container: MB/s of N MB sent to 127.0.0.1:PORT, forwarded to a busybox
  `nc -l` inside (timed until the container closes the connection);
- container -> host: MB/s of N MB that `dd | nc 10.0.2.2 PORT` inside sends to a
  server on the host's 127.0.0.1 (host-loopback enabled), timed on the host from
  accept to EOF;
- request latency: connect to 127.0.0.1:PORT (forwarded) and read the first
  byte, which `nc -ll -e echo` inside writes (includes the fork/exec of echo);
  median and p90 of --rounds requests; the baseline is a Python thread replying.

Only loopback and the container's own namespace addresses are used.

    .venv/bin/python tests/bench_network.py [--mb 100] [--rounds 200] [--mode rootless|root]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import support  # noqa: E402

GATEWAY = "10.0.2.2"
CHUNK = 1 << 16


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Sink:
    """Host server on 127.0.0.1 that counts what one client sends until EOF."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.result: tuple[int, float] | None = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        self.sock.settimeout(120)
        c, _ = self.sock.accept()
        t0 = time.perf_counter()
        n = 0
        c.settimeout(120)
        while chunk := c.recv(1 << 20):
            n += len(chunk)
        self.result = (n, time.perf_counter() - t0)
        c.close()
        self.sock.close()

    def wait(self, timeout: float = 180) -> tuple[int, float]:
        self.t.join(timeout)
        if self.result is None:
            raise RuntimeError("the sink got nothing")
        return self.result


def send_mb(port: int, mb: int) -> float:
    """Send *mb* MiB to 127.0.0.1:port; seconds until the far side closes."""
    buf = b"\0" * CHUNK
    total = mb << 20
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.settimeout(120)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        sent += s.send(buf[:min(CHUNK, total - sent)])
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096):
        pass
    dt = time.perf_counter() - t0
    s.close()
    return dt


def request_latencies(port: int, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)
            if not s.recv(16):
                raise RuntimeError("no reply")
        out.append(time.perf_counter() - t0)
    return out


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(16):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def baseline(mb: int, rounds: int) -> dict:
    # host -> "container": a sink thread
    sink = Sink()
    in_dt = send_mb(sink.port, mb)
    sink.wait()
    # "container" -> host: the same, the other way round
    sink = Sink()
    threading.Thread(target=send_mb, args=(sink.port, mb), daemon=True).start()
    n, out_dt = sink.wait()
    # requests: a thread that answers every connection with one line
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.sendall(b"x\n")
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    lat = request_latencies(port, rounds)
    srv.close()
    return {"in": mb / in_dt, "out": (n / (1 << 20)) / out_dt, "lat": lat}


def one_driver(rt: support.Runtime, driver: str, mb: int, rounds: int) -> dict:
    sink_port, echo_port = free_port(), free_port()
    ports = f"127.0.0.1:{sink_port}:5001,127.0.0.1:{echo_port}:5002"

    def patch(c):
        c["annotations"] = {"io.hako.network": driver, "io.hako.network.ports": ports,
                            "io.hako.network.host-loopback": "true"}
        if not any(n["type"] == "network" for n in c["linux"]["namespaces"]):
            c["linux"]["namespaces"].append({"type": "network"})
        for m in c["mounts"]:
            if m["destination"] == "/sys":
                m.update(type="sysfs", source="sysfs", options=["nosuid", "noexec", "nodev"])
    script = "nc -ll -p 5002 -e echo x & nc -l -p 5001 > /dev/null & sleep 1000"
    cid = rt.new_id()
    bundle = rt.bundle(["sh", "-c", script], patch=patch)
    t0 = time.perf_counter()
    r = rt.hako("run", "-d", "--bundle", bundle, cid)
    create_s = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{driver}: hako run failed: {r.stderr.strip()}")
    try:
        wait_port(echo_port)
        in_dt = send_mb(sink_port, mb)
        lat = request_latencies(echo_port, rounds)
        sink = Sink()
        count = (mb << 20) // CHUNK
        # in the background: the sink's numbers are taken at EOF, and passt 2023-03 may
        # lose the FIN that would end nc after its half-close
        p = rt.popen(rt.hako_argv("exec", cid, "sh", "-c",
                                  f"dd if=/dev/zero bs={CHUNK} count={count} 2>/dev/null | "
                                  f"nc {GATEWAY} {sink.port}"))
        try:
            n, out_dt = sink.wait()
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
            p.wait(timeout=30)
    finally:
        rt.hako("delete", "--force", cid)
    return {"in": mb / in_dt, "out": (n / (1 << 20)) / out_dt, "lat": lat, "run": create_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="MiB per throughput run (100)")
    ap.add_argument("--rounds", type=int, default=200, help="requests for the latency (200)")
    ap.add_argument("--mode", choices=support.MODES, default="rootless")
    ap.add_argument("--drivers", default="slirp4netns,pasta")
    args = ap.parse_args()
    session = support.Session()
    rt = support.Runtime(session, args.mode)
    results = {"host loopback": baseline(args.mb, args.rounds)}
    try:
        for d in args.drivers.split(","):
            results[d] = one_driver(rt, d, args.mb, args.rounds)
    finally:
        left = rt.teardown()
        session.close()
        if left:
            print("leftovers (cleaned):", *left, sep="\n  ", file=sys.stderr)
    who = rt.user.name
    print(f"hako networking benchmark ({args.mode}, as {who}; {args.mb} MiB per transfer, "
          f"{args.rounds} requests; kernel {os.uname().release})")
    print(f"{'path':<15} {'host->ctr MB/s':>15} {'ctr->host MB/s':>15} "
          f"{'req median ms':>14} {'req p90 ms':>11} {'hako run -d s':>14}")
    for name, r in results.items():
        lat = sorted(r["lat"])
        p90 = lat[int(len(lat) * 0.9) - 1]
        run = f"{r['run']:.3f}" if "run" in r else "-"
        print(f"{name:<15} {r['in']:>15.0f} {r['out']:>15.0f} "
              f"{statistics.median(lat) * 1000:>14.3f} {p90 * 1000:>11.3f} {run:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
