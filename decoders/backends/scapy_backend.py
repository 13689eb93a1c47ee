"""The scapy backend: frames framed by the shared reader, dissected by scapy's layer classes
(chosen from scapy's own link-type table), then the shared connection table. Slow, but an
independent dissector of link, IP and TCP headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from meshscope.decoders.backends.segment_backend import Segment, SegmentBackend
from meshscope.decoders.capture_file import ReadStats, read_capture
from meshscope.decoders.connection_table import wanted
from meshscope.decoders.link_layers import BSD_AF_INET6
from meshscope.decoders.tcp_flags import IP_FRAGMENT_OFFSET
from meshscope.decoders.wording import counted
from scapy.config import conf
from scapy.layers import inet6, l2  # noqa: F401  (registers link types and IPv6 with scapy)
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
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
                    continue
                ip = tcp.underlayer
                if not isinstance(ip, IP | IPv6):
                    ip = pkt.getlayer(IPv6) or pkt.getlayer(IP)
                if isinstance(ip, IP) and (ip.flags.MF or ip.frag & IP_FRAGMENT_OFFSET):
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


BACKEND = ScapyBackend
