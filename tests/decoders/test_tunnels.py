"""Tunnels as access and overlay networks send them (PPPoE, L2TPv2/v3, GRE, PPTP, VXLAN, Geneve,
nested), scapy-crafted: every backend finds the inner connections with their INNER addresses and
ports, agrees with the others and with tshark, and counts what it could not decode."""

from __future__ import annotations

import struct

import pytest
from meshscope.decoders.analysis import analyze
from meshscope.decoders.read import read_exchanges
from meshscope.decoders.tunnels import MAX_DEPTH, locate_inner_ip

from tests.conftest import need_binary
from tests.decoders.canonical import canonical
from tests.decoders.capture_builders import Conversation, http_request, http_response
from tests.decoders.tshark_http import tshark_requests
from tests.decoders.tunnel_builders import (
    TUNNELS,
    UNDECODABLE,
    undecodable_frames,
    wrapped,
    write_tunnelled,
)

# tshark learns an L2TPv3 cookie's length only from the control channel, which `ip l2tp` never sends
TSHARK_CANNOT = {"l2tpv3_cookie"}


def _conversations(tunnel: str) -> list:
    """An IPv4 and an IPv6 keep-alive connection (two requests each), wrapped in the tunnel."""
    frames = []
    for n, (client, server) in enumerate((("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2"))):
        c = Conversation(client=client, server=server, cport=40000 + n, t=1_700_000_000.0 + n).handshake()
        c.send(True, http_request("GET", f"/{tunnel}/{n}", x_request_id=f"{tunnel}-{n}"))
        c.send(False, http_response(200, b"inner"))
        c.send(True, http_request("POST", f"/{tunnel}/{n}/form", body=b"a=1"))
        c.send(False, http_response(503, b"busy"))
        frames += wrapped(c.close().packets, tunnel)
    return frames


KEYS = (("10.0.0.1", 40000, "10.0.0.2", 80), ("fd00::1", 40001, "fd00::2", 80))  # inner, as sent
EXPECTED = sorted((key, uri, status) for n, key in enumerate(KEYS)
                  for uri, status in ((f"/{{t}}/{n}", 200), (f"/{{t}}/{n}/form", 503)))


@pytest.fixture(scope="module")
def tunnelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("tunnels")
    return {t: write_tunnelled(d / f"{t}.pcap", _conversations(t)) for t in TUNNELS}


def _decode(path, backend):
    stream, report = read_exchanges(path, backend)
    return [canonical(e) for e in stream], report


def _facts(path, backend) -> list[tuple]:
    stream, _ = read_exchanges(path, backend)
    return sorted((e.conn.key, e.uri, e.status) for e in stream)


@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
def test_dpkt_and_scapy_find_the_inner_connections(tunnelled, tunnel):
    expected = sorted((k, u.format(t=tunnel), s) for k, u, s in EXPECTED)
    assert _facts(tunnelled[tunnel], "dpkt") == expected
    ours, rep = _decode(tunnelled[tunnel], "dpkt")
    theirs, rep2 = _decode(tunnelled[tunnel], "scapy")
    assert theirs == ours
    assert rep.not_decoded == rep2.not_decoded == {} and not rep.damage and not rep2.damage
    assert (rep.packets, rep.connections, rep.exchanges) == (rep2.packets, rep2.connections, rep2.exchanges)


def _tshark_facts(path) -> list[tuple]:
    """(inner 4-tuple, URI, status) as tshark reads them (an uncaptured L2TPv3 control channel: an
    Ethernet pseudowire, as the pyshark backend tells it)."""
    return [(key, uri, status) for key, _, uri, status in tshark_requests(path, "-d", "l2tp.pw_type==0,eth")]


@pytest.mark.tshark
@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
def test_pyshark_and_tshark_agree(tunnelled, tunnel):
    need_binary("tshark")
    if tunnel in TSHARK_CANNOT:
        assert _tshark_facts(tunnelled[tunnel]) == []  # still so: then tshark learnt it, update this
        return
    ours, rep = _decode(tunnelled[tunnel], "dpkt")
    theirs, rep2 = _decode(tunnelled[tunnel], "pyshark")
    assert theirs == ours  # inner addresses and ports: no mix of an outer address and inner ports
    assert rep2.not_decoded == rep.not_decoded and rep2.damage == rep.damage
    assert _tshark_facts(tunnelled[tunnel]) == _facts(tunnelled[tunnel], "dpkt")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A PPPoE access link as captured: LCP echoes, IPX, discovery, L2TP control and an ARP inside
    VXLAN among the frames of three requests."""
    d = tmp_path_factory.mktemp("mixed")
    frames = []
    for n, t in enumerate(("pppoe", "l2tp", "vxlan_vlan")):
        c = Conversation(cport=41000 + n, t=1_700_000_000.0 + n).handshake()
        c.send(True, http_request("GET", f"/{t}"))
        c.send(False, http_response(204, b""))
        frames += wrapped(c.close().packets, t)
    return write_tunnelled(d / "mixed.pcap", frames + undecodable_frames(1_700_000_000.5))


@pytest.mark.parametrize("backend", ["dpkt", "scapy", pytest.param("pyshark", marks=pytest.mark.tshark)])
def test_what_is_not_decoded_is_counted_by_what_stopped_it(mixed, backend):
    if backend == "pyshark":
        need_binary("tshark")
    stream, report = read_exchanges(mixed, backend)
    assert sorted(e.uri for e in stream) == ["/l2tp", "/pppoe", "/vxlan_vlan"]  # none of 3 lost
    assert report.not_decoded == UNDECODABLE
    assert list(report.not_decoded) == ["PPP LCP", "IPX", "IPv4 fragment", "ARP", "L2TP control",
                                        "PPPoE discovery"]


def test_two_workers_count_what_is_not_decoded_once(mixed):
    one, two = analyze([mixed], workers=1), analyze([mixed], workers=2)
    assert one.reports[0].not_decoded == two.reports[0].not_decoded == UNDECODABLE
    assert sorted(e.uri for e in two.exchanges) == ["/l2tp", "/pppoe", "/vxlan_vlan"]


def test_the_cli_names_what_was_not_decoded(mixed, capsys):
    from meshscope.cli import main

    assert main(["pcap", "analyze", str(mixed)]) == 0
    err = capsys.readouterr().err
    assert ("mixed.pcap: not decoded: PPP LCP 3 frames, IPX 2 frames, IPv4 fragment 2 frames, ARP 1 frame, "
            "L2TP control 1 frame, PPPoE discovery 1 frame") in err


ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"


def _ipv4(proto: int, payload: bytes, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0,
                       bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + payload


TCP_SYN = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 1024, 0, 0)


@pytest.mark.parametrize(("frame", "expected", "counted"), [
    (ETH + b"\x08\x00" + _ipv4(6, TCP_SYN), (14, None), {}),
    (ETH + b"\x08\x00" + _ipv4(4, _ipv4(6, TCP_SYN)), (34, None), {}),  # IP in IP (Calico)
    (ETH + b"\x08\x00" + _ipv4(1, b"\x08\x00" + bytes(6)), None, {"ICMP": 1}),
    (ETH + b"\x08\x00" + _ipv4(47, b"\x00\x00\x08\x00" + _ipv4(6, TCP_SYN), frag=0x2000), None,
     {"IPv4 fragment": 1}),
    (ETH + b"\x08\x00" + _ipv4(47, b"\x40\x00\x08\x00" + bytes(8)), None, {"GRE with source routing": 1}),
    (ETH + b"\x08\x00" + _ipv4(47, b"\x00\x00\x88\xbe" + bytes(30)), None, {"ERSPAN": 1}),
    (ETH + b"\x08\x00" + _ipv4(47, b"\x00\x00"), None, {"GRE (cut short)": 1}),
    (ETH + b"\x08\x00" + _ipv4(17, struct.pack("!HHHH", 1, 4789, 30, 0) + bytes(22)), None,
     {"VXLAN without a VNI": 1}),
    (ETH + b"\x08\x00" + _ipv4(17, struct.pack("!HHHH", 1, 6081, 16, 0) + b"\x80" + bytes(7)), None,
     {"Geneve version 2": 1}),
    (ETH + b"\x08\x00" + _ipv4(115, bytes(8)), None, {"L2TPv3 control": 1}),
    (ETH + b"\x08\x00" + _ipv4(115, b"\x00\x00\x00\x05" + bytes(40)), None,
     {"L2TPv3 pseudowire not Ethernet": 1}),
    (ETH + b"\x88\x64\x11\x00\x12\x34\x00\x02" + b"\x21" + _ipv4(6, TCP_SYN), (21, None), {}),  # 1-byte PPP
    (ETH + b"\x88\x64\x11\x00", None, {"PPPoE (cut short)": 1}),
    (ETH + b"\x00\x26" + b"\xaa\xaa\x03" + bytes(35), None, {"802.3 LLC": 1}),
    (ETH + b"\x88\xcc" + bytes(30), None, {"LLDP": 1}),
    (ETH + b"\x12\x34" + bytes(30), None, {"ethertype 0x1234": 1}),
    (b"\x00" * 8, None, {"ethernet (cut short)": 1}),
])
def test_locate_inner_ip(frame, expected, counted):
    seen: dict[str, int] = {}
    assert locate_inner_ip(1, frame, seen) == expected
    assert seen == counted


def test_a_loop_of_encapsulations_stops():
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 1, 0, 64, 4, 0, bytes(4), bytes(4))  # IP in IP
    ipip = ETH + b"\x08\x00" + header * (MAX_DEPTH + 2)
    seen: dict[str, int] = {}
    assert locate_inner_ip(1, ipip, seen) is None
    assert seen == {f"more than {MAX_DEPTH} encapsulations": 1}


def test_unsupported_link_types_are_counted_by_name():
    seen: dict[str, int] = {}
    assert locate_inner_ip(147, b"\x00" * 40, seen) is None
    assert locate_inner_ip(0, b"\x07\x00\x00\x00" + bytes(20), seen) is None  # null, AF 7
    assert seen == {"link type linktype-147": 1, "null address family 7": 1}
