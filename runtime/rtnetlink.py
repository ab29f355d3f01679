"""rtnetlink on a raw AF_NETLINK socket: the few link and address messages
``linux.netDevices`` needs (runtime/netdevices.py), and nothing else.

The encoding (``message``, ``attr``, ``ifinfo``, ``ifaddr``) and decoding
(``messages``, ``attrs``, ``Link.parse``, ``Addr.parse``) are pure functions,
testable without root; ``Route`` is the socket. Imported only by a create
whose config moves devices: ``socket`` costs the default path ~10 ms.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Iterator

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_ADDRESS, IFLA_IFNAME, IFLA_NET_NS_FD = 1, 3, 28
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")     # nlmsghdr: len, type, flags, seq, pid
_RTA = struct.Struct("=HH")        # rtattr: len, type
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index


def _pad(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    n = _RTA.size + len(payload)
    return _RTA.pack(n, kind) + payload + b"\0" * (_pad(n) - n)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def ifaddr(family: int, prefixlen: int, scope: int, index: int, flags: int = 0) -> bytes:
    return _IFADDR.pack(family, prefixlen, flags, scope, index)


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each netlink message in ``data``."""
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, flags, seq, _ = _HDR.unpack_from(data, off)
        if length < _HDR.size or off + length > len(data):
            raise ValueError(f"netlink: truncated message (length {length})")
        yield kind, flags, seq, data[off + _HDR.size:off + length]
        off += _pad(length)


def attrs(data: bytes) -> dict[int, bytes]:
    """type -> payload of the rtattrs in ``data`` (the last one of a type wins)."""
    out: dict[int, bytes] = {}
    off = 0
    while off + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, off)
        if length < _RTA.size or off + length > len(data):
            break
        out[kind & 0x3FFF] = data[off + _RTA.size:off + length]  # without NLA_F_* bits
        off += _pad(length)
    return out


def _cstr(b: bytes | None) -> str:
    return (b or b"").split(b"\0", 1)[0].decode(errors="replace")


class Link:
    """What a device is known by: its index, name, flags and hardware address."""

    def __init__(self, index: int, name: str, flags: int, hwaddr: bytes) -> None:
        self.index, self.name, self.flags, self.hwaddr = index, name, flags, hwaddr

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @classmethod
    def parse(cls, payload: bytes) -> "Link":
        _, _, index, flags, _ = _IFINFO.unpack_from(payload)
        a = attrs(payload[_IFINFO.size:])
        return cls(index, _cstr(a.get(IFLA_IFNAME)), flags, a.get(IFLA_ADDRESS, b""))


class Addr:
    """One address of a device, as RTM_GETADDR gives it; ``body`` re-adds it."""

    def __init__(self, family: int, prefixlen: int, flags: int, scope: int, index: int,
                 values: dict[int, bytes]) -> None:
        self.family, self.prefixlen, self.scope, self.index = family, prefixlen, scope, index
        self.flags = flags
        self.values = values  # IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST as given

    @classmethod
    def parse(cls, payload: bytes) -> "Addr":
        family, prefixlen, flags, scope, index = _IFADDR.unpack_from(payload)
        a = attrs(payload[_IFADDR.size:])
        if IFA_FLAGS in a:  # the 32-bit flags, when the kernel sends them
            flags |= struct.unpack("=I", a[IFA_FLAGS][:4])[0]
        keep = {k: v for k, v in a.items() if k in (IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST)}
        return cls(family, prefixlen, flags, scope, index, keep)

    @property
    def permanent_global(self) -> bool:
        """What the spec says moves with the device (RFC 3549 2.3.3.2)."""
        return bool(self.flags & IFA_F_PERMANENT) and self.scope == RT_SCOPE_UNIVERSE

    def body(self, index: int) -> bytes:
        """RTM_NEWADDR's body for this address on device ``index``: address,
        prefix, scope and broadcast; no label (it names the old device)."""
        return ifaddr(self.family, self.prefixlen, self.scope, index) + b"".join(
            attr(k, self.values[k]) for k in (IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST)
            if k in self.values)

    def __str__(self) -> str:
        raw = self.values.get(IFA_LOCAL) or self.values.get(IFA_ADDRESS) or b""
        try:
            return f"{socket.inet_ntop(self.family, raw)}/{self.prefixlen}"
        except (OSError, ValueError):
            return f"{raw.hex()}/{self.prefixlen}"


def ack_error(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR payload (0: an acknowledgement)."""
    return -struct.unpack_from("=i", payload)[0]


class Route:
    """A NETLINK_ROUTE socket in the network namespace it was made in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  0)  # NETLINK_ROUTE
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Route":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, kind: int, body: bytes, flags: int = NLM_F_ACK) -> list[bytes]:
        """Send one request; the payloads of its answers (a dump's parts, or
        none for an acknowledged change). A kernel error is an OSError."""
        self.seq += 1
        self.sock.send(message(kind, NLM_F_REQUEST | flags, self.seq, body))
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise OSError(5, os.strerror(5))  # EIO: the socket closed
            for mtype, mflags, seq, payload in messages(data):
                if seq != self.seq:
                    continue  # an answer to an earlier request
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = ack_error(payload)
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                out.append(payload)
                if not mflags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return out

    def link(self, name: str) -> Link:
        """The device called ``name`` here (ENODEV when there is none)."""
        return Link.parse(self.request(RTM_GETLINK, ifinfo() + attr_str(IFLA_IFNAME, name),
                                       flags=0)[0])

    def links(self) -> list[Link]:
        return [Link.parse(p) for p in self.request(RTM_GETLINK, ifinfo(), flags=NLM_F_DUMP)]

    def addresses(self, index: int) -> list[Addr]:
        dump = self.request(RTM_GETADDR, ifaddr(socket.AF_UNSPEC, 0, 0, 0), flags=NLM_F_DUMP)
        return [a for a in map(Addr.parse, dump) if a.index == index]

    def set_up(self, index: int, up: bool) -> None:
        self.request(RTM_NEWLINK, ifinfo(index, IFF_UP if up else 0, IFF_UP))

    def move(self, index: int, name: str, netns_fd: int) -> None:
        """Into the network namespace of ``netns_fd``, called ``name`` there,
        in one message: the name is never taken on the wrong side (a name taken
        here does not matter, "%d" picks a free one there). One taken there is
        EEXIST, possibly *after* the move (the kernel moves, then renames)."""
        self.request(RTM_NEWLINK, ifinfo(index) + attr_str(IFLA_IFNAME, name)
                     + attr_u32(IFLA_NET_NS_FD, netns_fd))

    def add_address(self, index: int, addr: Addr) -> None:
        self.request(RTM_NEWADDR, addr.body(index), flags=NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
