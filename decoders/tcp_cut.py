"""IPv4/TCP frames cut into Segments at the struct level, with no packet object: the hot path of the
dpkt backend. The capture reader applies it inside its own record loop to the frames whose link
layer puts IPv4 at a fixed offset (decoders.capture_file); the dpkt backend, to the other frames."""

from __future__ import annotations

import socket
import struct

from meshscope.decoders.tcp_flags import CONTROL

# what decides whether a frame is wanted, from the IPv4 header on: version + IHL, total length,
# flags + fragment offset, protocol; then (for a 20-byte IPv4 header) TCP ports, data offset, flags
_IPV4_TCP_FIELDS = "BxHxxHxB10xHH8xBB"
_TCP_HEADER = struct.Struct("!HHIIH").unpack_from  # ports, seq, ack, data offset + flags
IPV4_TCP_MIN = 40  # IPv4 and TCP headers, no options


def linked_head(ethertype_at: int, ip_at: int):
    """unpack_from for a frame whose link layer has its ethertype at ``ethertype_at`` and the IP
    header at ``ip_at``: (ethertype, version + IHL, total length, flags + fragment offset, protocol,
    TCP source and destination port, data offset, flags), in one call."""
    return struct.Struct(f"!{ethertype_at}xH{ip_at - ethertype_at - 2}x{_IPV4_TCP_FIELDS}").unpack_from


class TcpCut:
    """Cuts IPv4/TCP frames of one shard of the connections (``shard=(index, count)``: the XOR of the
    two ports' low bytes without bit 0, the same both ways, modulo count) into Segment tuples, as
    ConnectionTable.segment takes them. Callers drop the other shards' frames and the pure ACKs
    before calling ``cut`` (the cheap test, inline in their loops); what TCP cannot parse is counted
    in ``undecodable``."""

    __slots__ = ("index", "count", "undecodable", "_addrs", "_ifaces")

    def __init__(self, shard: tuple[int, int] | None = None) -> None:
        self.index, self.count = shard or (0, 1)
        self.undecodable = 0
        self._addrs: dict[bytes, str] = {}  # a capture holds few distinct addresses and interfaces
        self._ifaces: dict[bytes, str] = {}

    def mine(self, sport: int, dport: int) -> bool:
        """Whether the connection of these ports is this shard's (the capture reader inlines this). Bit 0
        is left out: Linux gives connect() even ephemeral ports, so with an even server port the
        parity of every connection is the same and one shard would get them all."""
        return (((sport ^ dport) & 0xFF) >> 1) % self.count == self.index

    def cut(self, buf: bytes, ip: int, tcp: int, frame_end: int, total: int, ts: float, missing: int,
            iface: str | None):
        """The Segment of the frame in ``buf`` whose IPv4 header is at ``ip`` and TCP header at
        ``tcp``; None for a pure ACK, or a TCP header too short to read."""
        end = ip + total if total and ip + total <= frame_end else frame_end
        if end - tcp < 20:
            self.undecodable += 1
            return None
        sport, dport, seq, ack, off_flags = _TCP_HEADER(buf, tcp)
        doff = (off_flags >> 12) << 2
        if doff < 20:
            self.undecodable += 1
            return None
        flags = off_flags & 0x1FF
        if (total or frame_end - ip) - (tcp - ip) - doff <= 0:  # no payload on the wire
            if not flags & CONTROL:
                return None  # a pure ACK
            payload, missing = b"", 0
        else:
            payload = buf[tcp + doff:end]
            if not payload and not flags & CONTROL:
                return None  # its payload all cut off by the snaplen: nothing left to use
        addrs = self._addrs
        src, dst = buf[ip + 12:ip + 16], buf[ip + 16:ip + 20]
        return (ts, addrs.get(src) or self._addr(src), sport, addrs.get(dst) or self._addr(dst), dport,
                seq, ack, flags, payload, missing, iface)

    def _addr(self, raw: bytes) -> str:
        text = self._addrs[raw] = socket.inet_ntop(socket.AF_INET, raw)
        return text

    def addr(self, raw: bytes) -> str:
        """An IPv4 address's text form, remembered (shared with the UDP path)."""
        return self._addrs.get(raw) or self._addr(raw)

    def ifindex_name(self, raw: bytes) -> str:
        """A Linux ifindex (4 bytes, network order, as SLL2 carries it) as the interface name."""
        name = self._ifaces.get(raw)
        if name is None:
            name = self._ifaces[raw] = str(int.from_bytes(raw, "big"))
        return name
