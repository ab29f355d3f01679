"""The slirp4netns driver: its command line, and the port forwards it takes on its
API socket once it runs.
"""

from __future__ import annotations

import json
import os

from hooks.network.common import (
    ANN_PORTS, API_SOCKET, GUEST_IP, IFNAME, READY_TIMEOUT, NetworkError, _short,
)
from hooks.network.options import Options


def argv(opts: Options, helper: str, state_dir: str, pid: int, exit_r: int,
         ready_w: int) -> list[str]:
    """slirp4netns --configure for the namespaces of *pid*: ready on *ready_w*,
    exits when *exit_r* closes, port forwards through its API socket."""
    # the target as a pid (as podman does): with --netns-type=path and
    # --userns-path, --enable-sandbox fails rootless (setegid(0))
    argv = [helper, "--configure", f"--mtu={opts.mtu}", f"--exit-fd={exit_r}",
            f"--ready-fd={ready_w}", "--enable-sandbox", "--enable-seccomp"]
    if not opts.host_loopback:
        argv.append("--disable-host-loopback")
    if opts.ports:
        argv += ["--api-socket", _short(state_dir, API_SOCKET)]
    return argv + [str(pid), IFNAME]


def add_forwards(opts: Options, state_dir: str, helper_alive) -> None:
    """slirp4netns: one add_hostfwd request per port on its API socket."""
    import socket
    import time
    deadline = time.monotonic() + READY_TIMEOUT
    while not os.path.exists(os.path.join(state_dir, API_SOCKET)):
        if not helper_alive():
            raise NetworkError("slirp4netns exited before its API socket appeared")
        if time.monotonic() > deadline:
            raise NetworkError("slirp4netns did not create its API socket in time")
        time.sleep(0.002)
    for p in opts.ports:
        req = {"execute": "add_hostfwd",
               "arguments": {"proto": p.proto, "host_addr": p.host_ip or "0.0.0.0",
                             "host_port": p.host_port, "guest_addr": GUEST_IP,
                             "guest_port": p.container_port}}
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(READY_TIMEOUT)
        try:
            s.connect(_short(state_dir, API_SOCKET))
            s.sendall(json.dumps(req).encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError as e:
            raise NetworkError(f'{ANN_PORTS}: "{p.text}": slirp4netns API: '
                               f"{e.strerror or e}") from None
        finally:
            s.close()
        try:
            reply = json.loads(data.decode() or "{}")
        except ValueError:
            reply = {"error": {"desc": data.decode(errors="replace")[:200]}}
        if "error" in reply or "return" not in reply:
            err = reply.get("error")
            desc = err.get("desc") if isinstance(err, dict) else err
            raise NetworkError(f'{ANN_PORTS}: "{p.text}": slirp4netns refused the forward: '
                               f"{desc or 'no reply'}")
