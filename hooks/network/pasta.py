"""The pasta driver (package passt): its command line, port forwards included.
"""

from __future__ import annotations

import os

from hooks.network.common import (
    DNS_IP, GATEWAY, GUEST_IP, IFNAME, NETMASK_BITS, PASTA_LOG,
)
from hooks.network.options import Options


def argv(opts: Options, helper: str, state_dir: str, netfd: int, userfd: int,
         ready_w: int) -> list[str]:
    """pasta --config-net for the namespaces open on *netfd* (and *userfd*): its
    pid written to *ready_w* once the interface is configured, ports as flags."""
    argv = [helper, "--config-net", "--foreground", "--quiet", "--ipv4-only",
            "--ns-ifname", IFNAME, "--address", GUEST_IP, "--netmask", str(NETMASK_BITS),
            "--gateway", GATEWAY, "--dns-forward", DNS_IP, "--mtu", str(opts.mtu),
            "--log-file", os.path.join(state_dir, PASTA_LOG),
            "--pid", f"/proc/self/fd/{ready_w}", "-T", "none", "-U", "none"]
    for proto, flag in (("tcp", "-t"), ("udp", "-u")):
        specs = [f"{p.host_ip + '/' if p.host_ip else ''}{p.host_port}:{p.container_port}"
                 for p in opts.ports if p.proto == proto]
        for s in specs or ["none"]:
            argv += [flag, s]
    if not opts.host_loopback:
        argv.append("--no-map-gw")
    if os.geteuid() == 0:
        argv += ["--runas", "0:0"]  # as nobody it could not enter the namespace
    if userfd >= 0:
        argv += ["--userns", f"/proc/self/fd/{userfd}"]
    return argv + ["--netns", f"/proc/self/fd/{netfd}"]
