"""rtnetlink encoding and decoding (runtime/rtnetlink.py) and the name rules
of linux.netDevices (runtime/netdevices.py), without root or a socket."""

from __future__ import annotations

import socket
import struct

import pytest

from runtime import rtnetlink as R
from runtime.errors import HakoError
from runtime.netdevices import name_problem, pairs


def test_attr_is_padded_to_four_bytes_with_its_unpadded_length():
    a = R.attr_str(R.IFLA_IFNAME, "eth9")  # "eth9\0": 5 bytes
    assert struct.unpack_from("=HH", a) == (4 + 5, R.IFLA_IFNAME)
    assert len(a) == 12 and a[4:9] == b"eth9\0" and a[9:] == b"\0\0\0"
    assert R.attr_u32(R.IFLA_NET_NS_FD, 7) == struct.pack("=HHI", 8, R.IFLA_NET_NS_FD, 7)


def test_move_message_carries_index_name_and_netns_fd_together():
    body = R.ifinfo(5) + R.attr_str(R.IFLA_IFNAME, "c0") + R.attr_u32(R.IFLA_NET_NS_FD, 9)
    msg = R.message(R.RTM_NEWLINK, R.NLM_F_REQUEST | R.NLM_F_ACK, 3, body)
    [(kind, flags, seq, payload)] = list(R.messages(msg))
    assert (kind, flags, seq) == (R.RTM_NEWLINK, R.NLM_F_REQUEST | R.NLM_F_ACK, 3)
    assert struct.unpack_from("=I", msg)[0] == len(msg) == 16 + 16 + 8 + 8
    link = R.Link.parse(payload)
    assert link.index == 5 and link.name == "c0"
    assert struct.unpack("=I", R.attrs(payload[16:])[R.IFLA_NET_NS_FD])[0] == 9


def test_set_up_changes_only_the_up_flag():
    family, index, flags, change = struct.unpack("=BxxxiII", R.ifinfo(4, R.IFF_UP, R.IFF_UP))
    assert (family, index, flags, change) == (socket.AF_UNSPEC, 4, 1, 1)


def _newaddr(family, prefix, flags, scope, index, values, ext_flags=None):
    body = R.ifaddr(family, prefix, scope, index, flags)
    body += b"".join(R.attr(k, v) for k, v in values.items())
    if ext_flags is not None:
        body += R.attr_u32(R.IFA_FLAGS, ext_flags)
    return body


def test_address_decoding_and_what_moves():
    v4 = socket.inet_aton("198.18.1.2")
    perm = R.Addr.parse(_newaddr(socket.AF_INET, 24, R.IFA_F_PERMANENT, 0, 7,
                                 {R.IFA_ADDRESS: v4, R.IFA_LOCAL: v4, 3: b"eth9\0"}))
    assert perm.permanent_global and perm.index == 7 and str(perm) == "198.18.1.2/24"
    assert 3 not in perm.values  # the label names the old device: never re-added
    dynamic = R.Addr.parse(_newaddr(socket.AF_INET, 24, 0, 0, 7, {R.IFA_LOCAL: v4}))
    assert not dynamic.permanent_global
    host = R.Addr.parse(_newaddr(socket.AF_INET, 8, R.IFA_F_PERMANENT, 254, 7,
                                 {R.IFA_LOCAL: v4}))
    assert not host.permanent_global  # scope host stays behind
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    ext = R.Addr.parse(_newaddr(socket.AF_INET6, 64, 0, 0, 7, {R.IFA_ADDRESS: v6},
                                ext_flags=R.IFA_F_PERMANENT))
    assert ext.permanent_global and str(ext) == "2001:db8::2/64"


def test_address_is_re_added_on_the_new_index_without_its_label():
    v4 = socket.inet_aton("198.18.1.2")
    brd = socket.inet_aton("198.18.1.255")
    a = R.Addr.parse(_newaddr(socket.AF_INET, 24, R.IFA_F_PERMANENT, 0, 7,
                              {R.IFA_ADDRESS: v4, R.IFA_LOCAL: v4, R.IFA_BROADCAST: brd,
                               3: b"eth9\0"}))
    again = R.Addr.parse(a.body(12))
    assert (again.family, again.prefixlen, again.scope, again.index) == (socket.AF_INET, 24, 0, 12)
    assert again.values == {R.IFA_ADDRESS: v4, R.IFA_LOCAL: v4, R.IFA_BROADCAST: brd}
    assert again.flags == 0  # the kernel makes it permanent itself


def test_messages_splits_a_dump_and_refuses_a_truncated_one():
    one = R.message(R.RTM_NEWLINK, R.NLM_F_MULTI, 1, R.ifinfo(1) + R.attr_str(R.IFLA_IFNAME, "lo"))
    done = R.message(R.NLMSG_DONE, R.NLM_F_MULTI, 1, b"\0\0\0\0")
    parts = list(R.messages(one + one + done))
    assert [p[0] for p in parts] == [R.RTM_NEWLINK, R.RTM_NEWLINK, R.NLMSG_DONE]
    with pytest.raises(ValueError):
        list(R.messages(one[:-4]))  # the header promises 4 bytes more


def test_error_payload_gives_the_errno():
    assert R.ack_error(struct.pack("=i", -17) + bytes(16)) == 17
    assert R.ack_error(struct.pack("=i", 0) + bytes(16)) == 0


@pytest.mark.parametrize("name,ok", [
    ("eth0", True), ("x" * 15, True), ("c%d", True),
    ("", False), ("x" * 16, False), (".", False), ("..", False), ("a/b", False),
    ("a:b", False), ("a b", False), ("a\tb", False), (5, False),
])
def test_device_name_rules_are_the_kernels(name, ok):
    assert (name_problem(name) is None) == ok


def test_pairs_default_to_the_host_name_and_refuse_a_name_twice():
    spec = {"linux": {"netDevices": {"eth1": {}, "eth2": {"name": "c2"}, "eth3": None}}}
    assert pairs(spec) == [("eth1", "eth1"), ("eth2", "c2"), ("eth3", "eth3")]
    with pytest.raises(HakoError, match=r'linux.netDevices\["eth2"\].name: .* also the name'):
        pairs({"linux": {"netDevices": {"eth1": {"name": "c"}, "eth2": {"name": "c"}}}})
    with pytest.raises(HakoError, match=r'linux.netDevices\["a/b"\]: the device name'):
        pairs({"linux": {"netDevices": {"a/b": {}}}})
