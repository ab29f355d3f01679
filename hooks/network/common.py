"""Names shared by every part of the network hook: annotations, addresses, the
files in the state directory, timeouts, and the one error type.

Standard library only: this package also runs as a plain OCI hook, outside hako.
"""

from __future__ import annotations

import os

try:  # inside hako: its one-line error type; as a standalone hook: a plain one
    from runtime.errors import HakoError as _Base
except ImportError:  # pragma: no cover - depends on how the hook is started
    _Base = Exception  # type: ignore[assignment,misc]


PREFIX = "io.hako.network"
ANN_DRIVER = "io.hako.network"
ANN_PORTS = "io.hako.network.ports"
ANN_LOOPBACK = "io.hako.network.host-loopback"
ANN_MTU = "io.hako.network.mtu"
ANN_DNS = "io.hako.network.dns"
KNOWN = (ANN_DRIVER, ANN_PORTS, ANN_LOOPBACK, ANN_MTU, ANN_DNS)

DRIVERS = ("slirp4netns", "pasta", "none")
PACKAGES = {"slirp4netns": "slirp4netns", "pasta": "passt"}
IFNAME = "eth0"
GUEST_IP = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS_IP = "10.0.2.3"
NETMASK_BITS = 24
DEFAULT_MTU = 65520
PORT_FORMAT = "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]"

STATE_FILE = "network.json"
LOG_FILE = "network.log"
PASTA_LOG = "pasta.log"
API_SOCKET = "network.sock"
CTL_SOCKET = "network.ctl"
RESOLV_FILE = "resolv.conf"
OWNED_MARK = ".hako-network-owned"
#: runtime.rootfs.mountpoints.MARK (not imported: this file also runs as a standalone hook)
MOUNTPOINT_MARK = "x-hako-mountpoint"
#: how long the hook waits for the interface and the forwards
READY_TIMEOUT = 15.0
#: how long a helper gets to exit on SIGTERM before SIGKILL
STOP_TIMEOUT = 2.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NetworkError(_Base):
    """A network setup failure; str() is one line."""


def _short(state_dir: str, name: str) -> str:
    """A socket path in *state_dir* as given to bind/connect: relative (the
    caller runs in state_dir) when the absolute one would not fit in sun_path."""
    path = os.path.join(state_dir, name)
    return path if len(path) < 100 else name
