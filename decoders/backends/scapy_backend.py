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
from meshscope.decoders.tunnels import IPPROTO_L2TP, locate_inner_ip
from scapy.config import conf
from scapy.contrib import geneve  # noqa: F401  (scapy binds each tunnel when its module loads)
from scapy.layers import inet6, l2, ppp, vxlan  # noqa: F401  (link types, IPv6, PPPoE, VXLAN)
from scapy.layers.inet import IP, TCP
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
                # the bytes scapy dissected the payload from: re-building it (bytes()) is not exact
                # once scapy's TLS or HTTP layers are loaded, and Ethernet padding is already cut
                payload = getattr(tcp.payload, "original", None) or b""
                flags = int(tcp.flags)
                if not wanted(flags, len(payload)):
                    continue
                ifindex = getattr(pkt.getlayer(l2.CookedLinuxV2), "ifindex", None)
                interface = str(ifindex) if ifindex is not None else iface
                yield (ts, ip.src, tcp.sport, ip.dst, tcp.dport, tcp.seq, tcp.ack, flags, payload,
                       orig - len(frame) if orig > len(frame) else 0, interface)
        finally:
            if undecodable:
                stats.add_damage(f"{undecodable} packets scapy could not dissect")


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
