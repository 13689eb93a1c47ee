"""DNS over TCP (RFC 1035 section 4.2.2, RFC 7766): each message after a two-byte length. The
messages join the capture's DNS lookups (decoders.dns_lookups) with those over UDP, so a query
retried over TCP after a truncated UDP answer stays one lookup."""

from __future__ import annotations

from meshscope.decoders.analyzer import Analyzer, Host
from meshscope.decoders.dns_message import parse_dns


class _DnsSide:
    """One direction's messages; at most one message (64 KiB) is ever buffered."""
    __slots__ = ("analyzer", "from_client", "buf")

    def __init__(self, analyzer: DnsTcpAnalyzer, from_client: bool) -> None:
        self.analyzer = analyzer
        self.from_client = from_client
        self.buf = b""

    def data(self, payload: bytes, ts: float) -> None:
        buf = self.buf + payload if self.buf else payload
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + n:
                break
            self.analyzer.message(self.from_client, buf[2:2 + n], ts)
            buf = buf[2 + n:]
        self.buf = bytes(buf)

    def gap(self, nbytes: int, ts: float) -> None:
        self.buf = b""  # the framing is lost: stop reading this direction
        self.analyzer.damage(None, self.from_client, f"{nbytes} bytes lost in DNS over TCP")
        self.analyzer.done = True


class DnsTcpAnalyzer(Analyzer):
    protocol = "dns"
    __slots__ = ("lookups",)

    def __init__(self, host: Host, lookups) -> None:
        super().__init__(host)
        self.lookups = lookups  # decoders.dns_lookups.DnsLookups
        self.client = _DnsSide(self, True)
        self.server = _DnsSide(self, False)

    def held(self) -> int:
        return len(self.client.buf) + len(self.server.buf)  # type: ignore[attr-defined]

    def message(self, from_client: bool, raw: bytes, ts: float) -> None:
        c = self.conn
        try:
            msg = parse_dns(raw)
        except ValueError as e:
            self.damage(None, from_client, f"not a DNS message: {e}")
            return
        if from_client:
            self.lookups.message(msg, ts, c.src, c.sport, c.dst, c.dport, "tcp", c.interface)
        else:
            self.lookups.message(msg, ts, c.dst, c.dport, c.src, c.sport, "tcp", c.interface)
