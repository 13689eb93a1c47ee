"""HTTP CONNECT tunnels (egress proxies): after a 2xx to CONNECT the connection carries another
protocol end to end. The tunnel's first bytes either way choose its analyzer (decoders.detect),
exactly as a new connection's would; its exchanges continue the connection's numbering and name
the tunnel (Exchange.tunnel)."""

from __future__ import annotations

from meshscope.decoders.analyzer import Analyzer, Host


class _TunnelSide:
    __slots__ = ("start", "from_client")

    def __init__(self, start: TunnelStart, from_client: bool) -> None:
        self.start = start
        self.from_client = from_client

    def data(self, payload: bytes, ts: float) -> None:
        if payload:
            self.start.begin(self.from_client, payload, ts)

    def gap(self, nbytes: int, ts: float) -> None:
        pass  # before the tunnel's protocol is known there is nothing to resynchronise


class TunnelStart(Analyzer):
    """The tunnel before its first byte: hands the connection to the analyzer its bytes call for."""

    protocol = "tunnel"
    __slots__ = ()

    def __init__(self, host: Host, tunnel: str, index: int, exchanges: int) -> None:
        super().__init__(host)
        self.tunnel = tunnel
        self.index, self.exchanges = index, exchanges
        self.client = _TunnelSide(self, True)
        self.server = _TunnelSide(self, False)

    def begin(self, from_client: bool, payload: bytes, ts: float) -> None:
        from meshscope.decoders.detect import choose_analyzer

        host = self.host
        analyzer = choose_analyzer(host, from_client, payload)
        analyzer.index, analyzer.exchanges, analyzer.tunnel = self.index, self.exchanges, self.tunnel
        host.hand_over(analyzer)
        if not analyzer.done:
            (analyzer.client if from_client else analyzer.server).data(payload, ts)
