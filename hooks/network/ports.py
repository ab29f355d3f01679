"""Port forwards: ``io.hako.network.ports`` parsed, and the host ports checked free
before anything starts (the helpers forward them: slirp4netns.py, pasta.py).
"""

from __future__ import annotations

from hooks.network.common import ANN_PORTS, PORT_FORMAT, NetworkError


class Port:
    __slots__ = ("host_ip", "host_port", "container_port", "proto", "text")

    def __init__(self, host_ip: str, host_port: int, container_port: int, proto: str,
                 text: str) -> None:
        self.host_ip = host_ip  # "" = every address
        self.host_port = host_port
        self.container_port = container_port
        self.proto = proto
        self.text = text

    def __repr__(self) -> str:
        return f"Port({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Port) and self._key() == other._key()

    def _key(self) -> tuple:
        return (self.host_ip, self.host_port, self.container_port, self.proto)


def _bad_port(text: str) -> NetworkError:
    return NetworkError(f'{ANN_PORTS}: "{text}": expected {PORT_FORMAT}')


def _port_number(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise _bad_port(whole)
    n = int(text)
    if not 1 <= n <= 65535:
        raise NetworkError(f'{ANN_PORTS}: "{whole}": port {n} is out of range (1-65535)')
    return n


def parse_port(text: str) -> Port:
    """One ``[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]``."""
    import ipaddress
    whole = text
    s = text.strip()
    proto = "tcp"
    if "/" in s:
        s, _, proto = s.rpartition("/")
        if proto not in ("tcp", "udp"):
            raise _bad_port(whole)
    host_ip = ""
    if s.startswith("["):  # [v6]:host:container
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":":
            raise _bad_port(whole)
        host_ip, s = s[1:end], s[end + 2:]
        parts = s.split(":")
        if len(parts) != 2:
            raise _bad_port(whole)
    else:
        parts = s.rsplit(":", 2)
        if len(parts) == 3:
            host_ip = parts.pop(0)
            if not host_ip:
                raise _bad_port(whole)
        elif len(parts) != 2:
            raise _bad_port(whole)
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise NetworkError(f'{ANN_PORTS}: "{whole}": {host_ip!r} is not an IP '
                               f"address") from None
    host_port = _port_number(parts[0], whole)
    container_port = _port_number(parts[1], whole)
    return Port(host_ip, host_port, container_port, proto, whole.strip())


def parse_ports(text: str) -> list[Port]:
    ports: list[Port] = []
    seen: dict[tuple, str] = {}
    for item in text.split(","):
        if not item.strip():
            if text.strip():
                raise _bad_port(item)
            continue
        p = parse_port(item)
        key = (p.host_ip, p.host_port, p.proto)
        if key in seen:
            raise NetworkError(f'{ANN_PORTS}: "{p.text}": host port {p.host_port}/{p.proto} '
                               f'is already forwarded by "{seen[key]}"')
        seen[key] = p.text
        ports.append(p)
    return ports


def check_ports_free(ports: list[Port]) -> None:
    """Bind every host port once, as the helper will, to fail before anything starts."""
    import errno
    import socket
    for p in ports:
        ip = p.host_ip or "0.0.0.0"
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        typ = socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(fam, typ)
        try:
            if p.proto == "tcp":  # as the helpers do: a TIME_WAIT leftover is no conflict
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, p.host_port))
            if p.proto == "tcp":
                s.listen(1)
        except OSError as e:
            where = f'{ANN_PORTS}: "{p.text}"'
            if e.errno == errno.EADDRINUSE:
                raise NetworkError(f"{where}: host port {p.host_port}/{p.proto} is already "
                                   f"in use") from None
            if e.errno == errno.EACCES:
                raise NetworkError(f"{where}: may not bind host port {p.host_port} "
                                   f"(ports below net.ipv4.ip_unprivileged_port_start need "
                                   f"privileges)") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise NetworkError(f"{where}: {ip} is not an address of this host") from None
            raise NetworkError(f"{where}: cannot bind host port {p.host_port}: "
                               f"{e.strerror}") from None
        finally:
            s.close()
