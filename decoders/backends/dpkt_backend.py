"""The default, fastest backend: a struct-level look at each frame (link layer, IPv4 header, TCP
flags) drops everything that is not a wanted TCP segment — most packets of a capture: pure ACKs,
UDP, ARP — and answers SYN/FIN/RST from the header alone; dpkt dissects the TCP segments that
carry payload, and IPv6 packets (extension headers)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt

from decoders.backends.segment_backend import Segment, SegmentBackend
from decoders.capture_file import ReadStats, read_capture
from decoders.link_layers import LINKTYPE_ETHERNET, locate_ip

_IPV6_EXTENSIONS = frozenset((0, 43, 44, 51, 60))  # hop-by-hop, routing, fragment, AH, dest. options
_DPKT_ERRORS = (dpkt.UnpackError, IndexError, ValueError, KeyError, TypeError)


_PORTS_SEQ_ACK = struct.Struct("!HHII").unpack_from
_TCP_HEADER = struct.Struct("!HHIIH").unpack_from  # ports, seq, ack, data offset + flags


def _addr(cache: dict[bytes, str], raw: bytes, version: int) -> str:
    """Text form of an address, remembered: a capture holds few distinct addresses."""
    text = cache[raw] = socket.inet_ntop(socket.AF_INET if version == 4 else socket.AF_INET6, raw)
    return text


def _iface(cache: dict[tuple, str | None], iface: str | None, ifindex: int | None) -> str | None:
    """The interface a packet was seen on: the SLL2 ifindex when there is one, else pcapng's."""
    key = (iface, ifindex)
    try:
        return cache[key]
    except KeyError:
        value = cache[key] = str(ifindex) if ifindex is not None else iface
        return value


class DpktBackend(SegmentBackend):
    name = "dpkt"
    # (index, count): keep only the connections whose port pair falls in this shard, so that
    # several processes can share one capture (decoders.parallel); None keeps everything
    shard: tuple[int, int] | None = None

    def segments(self, path: Path, stats: ReadStats,
                 progress: Callable[[int], None] | None) -> Iterator[Segment]:
        addr_cache: dict[bytes, str] = {}
        iface_cache: dict[tuple, str | None] = {}
        IP6, TCP = dpkt.ip6.IP6, dpkt.tcp.TCP
        undecodable = 0
        # the low bytes of the two ports, XORed, are the same both ways: a connection's shard
        index, count = self.shard or (0, 1)
        try:
            for ts, linktype, iface, frame, orig in read_capture(path, stats, progress, (index, count)):
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
                    if count > 1 and (frame[t + 1] ^ frame[t + 3]) % count != index:
                        continue
                    total = (frame[off + 2] << 8) | frame[off + 3]
                    paylen = (total or len(frame) - off) - ihl - ((frame[t + 12] >> 4) << 2)
                    if paylen <= 0:
                        flags = frame[t + 13]
                        if not flags & 7:
                            continue  # pure ACK
                        # SYN / FIN / RST without payload: the header is all there is, no dpkt needed
                        sport, dport, seq, ack = _PORTS_SEQ_ACK(frame, t)
                        src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
                        yield (ts, addr_cache.get(src) or _addr(addr_cache, src, 4),
                               sport, addr_cache.get(dst) or _addr(addr_cache, dst, 4), dport, seq, ack,
                               flags, b"", 0, _iface(iface_cache, iface, ifindex))
                        continue
                    # the IPv4 and TCP headers are fixed fields: one struct call, no dpkt object
                    # (what dpkt.tcp.TCP would refuse is counted as undecodable the same way)
                    end = off + total if total and off + total <= len(frame) else len(frame)
                    if end - t < 20:
                        undecodable += 1
                        continue
                    sport, dport, seq, ack, off_flags = _TCP_HEADER(frame, t)
                    doff = (off_flags >> 12) << 2
                    if doff < 20:
                        undecodable += 1
                        continue
                    payload = frame[t + doff:end]
                    flags = off_flags & 0x1FF
                    if not payload and not flags & 7:
                        continue
                    src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
                    yield (ts, addr_cache.get(src) or _addr(addr_cache, src, 4), sport,
                           addr_cache.get(dst) or _addr(addr_cache, dst, 4), dport, seq, ack,
                           flags, payload,
                           orig - len(frame) if orig > len(frame) else 0, _iface(iface_cache, iface, ifindex))
                    continue
                elif version == 6:
                    nxt = frame[off + 6]
                    if nxt == 6:
                        t = off + 40
                        if len(frame) < t + 14:
                            continue
                        if count > 1 and (frame[t + 1] ^ frame[t + 3]) % count != index:
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
                    tcp = ip.data
                    if not isinstance(tcp, TCP):
                        continue
                    if count > 1 and ((tcp.sport ^ tcp.dport) & 0xFF) % count != index:
                        continue
                    src, dst = ip.src, ip.dst
                else:
                    continue
                payload = tcp.data
                flags = tcp.flags
                if not payload and not flags & 7:
                    continue
                yield (ts, addr_cache.get(src) or _addr(addr_cache, src, version), tcp.sport,
                       addr_cache.get(dst) or _addr(addr_cache, dst, version), tcp.dport, tcp.seq, tcp.ack,
                       flags, bytes(payload),
                       orig - len(frame) if orig > len(frame) else 0, _iface(iface_cache, iface, ifindex))
        finally:
            if undecodable:
                stats.add_damage(f"{undecodable} packets dpkt could not dissect")


BACKEND = DpktBackend
