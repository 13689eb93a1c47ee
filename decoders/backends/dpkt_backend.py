"""The default, fastest backend: a struct-level look at each frame drops everything that is not a
wanted TCP segment (most packets of a capture: pure ACKs, UDP, ARP), and dpkt dissects only the
candidates that remain."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt

from decoders.backends.segment_backend import Segment, SegmentBackend
from decoders.capture_file import ReadStats, read_capture
from decoders.link_layers import LINKTYPE_ETHERNET, locate_ip

_IPV6_EXTENSIONS = frozenset((0, 43, 44, 51, 60))  # hop-by-hop, routing, fragment, AH, dest. options
_DPKT_ERRORS = (dpkt.UnpackError, IndexError, ValueError, KeyError, TypeError)


class DpktBackend(SegmentBackend):
    name = "dpkt"

    def segments(self, path: Path, stats: ReadStats,
                 progress: Callable[[int], None] | None) -> Iterator[Segment]:
        addr_cache: dict[bytes, str] = {}
        iface_cache: dict[tuple, str | None] = {}
        IP, IP6, TCP = dpkt.ip.IP, dpkt.ip6.IP6, dpkt.tcp.TCP
        undecodable = 0
        try:
            for ts, linktype, iface, frame, orig in read_capture(path, stats, progress):
                # fast path for the common case: Ethernet carrying IPv4 directly
                if linktype == LINKTYPE_ETHERNET and frame[12:14] == b"\x08\x00":
                    off, ifindex = 14, None
                else:
                    loc = locate_ip(linktype, frame)
                    if loc is None:
                        continue
                    off, ifindex = loc
                if len(frame) < off + 20:
                    continue
                version = frame[off] >> 4
                if version == 4:
                    if frame[off + 9] != 6 or frame[off + 6] & 0x3F or frame[off + 7]:
                        continue  # not TCP, or an IP fragment (TCP is not fragmented in practice)
                    ihl = (frame[off] & 15) << 2
                    t = off + ihl
                    if len(frame) < t + 14:
                        continue
                    total = (frame[off + 2] << 8) | frame[off + 3]
                    paylen = (total or len(frame) - off) - ihl - ((frame[t + 12] >> 4) << 2)
                    if paylen <= 0 and not frame[t + 13] & 7:
                        continue  # pure ACK
                    try:
                        ip = IP(frame[off:])
                    except _DPKT_ERRORS:
                        undecodable += 1
                        continue
                elif version == 6:
                    nxt = frame[off + 6]
                    if nxt == 6:
                        t = off + 40
                        if len(frame) < t + 14:
                            continue
                        plen = (frame[off + 4] << 8) | frame[off + 5]
                        paylen = (plen or len(frame) - t) - ((frame[t + 12] >> 4) << 2)
                        if paylen <= 0 and not frame[t + 13] & 7:
                            continue
                    elif nxt not in _IPV6_EXTENSIONS:
                        continue
                    try:
                        ip = IP6(frame[off:])
                    except _DPKT_ERRORS:
                        undecodable += 1
                        continue
                else:
                    continue
                tcp = ip.data
                if not isinstance(tcp, TCP):
                    continue
                payload = tcp.data
                flags = tcp.flags
                if not payload and not flags & 7:
                    continue
                src = addr_cache.get(ip.src)
                if src is None:
                    src = addr_cache[ip.src] = socket.inet_ntop(
                        socket.AF_INET if version == 4 else socket.AF_INET6, ip.src)
                dst = addr_cache.get(ip.dst)
                if dst is None:
                    dst = addr_cache[ip.dst] = socket.inet_ntop(
                        socket.AF_INET if version == 4 else socket.AF_INET6, ip.dst)
                ikey = (iface, ifindex)
                interface = iface_cache.get(ikey, 0)
                if interface == 0:
                    interface = iface_cache[ikey] = str(ifindex) if ifindex is not None else iface
                yield (ts, src, tcp.sport, dst, tcp.dport, tcp.seq, tcp.ack, flags, bytes(payload),
                       orig - len(frame) if orig > len(frame) else 0, interface)
        finally:
            if undecodable:
                stats.add_damage(f"{undecodable} packets dpkt could not dissect")


BACKEND = DpktBackend
