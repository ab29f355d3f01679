"""The annotations of a config turned into validated :class:`Options`.
"""

from __future__ import annotations

from hooks.network.common import (
    ANN_DNS, ANN_DRIVER, ANN_LOOPBACK, ANN_MTU, ANN_PORTS, DEFAULT_MTU, DNS_IP, DRIVERS, KNOWN,
    PREFIX, NetworkError,
)
from hooks.network.ports import Port, parse_ports


class Options:
    """What the annotations ask for, validated."""

    def __init__(self, driver: str = "slirp4netns", ports: list[Port] | None = None,
                 host_loopback: bool = False, mtu: int = DEFAULT_MTU,
                 dns: str | None = None) -> None:
        self.driver = driver
        self.ports = ports or []
        self.host_loopback = host_loopback
        self.mtu = mtu
        self.dns = dns  # None: the helper's forwarder (DNS_IP)

    @property
    def resolver(self) -> str:
        return self.dns or DNS_IP


def wanted(annotations: dict | None) -> bool:
    """Does the config ask for networking? (cheap: no parsing)"""
    return bool(annotations) and any(k.startswith(PREFIX) for k in annotations)


def parse_annotations(annotations: dict | None) -> Options | None:
    """The options the annotations ask for; None when they ask for nothing."""
    if not wanted(annotations):
        return None
    assert annotations is not None
    for k in annotations:
        if k.startswith(PREFIX) and k not in KNOWN:
            raise NetworkError(f"annotation {k}: unknown (known: {', '.join(KNOWN)})")
    driver = annotations.get(ANN_DRIVER) or "slirp4netns"
    if driver not in DRIVERS:
        raise NetworkError(f"{ANN_DRIVER}: unknown driver {driver!r} "
                           f"(slirp4netns, pasta or none)")
    ports = parse_ports(annotations.get(ANN_PORTS) or "")
    loop = (annotations.get(ANN_LOOPBACK) or "false").strip().lower()
    if loop not in ("true", "false"):
        raise NetworkError(f"{ANN_LOOPBACK}: {annotations[ANN_LOOPBACK]!r}: expected true or "
                           f"false")
    mtu_text = (annotations.get(ANN_MTU) or str(DEFAULT_MTU)).strip()
    top = 65521 if driver == "slirp4netns" else 65520
    if not (mtu_text.isascii() and mtu_text.isdigit()) or not 68 <= int(mtu_text) <= top:
        raise NetworkError(f"{ANN_MTU}: {mtu_text!r}: expected a number from 68 to {top}")
    dns = annotations.get(ANN_DNS)
    if dns is not None:
        import ipaddress
        try:
            dns = str(ipaddress.ip_address(dns.strip()))
        except ValueError:
            raise NetworkError(f"{ANN_DNS}: {dns!r} is not an IP address") from None
    if driver == "none" and ports:
        raise NetworkError(f"{ANN_PORTS}: driver none has no ports to forward (use "
                           f"slirp4netns or pasta)")
    return Options(driver, ports, loop == "true", int(mtu_text), dns)
