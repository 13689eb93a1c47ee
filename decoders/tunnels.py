"""Down through tunnels to the innermost IP packet: VLAN tags, PPPoE sessions, L2TPv2 and simple
L2TPv3, GRE (IPv4, IPv6, PPP as PPTP sends it, transparent Ethernet bridging), VXLAN, Geneve and
IP-in-IP, nested in any order — so an overlay's connections are analysed with their inner
addresses and ports. Struct-level, on offsets into the one frame (no copies).

Every frame that leads to no IP packet is counted by what stopped it ("PPP LCP", "ARP", "L2TP
control", "ethertype 0x88cc"), as are the innermost IP packets of protocols no analyzer reads
("ICMP"): the report lists them instead of dropping them silently. Ethertypes are the common
currency between layers: GRE and Geneve name their payload by one, PPP's protocol numbers are
mapped to one, and ETH_TEB stands for "an Ethernet frame follows"."""

from __future__ import annotations

from meshscope.decoders.link_layers import ETH_IPV4, ETH_IPV6, ETH_VLAN, FIXED_LAYOUTS, link_payload

ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve)
ETH_PPP = 0x880B  # PPP (GRE version 1, as PPTP sends it)
ETH_PPPOE_DISCOVERY, ETH_PPPOE_SESSION = 0x8863, 0x8864
VXLAN_PORTS = frozenset((4789, 8472))  # IANA's, and the Linux kernel's default (Flannel's)
GENEVE_PORT = 6081
L2TP_PORT = 1701
IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_IPV6, IPPROTO_GRE, IPPROTO_L2TP = 4, 6, 17, 41, 47, 115
IPV6_EXTENSIONS = frozenset((0, 43, 44, 51, 60))  # left to the IPv6 dissector: not counted here
MAX_DEPTH = 8  # encapsulations inside one frame; more is a crafted loop, not a network

ETHERTYPE_NAMES = {
    0x0806: "ARP", 0x8035: "RARP", 0x8137: "IPX", 0x809B: "AppleTalk", 0x88CC: "LLDP", 0x8847: "MPLS",
    0x8848: "MPLS", 0x888E: "EAPOL", 0x8809: "slow protocols (LACP)", 0x88F7: "PTP", 0x8100: "VLAN",
    ETH_PPPOE_DISCOVERY: "PPPoE discovery", 0x88BE: "ERSPAN", 0x22F0: "AVTP", 0x8906: "FCoE",
    0x894F: "NSH", 0x9000: "loopback (CTP)",
}
# PPP protocol numbers (RFC 1661 and the IANA registry): the two we read, then names for the rest
PPP_TO_ETHERTYPE = {0x0021: ETH_IPV4, 0x0057: ETH_IPV6}
PPP_NAMES = {
    0x002B: "IPX", 0x003D: "PPP multilink", 0x00FD: "PPP compressed datagram", 0xC021: "PPP LCP",
    0x8021: "PPP IPCP", 0x8057: "PPP IPV6CP", 0x802B: "PPP IPXCP", 0xC023: "PPP PAP", 0xC223: "PPP CHAP",
    0xC227: "PPP EAP", 0x80FD: "PPP CCP", 0xC025: "PPP LQR",
}
IP_PROTOCOL_NAMES = {
    1: "ICMP", 2: "IGMP", 8: "EGP", 50: "ESP", 51: "AH", 58: "ICMPv6", 59: "IPv6 no next header",
    89: "OSPF", 103: "PIM", 112: "VRRP", 132: "SCTP", 136: "UDP-Lite",
}

Found = tuple[int, int, int | None]  # (ethertype of what is at the offset, offset, Linux ifindex)


def locate_inner_ip(linktype: int, frame: bytes,
                    not_decoded: dict[str, int] | None = None) -> tuple[int, int | None] | None:
    """(offset of the innermost IP header, Linux ifindex of the outer link layer or None), or None
    when the frame leads to no IP packet; then, and for an innermost protocol that is neither TCP
    nor UDP, ``not_decoded[what] += 1``."""
    layout = FIXED_LAYOUTS.get(linktype)
    if layout is not None:  # the common case first, in one test: IPv4 carrying TCP, not fragmented
        et_at, ip, ifindex_at = layout
        if len(frame) >= ip + 20 and frame[et_at] == 8 and frame[et_at + 1] == 0 and frame[ip + 9] == 6 \
                and not (frame[ip + 6] & 0x3F) | frame[ip + 7]:
            return ip, None if ifindex_at is None else int.from_bytes(frame[ifindex_at:ifindex_at + 4], "big")
    found = link_payload(linktype, frame)
    if found.__class__ is str:
        return _count(not_decoded, found)  # type: ignore[arg-type]
    et, off, ifindex = found  # type: ignore[misc]
    for _ in range(MAX_DEPTH):
        if et == ETH_IPV4 or et == ETH_IPV6:
            inner = _ip_tunnel(frame, off, et)
            if inner is None:
                return off, ifindex
        elif et in ETH_VLAN:
            inner = (frame[off + 2] << 8 | frame[off + 3], off + 4) if len(frame) >= off + 4 else \
                "VLAN (cut short)"
        elif et == ETH_TEB:
            inner = (frame[off + 12] << 8 | frame[off + 13], off + 14) if len(frame) >= off + 14 else \
                "inner Ethernet (cut short)"
        elif et == ETH_PPPOE_SESSION:
            inner = _ppp(frame, off + 6, "PPPoE") if len(frame) >= off + 6 else "PPPoE (cut short)"
        elif et == ETH_PPP:
            inner = _ppp(frame, off, "PPP")
        elif et < 0x0600:
            inner = "802.3 LLC"  # an 802.3 length field, not an ethertype: LLC/SNAP, STP, old IPX
        else:
            inner = ETHERTYPE_NAMES.get(et) or f"ethertype 0x{et:04x}"
        if inner.__class__ is str:
            return _count(not_decoded, inner)  # type: ignore[arg-type]
        et, off = inner  # type: ignore[misc]
    return _count(not_decoded, f"more than {MAX_DEPTH} encapsulations")


def _count(not_decoded: dict[str, int] | None, what: str) -> None:
    if not_decoded is not None:
        not_decoded[what] = not_decoded.get(what, 0) + 1
    return None


def _ip_tunnel(frame: bytes, off: int, et: int) -> tuple[int, int] | str | None:
    """The tunnel payload of the IP packet at ``off`` as (ethertype, offset), a string saying why
    it cannot be read, or None for a packet that is not a tunnel (the caller's innermost)."""
    if et == ETH_IPV4:
        if len(frame) < off + 20:
            return None  # too short for IPv4: the TCP code counts it
        hlen = (frame[off] & 15) << 2
        proto = frame[off + 9]
        if (frame[off + 6] & 0x3F) | frame[off + 7]:  # more fragments, or an offset
            return "IPv4 fragment"
        p = off + hlen
        total = (frame[off + 2] << 8) | frame[off + 3]
        end = off + total if total else len(frame)  # 0 with TCP segmentation offload
    else:
        if len(frame) < off + 40:
            return None
        proto = frame[off + 6]
        p = off + 40
        plen = (frame[off + 4] << 8) | frame[off + 5]
        end = p + plen if plen else len(frame)
    if proto == IPPROTO_TCP:
        return None
    if proto == IPPROTO_UDP:
        if len(frame) < p + 8:
            return None
        sport = (frame[p] << 8) | frame[p + 1]
        dport = (frame[p + 2] << 8) | frame[p + 3]
        if dport in VXLAN_PORTS:
            return _vxlan(frame, p + 8)
        if dport == GENEVE_PORT:
            return _geneve(frame, p + 8)
        if dport == L2TP_PORT or sport == L2TP_PORT:
            return _l2tp_udp(frame, p + 8)
        return None
    if proto == IPPROTO_GRE:
        return _gre(frame, p)
    if proto == IPPROTO_IPIP:
        return ETH_IPV4, p
    if proto == IPPROTO_IPV6:
        return ETH_IPV6, p
    if proto == IPPROTO_L2TP:
        return _l2tpv3(frame, p, min(end, len(frame)), "L2TPv3")
    if proto in IPV6_EXTENSIONS and et == ETH_IPV6:
        return None
    return IP_PROTOCOL_NAMES.get(proto) or f"IP protocol {proto}"


def _vxlan(frame: bytes, p: int) -> tuple[int, int] | str:
    """RFC 7348: 8 bytes (flags with I set, VNI), then an Ethernet frame."""
    if len(frame) < p + 8 + 14:
        return "VXLAN (cut short)"
    if not frame[p] & 0x08:
        return "VXLAN without a VNI"
    return ETH_TEB, p + 8


def _geneve(frame: bytes, p: int) -> tuple[int, int] | str:
    """RFC 8926: version 0, options of 4 × length bytes, the payload named by an ethertype."""
    if len(frame) < p + 8:
        return "Geneve (cut short)"
    if frame[p] >> 6:
        return f"Geneve version {frame[p] >> 6}"
    return (frame[p + 2] << 8) | frame[p + 3], p + 8 + ((frame[p] & 0x3F) << 2)


def _gre(frame: bytes, p: int) -> tuple[int, int] | str:
    """RFC 2784/2890 GRE (checksum, key, sequence number), and RFC 2637's version 1 (PPTP: key,
    sequence and acknowledgement numbers, PPP payload)."""
    if len(frame) < p + 4:
        return "GRE (cut short)"
    flags, version = frame[p], frame[p + 1] & 7
    proto = (frame[p + 2] << 8) | frame[p + 3]
    if flags & 0x40:
        return "GRE with source routing"
    q = p + 4 + (4 if flags & 0x80 else 0) + (4 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    if version == 1:
        q += 4 if frame[p + 1] & 0x80 else 0  # acknowledgement number
    elif version:
        return f"GRE version {version}"
    return proto, q


def _l2tp_udp(frame: bytes, p: int) -> tuple[int, int] | str:
    """L2TPv2 (RFC 2661) data messages carry PPP; L2TPv3 over UDP (RFC 3931) is read as over IP
    after its 4-byte header."""
    if len(frame) < p + 6:
        return "L2TP (cut short)"
    bits, version = frame[p], frame[p + 1] & 15
    if bits & 0x80:
        return "L2TP control"
    if version == 3:
        return _l2tpv3(frame, p + 4, len(frame), "L2TPv3 over UDP")
    if version != 2:
        return f"L2TP version {version}"
    q = p + 2 + (2 if bits & 0x40 else 0) + 4 + (4 if bits & 0x08 else 0)  # length, ids, Ns/Nr
    if bits & 0x02:  # an offset field and that many bytes of padding
        if len(frame) < q + 2:
            return "L2TP (cut short)"
        q += 2 + ((frame[q] << 8) | frame[q + 1])
    return _ppp(frame, q, "L2TP")


def _l2tpv3(frame: bytes, p: int, end: int, name: str) -> tuple[int, int] | str:
    """A data message of an Ethernet pseudowire: session id, then a cookie (0, 4 or 8 bytes) and
    an L2-specific sublayer (0 or 4) that only the tunnel's configuration knows; taken as the
    first combination that puts an Ethernet header with an IP or VLAN ethertype and a matching IP
    version where the frame's data begins (Wireshark's "detect" does the same)."""
    if len(frame) < p + 4:
        return f"{name} (cut short)"
    if not any(frame[p:p + 4]):
        return f"{name} control"
    for skip in (4, 8, 12, 16):  # session id + cookie + sublayer
        q = p + skip
        if q + 15 > end:
            break
        et = (frame[q + 12] << 8) | frame[q + 13]
        if (et == ETH_IPV4 and frame[q + 14] >> 4 == 4) or (et == ETH_IPV6 and frame[q + 14] >> 4 == 6) \
                or et in ETH_VLAN:
            return ETH_TEB, q
    return f"{name} pseudowire not Ethernet"


def _ppp(frame: bytes, p: int, carrier: str) -> tuple[int, int] | str:
    """PPP, with or without its HDLC address and control bytes and with a 1- or 2-byte protocol."""
    if len(frame) >= p + 2 and frame[p] == 0xFF and frame[p + 1] == 0x03:
        p += 2
    if len(frame) < p + 1:
        return f"{carrier} PPP (cut short)"
    if frame[p] & 1:  # protocol-field compression: one byte
        proto, p = frame[p], p + 1
    elif len(frame) < p + 2:
        return f"{carrier} PPP (cut short)"
    else:
        proto, p = (frame[p] << 8) | frame[p + 1], p + 2
    et = PPP_TO_ETHERTYPE.get(proto)
    if et is None:
        return PPP_NAMES.get(proto) or f"PPP protocol 0x{proto:04x}"
    return et, p
