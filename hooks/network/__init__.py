"""Networking for a container's new network namespace: slirp4netns or pasta.

A pair of OCI hooks (createRuntime + createContainer; standard library only)
that any runtime can run (``python3 hooks/network/__main__.py``), and that hako adds by itself when a config's
annotations ask for networking (``plan()``, called by ``hako create``).

Annotations (config.json ``annotations``; every value is a string)::

    io.hako.network                slirp4netns (default) | pasta | none
    io.hako.network.ports          comma-separated [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]
                                   (HOSTIP default: every address; an IPv6 one may be
                                   written in brackets: [::1]:8080:80)
    io.hako.network.host-loopback  true | false (default false): the gateway 10.0.2.2
                                   leads to the host's 127.0.0.1
    io.hako.network.mtu            68..65520 (default 65520)
    io.hako.network.dns            the resolver address written into the container's
                                   /etc/resolv.conf (default 10.0.2.3, the helper's DNS
                                   forwarder)

Any ``io.hako.network*`` key turns networking on. ``none`` leaves the namespace with
its loopback only (which hako brings up in every new network namespace). Joining
an existing namespace (``linux.namespaces`` entry with a ``path``) is plain OCI and
needs none of this.

Inside, both drivers give the same picture: ``eth0`` 10.0.2.100/24, default route
via 10.0.2.2, DNS forwarder 10.0.2.3, the chosen MTU. With host-loopback false,
slirp4netns refuses connections to 10.0.2.2; pasta (--no-map-gw) then treats
10.0.2.2 as an ordinary outside address instead.

How it runs: two hook phases, because a runtime's init may be non-dumpable while
it is being created (hako's is, against CVE-2019-5736), so that no process of the
same (rootless) user may open its /proc/PID/ns/* from outside:

- ``--phase runtime`` (createRuntime, in the runtime's namespaces): forks the
  *supervisor* (own session, stdio on network.log) that listens on
  ``network.ctl`` in the state directory, and returns at once.
- ``--phase container`` (createContainer, run by the init inside the container's
  namespaces, where it is an ordinary dumpable process): connects to the
  supervisor, which takes its pid from SO_PEERCRED (accepting only children of
  the container's init), opens its namespaces, starts the helper
  (slirp4netns --configure --ready-fd, or pasta --config-net writing its pid
  into an inherited pipe given as --pid /proc/self/fd/N) and answers once the
  interface is configured and the ports are forwarded. So the container's
  process never starts before its network is there.

Lifetime (the helper never outlives the container):

- The supervisor holds a pidfd of the container's init and one of the helper and
  sleeps in poll(): when the init exits (normal exit, SIGKILL, or the init giving
  up because the runtime died mid-create) it stops the helper and exits.
- If the supervisor itself is killed: slirp4netns exits because the supervisor
  held the write end of its --exit-fd pipe; pasta dies of PR_SET_PDEATHSIG.
- ``network.json`` in the state directory records both pids with their start
  times; ``cleanup()`` (hako's delete, or this hook at ``poststop``) kills what is
  still there, checking start times so that a reused pid is never hit.

State directory: hako passes ``--state-dir <container state dir>``; a plain hook
uses ``$XDG_RUNTIME_DIR/hako-network/<id>`` (``/run/hako-network/<id>`` for root)
and removes it when the container is gone; inside a user namespace the
createContainer phase cannot work that out: give every phase the same
``--state-dir``. Files: ``network.json``, ``network.ctl``, ``network.log`` (the
helper's and the supervisor's messages), ``pasta.log``, ``network.sock``
(slirp4netns API socket) and ``resolv.conf`` (written by hako).

As a plain OCI hook for another runtime (paths as the host sees them)::

    "hooks": {
      "createRuntime":   [{"path": "/usr/bin/python3", "args": ["python3",
                           "/path/to/hooks/network/__main__.py", "--state-dir", "/run/user/1000/n1"]}],
      "createContainer": [{"path": "/usr/bin/python3", "args": ["python3",
                           "/path/to/hooks/network/__main__.py", "--phase", "container",
                           "--state-dir", "/run/user/1000/n1"]}],
      "poststop":        [{"path": "/usr/bin/python3", "args": ["python3",
                           "/path/to/hooks/network/__main__.py", "--state-dir", "/run/user/1000/n1"]}]
    }

(without ``--phase`` the status on stdin decides: "stopped" cleans up, anything
else is the runtime phase). A resolv.conf for such a runtime is a mount entry
its config brings; ``plan()`` computes the entries hako adds.

hako's resolv.conf mount carries ``"x-hako-mountpoint": "overlay"``: on a rootfs
without /etc/resolv.conf that cannot take an empty mount point (rootless on a
rootfs owned by someone else, a read-only filesystem), the init makes it in a
read-only overlay of /etc instead of failing (runtime/rootfs/mountpoints.py).

The package, one concern per module: ``common`` (names, NetworkError),
``options`` and ``ports`` (the annotations), ``checks`` (helper, tun),
``plan`` (what hako adds to the config), ``slirp4netns`` and ``pasta`` (the
drivers), ``supervisor`` (start/join and the helper's lifetime), ``state``
(network.json, cleanup), ``hook`` (the command line; ``__main__`` runs it).
"""

from __future__ import annotations

# the API hako, its commands and the tests use, as when this was one module
from hooks.network.checks import check_tun, helper_path
from hooks.network.common import (
    ANN_DNS, ANN_DRIVER, ANN_LOOPBACK, ANN_MTU, ANN_PORTS, API_SOCKET, CTL_SOCKET, DEFAULT_MTU,
    DEFAULT_PATH, DNS_IP, DRIVERS, GATEWAY, GUEST_IP, IFNAME, KNOWN, LOG_FILE, MOUNTPOINT_MARK,
    NETMASK_BITS, OWNED_MARK, PACKAGES, PASTA_LOG, PORT_FORMAT, PREFIX, READY_TIMEOUT,
    RESOLV_FILE, STATE_FILE, STOP_TIMEOUT, NetworkError,
)
from hooks.network.hook import default_state_dir, main
from hooks.network.options import Options, parse_annotations, wanted
from hooks.network.plan import (
    NetworkPlan, configure_spec, helper_python, hook_entries, plan,
)
from hooks.network.ports import Port, check_ports_free, parse_port, parse_ports
from hooks.network.state import _start_time, cleanup
from hooks.network.supervisor import join, start

__all__ = [
    "ANN_DNS", "ANN_DRIVER", "ANN_LOOPBACK", "ANN_MTU", "ANN_PORTS", "API_SOCKET", "CTL_SOCKET",
    "DEFAULT_MTU", "DEFAULT_PATH", "DNS_IP", "DRIVERS", "GATEWAY", "GUEST_IP", "IFNAME", "KNOWN",
    "LOG_FILE", "MOUNTPOINT_MARK", "NETMASK_BITS", "OWNED_MARK", "PACKAGES", "PASTA_LOG",
    "PORT_FORMAT", "PREFIX", "READY_TIMEOUT", "RESOLV_FILE", "STATE_FILE", "STOP_TIMEOUT",
    "NetworkError", "NetworkPlan", "Options", "Port", "_start_time", "check_ports_free",
    "check_tun", "cleanup", "configure_spec", "default_state_dir", "helper_path",
    "helper_python", "hook_entries", "join", "main", "parse_annotations", "parse_port",
    "parse_ports", "plan", "start", "wanted",
]
