"""The default, fastest backend. IPv4/TCP frames are cut into segments at the struct level
(decoders.tcp_cut), most of them by the capture reader inside its record loop; UDP datagrams
(unfragmented, IPv4 or IPv6) are cut here, on the per-frame path; everything else that is not a
wanted TCP segment — pure ACKs, ARP — is dropped from the header alone; dpkt dissects IPv6 packets
with extension headers. Tunnelled frames (VXLAN, GRE, PPPoE, L2TP, ...: decoders.tunnels) take the
per-frame path and are cut at their innermost IP header."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from meshscope.decoders.backends.segment_backend import Segment, SegmentBackend
from meshscope.decoders.capture_file import CaptureRecord, ReadStats, read_capture
from meshscope.decoders.tcp_cut import TcpCut
from meshscope.decoders.tcp_flags import CONTROL, IP_FRAGMENTED
from meshscope.decoders.tunnels import locate_inner_ip
from meshscope.decoders.udp_table import Datagram, datagram_shard
from meshscope.decoders.wording import counted

_IPV6_EXTENSIONS = frozenset((0, 43, 44, 51, 60))  # hop-by-hop, routing, fragment, AH, dest. options
_IPV4_HEAD = struct.Struct("!BxHxxHxB").unpack_from  # version + IHL, total length, flags + offset, protocol
_UDP_HEAD = struct.Struct("!HHH").unpack_from  # ports, length


class DpktBackend(SegmentBackend):
    name = "dpkt"
    # (index, count): keep only the connections whose port pair falls in this shard, so that
    # several processes can share one capture (decoders.parallel); None keeps everything
    shard: tuple[int, int] | None = None
    # let the capture reader cut the frames it can (tests turn it off to check both ways agree)
    cut_in_reader = True

    def segments(self, path: Path, stats: ReadStats,
                 progress: Callable[[int], None] | None) -> Iterator[Segment]:
        cut = TcpCut(self.shard)
        cut_one, mine = cut.cut, cut.mine
        addr6: dict[bytes, str] = {}
        ifaces: dict[int, str] = {}
        # dpkt is imported at the first frame the reader did not cut: it is a third of the CLI's
        # start-up (before the workers start), and an Ethernet or cooked IPv4 capture never needs it
        IP6: type | None = None
        TCP: type | None = None
        dpkt_errors: tuple[type[Exception], ...] = ()
        undecodable = 0
        not_decoded = stats.not_decoded
        try:
            for item in read_capture(path, stats, progress, cut if self.cut_in_reader else None):
                if item.__class__ is not CaptureRecord:
                    yield item  # a Segment the reader cut already
                    continue
                ts, linktype, iface, frame, orig = item
                if IP6 is None:
                    IP6, TCP, dpkt_errors = _dpkt()
                loc = locate_inner_ip(linktype, frame, not_decoded)  # through any tunnels
                if loc is None:
                    continue
                off, ifindex = loc
                if ifindex is not None:
                    iface = ifaces.get(ifindex) or ifaces.setdefault(ifindex, str(ifindex))
                if len(frame) < off + 20:
                    continue
                version = frame[off] >> 4
                if version == 4:
                    vhl, total, frag, proto = _IPV4_HEAD(frame, off)
                    if proto != 6 or frag & IP_FRAGMENTED:
                        if proto == 17 and not frag & IP_FRAGMENTED:
                            src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
                            end = off + total if total else len(frame)
                            dg = _datagram(frame, off + ((vhl & 15) << 2), end, ts, cut.addr(src),
                                           cut.addr(dst), orig, iface, self.shard)
                            if dg is not None:
                                yield dg
                        continue  # not TCP, or an IP fragment (TCP is not fragmented in practice)
                    t = off + ((vhl & 15) << 2)  # the TCP header, after any IPv4 options
                    if len(frame) < t + 14:
                        continue
                    if not mine(frame[t + 1], frame[t + 3]):  # the ports' low bytes
                        continue
                    seg = cut_one(frame, off, t, len(frame), total, ts,
                                  orig - len(frame) if orig > len(frame) else 0, iface)
                    if seg is not None:
                        yield seg
                    continue
                if version != 6:
                    continue
                nxt = frame[off + 6]
                if nxt == 17:
                    plen = (frame[off + 4] << 8) | frame[off + 5]
                    s6, d6 = frame[off + 8:off + 24], frame[off + 24:off + 40]
                    dg = _datagram(frame, off + 40, off + 40 + plen if plen else len(frame), ts,
                                   addr6.get(s6) or _addr6(addr6, s6), addr6.get(d6) or _addr6(addr6, d6),
                                   orig, iface, self.shard)
                    if dg is not None:
                        yield dg
                    continue
                if nxt == 6:
                    t = off + 40
                    if len(frame) < t + 14:
                        continue
                    if not mine(frame[t + 1], frame[t + 3]):
                        continue
                    plen = (frame[off + 4] << 8) | frame[off + 5]
                    paylen = (plen or len(frame) - t) - ((frame[t + 12] >> 4) << 2)
                    if paylen <= 0 and not frame[t + 13] & CONTROL:
                        continue
                elif nxt not in _IPV6_EXTENSIONS:
                    continue
                try:
                    ip = IP6(frame[off:])
                except dpkt_errors:
                    undecodable += 1
                    continue
                tcp = ip.data
                if not isinstance(tcp, TCP):
                    continue
                if not mine(tcp.sport, tcp.dport):
                    continue
                payload = tcp.data
                flags = tcp.flags
                if not payload and not flags & CONTROL:
                    continue
                yield (ts, addr6.get(ip.src) or _addr6(addr6, ip.src), tcp.sport,
                       addr6.get(ip.dst) or _addr6(addr6, ip.dst), tcp.dport, tcp.seq, tcp.ack,
                       flags, bytes(payload), orig - len(frame) if orig > len(frame) else 0, iface)
        finally:
            undecodable += cut.undecodable
            if undecodable:
                stats.add_damage(f"{counted(undecodable, 'packet')} dpkt could not dissect")


def _datagram(frame: bytes, u: int, ip_end: int, ts: float, src: str, dst: str, orig: int,
              iface: str | None, shard: tuple[int, int] | None) -> Datagram | None:
    """The UDP datagram whose header is at ``u`` (its IP packet ending at ``ip_end``), or None."""
    if len(frame) < u + 8:
        return None
    sport, dport, ulen = _UDP_HEAD(frame, u)
    if not datagram_shard(sport, dport, shard):
        return None
    end = min(u + ulen if ulen >= 8 else ip_end, ip_end)  # Ethernet padding after it is not payload
    payload = frame[u + 8:end]
    missing = max(0, end - len(frame)) if orig > len(frame) else 0
    return Datagram(ts, src, sport, dst, dport, bytes(payload), missing, iface)


def _dpkt() -> tuple[type, type, tuple[type[Exception], ...]]:
    import dpkt

    return dpkt.ip6.IP6, dpkt.tcp.TCP, (dpkt.UnpackError, IndexError, ValueError, KeyError, TypeError)


def _addr6(cache: dict[bytes, str], raw: bytes) -> str:
    """Text form of an IPv6 address, remembered: a capture holds few distinct addresses."""
    text = cache[raw] = socket.inet_ntop(socket.AF_INET6, raw)
    return text


BACKEND = DpktBackend
