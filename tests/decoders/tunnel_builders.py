"""Scapy-crafted tunnels around the IP packets of a Conversation: each function wraps one inner IP
packet as an overlay or access network would send it, outermost link layer Ethernet, keeping the
packet's timestamp. Outer addresses are fixed and differ from any inner one, so a backend that
mixes the two layers shows it."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, GRE_PPTP, Dot1Q, Ether
from scapy.layers.l2tp import L2TP
from scapy.layers.ppp import PPP, PPPoE, PPPoED
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

OUTER_A, OUTER_B = "192.0.2.10", "192.0.2.20"
OUTER6_A, OUTER6_B = "2001:db8::a", "2001:db8::b"
MAC_A, MAC_B = "02:00:00:00:0a:01", "02:00:00:00:0a:02"


def _ether() -> Packet:
    return Ether(src=MAC_A, dst=MAC_B)


def _ppp_proto(inner: Packet) -> int:
    return 0x0057 if isinstance(inner, IPv6) else 0x0021


def _ethertype(inner: Packet) -> int:
    return 0x86DD if isinstance(inner, IPv6) else 0x0800


def pppoe(inner: Packet) -> Packet:
    """A PPPoE session frame (RFC 2516): Ethernet 0x8864, session header, PPP."""
    return _ether() / PPPoE(sessionid=0x1234) / PPP(proto=_ppp_proto(inner)) / inner


def l2tp(inner: Packet) -> Packet:
    """An L2TPv2 data message over UDP 1701 with length and sequence numbers, then HDLC-framed PPP."""
    hdr = L2TP(hdr="length+sequence", tunnel_id=7, session_id=9, ns=1, nr=2)
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=1701, dport=1701) / hdr
            / Raw(b"\xff\x03" + struct.pack("!H", _ppp_proto(inner))) / inner)


def l2tpv3(inner: Packet, cookie: bytes = b"") -> Packet:
    """An L2TPv3 Ethernet pseudowire over IP protocol 115 as `ip l2tp` sets one up (no control
    channel): session id, the cookie if any, Ethernet."""
    head = struct.pack("!I", 0x2A) + cookie
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B, proto=115) / Raw(head)
            / Ether(src="02:00:00:00:0b:01", dst="02:00:00:00:0b:02", type=_ethertype(inner)) / inner)


def l2tpv3_cookie(inner: Packet) -> Packet:
    """The same with a 4-byte cookie, whose length only the (uncaptured) configuration tells."""
    return l2tpv3(inner, bytes.fromhex("c00c1e55"))


def l2tpv3_udp(inner: Packet) -> Packet:
    """L2TPv3 over UDP 1701 (RFC 3931 section 4.1.2.2): version 3, reserved, session id, Ethernet."""
    head = b"\x00\x03\x00\x00" + struct.pack("!I", 0x2B)
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=1701, dport=1701) / Raw(head)
            / Ether(src="02:00:00:00:0b:01", dst="02:00:00:00:0b:02", type=_ethertype(inner)) / inner)


def gre(inner: Packet) -> Packet:
    """GRE over IPv4 with a key and a sequence number, carrying the IP packet directly."""
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B)
            / GRE(key_present=1, key=0xBEEF, seqnum_present=1, sequence_number=5, proto=_ethertype(inner))
            / inner)


def gre_teb(inner: Packet) -> Packet:
    """GRE over IPv6 carrying Ethernet (transparent Ethernet bridging, as gretap sends it)."""
    return (_ether() / IPv6(src=OUTER6_A, dst=OUTER6_B) / GRE(proto=0x6558)
            / Ether(src="02:00:00:00:0c:01", dst="02:00:00:00:0c:02", type=_ethertype(inner)) / inner)


def pptp(inner: Packet) -> Packet:
    """PPTP's enhanced GRE (version 1, key and sequence number) carrying PPP."""
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B)
            / GRE_PPTP(seqnum_present=1, sequence_number=3, call_id=11) / PPP(proto=_ppp_proto(inner))
            / inner)


def vxlan_vlan(inner: Packet) -> Packet:
    """VXLAN (UDP 4789) carrying an 802.1Q-tagged Ethernet frame."""
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=49152, dport=4789) / VXLAN(vni=42, flags=0x08)
            / Ether(src="02:00:00:00:0d:01", dst="02:00:00:00:0d:02") / Dot1Q(vlan=7, type=_ethertype(inner))
            / inner)


def geneve(inner: Packet) -> Packet:
    """Geneve (UDP 6081) with an 8-byte option, carrying Ethernet."""
    return (_ether() / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=49153, dport=6081)
            / GENEVE(vni=77, proto=0x6558, optionlen=2, options=bytes.fromhex("0103010100000001"))
            / Ether(src="02:00:00:00:0e:01", dst="02:00:00:00:0e:02", type=_ethertype(inner)) / inner)


def nested(inner: Packet) -> Packet:
    """Four deep: IPv6 underlay, GRE, IPv4, VXLAN, VLAN-tagged Ethernet, PPPoE session, PPP."""
    return (_ether() / IPv6(src=OUTER6_A, dst=OUTER6_B) / GRE(proto=0x0800) / IP(src="198.51.100.1",
            dst="198.51.100.2") / UDP(sport=50000, dport=4789) / VXLAN(vni=5, flags=0x08)
            / Ether(src="02:00:00:00:0f:01", dst="02:00:00:00:0f:02") / Dot1Q(vlan=9, type=0x8864)
            / PPPoE(sessionid=3) / PPP(proto=_ppp_proto(inner)) / inner)


TUNNELS: dict[str, Callable[[Packet], Packet]] = {
    "pppoe": pppoe, "l2tp": l2tp, "l2tpv3": l2tpv3, "l2tpv3_cookie": l2tpv3_cookie,
    "l2tpv3_udp": l2tpv3_udp, "gre": gre,
    "gre_teb": gre_teb, "pptp": pptp, "vxlan_vlan": vxlan_vlan, "geneve": geneve, "nested": nested,
}


def wrapped(packets: list[Packet], tunnel: str) -> list[Packet]:
    out = []
    for p in packets:
        f = TUNNELS[tunnel](p)
        f.time = p.time
        out.append(f)
    return out


def undecodable_frames(t0: float) -> list[Packet]:
    """Frames with nothing to analyse inside, as a PPPoE or L2TP link also carries them: 3 PPP LCP
    echoes in a PPPoE session, 2 IPX frames, a PPPoE discovery (PADI), an L2TP control message
    (a hello) and an ARP request inside VXLAN."""
    from scapy.layers.l2 import ARP

    echo = Raw(b"\x09\x01\x00\x08\x00\x00\x00\x00")  # LCP Echo-Request
    frames = [_ether() / PPPoE(sessionid=0x1234) / PPP(proto=0xC021) / echo for _ in range(3)]
    frames += [Ether(src=MAC_A, dst=MAC_B, type=0x8137) / Raw(b"\xff\xff\x00\x1e" + bytes(26))
               for _ in range(2)]
    frames.append(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / PPPoED(code=0x09))
    hello = Raw(b"\x80\x08\x00\x00\x00\x00\x00\x06")  # Message Type AVP: HELLO
    frames.append(_ether() / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=1701, dport=1701)
                  / L2TP(hdr="control+length+sequence", tunnel_id=7) / hello)
    frames.append(_ether() / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=49152, dport=4789)
                  / VXLAN(vni=42, flags=8) / Ether(src="02:00:00:00:0d:01", dst="ff:ff:ff:ff:ff:ff")
                  / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    # a VXLAN packet fragmented by the underlay: the inner TCP segment (a request) is in neither half
    from scapy.layers.inet import TCP, fragment

    big = IP(src=OUTER_A, dst=OUTER_B, id=77) / UDP(sport=49152, dport=4789) / VXLAN(vni=42, flags=8) / Ether(
        src="02:00:00:00:0d:01", dst="02:00:00:00:0d:02") / IP(src="10.0.0.5", dst="10.0.0.6") / TCP(
        sport=43000, dport=80, flags="PA", seq=1) / Raw(b"GET /fragmented HTTP/1.1\r\nHost: f\r\n\r\n")
    frames += [_ether() / part for part in fragment(big, fragsize=96)]
    for i, f in enumerate(frames):
        f.time = t0 + i * 0.0001
    return frames


UNDECODABLE = {"PPP LCP": 3, "IPX": 2, "IPv4 fragment": 2, "PPPoE discovery": 1, "L2TP control": 1, "ARP": 1}


def write_tunnelled(path: Path, frames: list[Packet]) -> Path:
    frames = sorted(frames, key=lambda f: float(f.time))
    wrpcap(str(path), frames, linktype=1)
    return path
