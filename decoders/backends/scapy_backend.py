"""The scapy backend: frames framed by the shared reader, dissected by scapy's layer classes
(chosen from scapy's own link-type table), then the shared connection table. Slow, but an
independent dissector of link, IP and TCP headers, and of tunnels: scapy's own PPPoE, L2TP, GRE,
VXLAN and Geneve layers are loaded. Scapy has no L2TPv3 layer: there the shared walker
(decoders.tunnels) steps over the tunnel and scapy dissects the inner packet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from meshscope.decoders.backends.segment_backend import Segment, SegmentBackend
from meshscope.decoders.capture_file import ReadStats, read_capture
from meshscope.decoders.connection_table import wanted
from meshscope.decoders.link_layers import BSD_AF_INET6
from meshscope.decoders.tcp_flags import IP_FRAGMENT_OFFSET
from meshscope.decoders.tunnels import GENEVE_PORT, IPPROTO_L2TP, L2TP_PORT, VXLAN_PORTS, locate_inner_ip
from meshscope.decoders.udp_table import Datagram
from meshscope.decoders.wording import counted
from scapy.config import conf
from scapy.contrib import geneve  # noqa: F401  (scapy binds each tunnel when its module loads)
from scapy.layers import inet6, l2, ppp, vxlan  # noqa: F401  (link types, IPv6, PPPoE, VXLAN)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2tp import L2TP
from scapy.packet import bind_layers

for _af in BSD_AF_INET6:  # scapy binds the loopback header to this host's AF_INET6 only
    bind_layers(l2.Loopback, IPv6, type=_af)


class ScapyBackend(SegmentBackend):
    name = "scapy"

    def segments(self, path: Path, stats: ReadStats,
                 progress: Callable[[int], None] | None) -> Iterator[Segment]:
        undecodable = 0
        try:
            for ts, linktype, iface, frame, orig in read_capture(path, stats, progress):
                cls = conf.l2types.get(linktype) or (IP if frame[:1] and frame[0] >> 4 == 4 else IPv6)
                try:
                    pkt = cls(frame)
                except Exception:  # scapy raises anything on garbage; one bad frame is not fatal
                    undecodable += 1
                    continue
                tcp = pkt.getlayer(TCP)
                if tcp is None:
                    udp = _innermost_udp(pkt)
                    if udp is not None:  # not a tunnel's, nor a fragment's (counted below)
                        dg = _datagram(pkt, udp, ts, iface, orig - len(frame) if orig > len(frame) else 0)
                        if dg is not None:
                            yield dg
                        continue
                    # counted by the shared walker, so that every backend's report names it alike
                    loc = locate_inner_ip(linktype, frame, stats.not_decoded)
                    if loc is None or not _l2tpv3(pkt):
                        continue
                    inner = frame[loc[0]:]
                    tcp = (IP if inner[0] >> 4 == 4 else IPv6)(inner).getlayer(TCP)
                    if tcp is None:
                        continue
                ip = tcp.underlayer  # the innermost IP header: the one right under TCP
                while ip is not None and not isinstance(ip, IP | IPv6):
                    ip = ip.underlayer  # IPv6 extension headers
                if _fragment(tcp):  # this IP header or a tunnel's outer one: not reassembled
                    locate_inner_ip(linktype, frame, stats.not_decoded)
                    continue
                # the bytes scapy dissected TCP from (IP's length already cut the Ethernet padding
                # off them), after the header: re-building the payload (bytes()) is not exact once
                # scapy's TLS or HTTP layers are loaded, and the payload layer's own bytes are not
                # either: a segment without payload gets the padding as a Padding layer, and a TLS
                # record cut across segments is a Padding layer too
                payload = (tcp.original or b"")[tcp.dataofs * 4:]
                flags = int(tcp.flags)
                if not wanted(flags, len(payload)):
                    continue
                ifindex = getattr(pkt.getlayer(l2.CookedLinuxV2), "ifindex", None)
                interface = str(ifindex) if ifindex is not None else iface
                yield (ts, ip.src, tcp.sport, ip.dst, tcp.dport, tcp.seq, tcp.ack, flags, payload,
                       orig - len(frame) if orig > len(frame) else 0, interface)
        finally:
            if undecodable:
                stats.add_damage(f"{counted(undecodable, 'packet')} scapy could not dissect")


def _innermost_udp(pkt):
    """The innermost UDP layer, unless it carries a tunnel scapy did not open (L2TPv3) or it is in
    an IP fragment: those are counted by the shared walker."""
    udp = None
    layer = pkt
    while layer is not None and layer.__class__.__name__ not in ("NoPayload", "Raw", "Padding"):
        if isinstance(layer, UDP):
            udp = layer
        layer = layer.payload
    if udp is None or _fragment(udp):
        return None
    if udp.dport in VXLAN_PORTS or udp.dport == GENEVE_PORT or L2TP_PORT in (udp.sport, udp.dport):
        return None
    return udp


def _datagram(pkt, udp, ts: float, iface: str | None, missing: int) -> Datagram | None:
    """A UDP layer scapy dissected, as a Datagram (None inside an ICMP error)."""
    ip = udp.underlayer
    if not isinstance(ip, IP | IPv6) or pkt.getlayer(ICMP) is not None:
        return None
    # the bytes scapy dissected the UDP layer from (its own DNS layer is not re-built), cut to the
    # UDP length: what follows in the frame is link-layer padding
    raw = getattr(udp, "original", None) or b""
    end = udp.len if udp.len and udp.len >= 8 else len(raw)
    payload = bytes(raw[8:end])
    ifindex = getattr(pkt.getlayer(l2.CookedLinuxV2), "ifindex", None)
    return Datagram(ts, ip.src, udp.sport, ip.dst, udp.dport, payload,
                    max(0, end - len(raw)) if missing else 0, str(ifindex) if ifindex is not None else iface)


def _fragment(layer) -> bool:
    """Whether any IPv4 header under ``layer`` belongs to a fragment."""
    while layer is not None:
        if isinstance(layer, IP) and (layer.flags.MF or layer.frag & IP_FRAGMENT_OFFSET):
            return True
        layer = layer.underlayer
    return False


def _l2tpv3(pkt) -> bool:
    """Whether scapy stopped at an L2TPv3 tunnel (over IP, or over UDP where it takes it for v2)."""
    l2tp = pkt.getlayer(L2TP)
    if l2tp is not None:
        return l2tp.version == 3
    ip = pkt.getlayer(IP)
    if ip is not None and ip.proto == IPPROTO_L2TP:
        return True
    ip6 = pkt.getlayer(IPv6)
    return ip6 is not None and ip6.nh == IPPROTO_L2TP


BACKEND = ScapyBackend
