"""Link layers down to IP: Ethernet, 802.1Q VLAN, Linux cooked v1 and v2 (what `tcpdump -i any`
writes), raw IP, BSD loopback — with IPv4 and IPv6 — give the same exchanges."""

from __future__ import annotations

import struct

import pytest
from meshscope.decoders.link_layers import LINKTYPE_LINUX_SLL2, LINKTYPE_NULL, locate_ip
from meshscope.decoders.read import read_exchanges

from tests.decoders.capture_builders import LINKS, Conversation, http_request, http_response, write


@pytest.mark.parametrize("backend", ["dpkt", "scapy"])
@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("v6", [False, True])
def test_every_link_type_and_ip_version(tmp_path, backend, link, v6):
    client, server = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    c = Conversation(client=client, server=server).handshake()
    c.send(True, http_request("GET", "/linked", x_request_id="rid"))
    c.send(False, http_response(200, b"hello"))
    stream, report = read_exchanges(write(tmp_path / f"{link}.pcap", c.close().packets, link), backend)
    exs = list(stream)
    assert [(e.uri, e.status, e.request_id) for e in exs] == [("/linked", 200, "rid")]
    assert exs[0].conn.src == client and exs[0].conn.handshake_seen
    assert exs[0].conn.interface == ("7" if link == "sll2" else None)  # SLL2 carries the ifindex
    assert not report.damage


def test_locate_ip_edge_cases():
    ipv4 = bytes([0x45]) + bytes(19)
    sll2 = struct.pack("!HHIHBB8s", 0x86DD, 0, 3, 1, 0, 6, b"") + bytes([0x60]) + bytes(39)
    assert locate_ip(LINKTYPE_LINUX_SLL2, sll2) == (20, 3)
    assert locate_ip(LINKTYPE_NULL, struct.pack(">I", 2) + ipv4) == (4, None)  # big-endian capturer
    assert locate_ip(LINKTYPE_NULL, struct.pack("<I", 24) + ipv4) == (4, None)  # AF_INET6 on NetBSD
    assert locate_ip(1, b"\x00" * 12 + b"\x81\x00\x00\x2a\x81\x00\x00\x2b\x08\x00" + ipv4) == (22, None)
    assert locate_ip(1, b"\x00" * 12 + b"\x08\x06" + bytes(28)) is None  # ARP
    assert locate_ip(1, b"\x00" * 5) is None
