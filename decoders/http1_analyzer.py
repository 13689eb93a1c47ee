"""HTTP/1.x exchanges of one connection: request and response heads (decoders.http1) paired in order,
pipelining and lost messages included. A ``101`` to ``Upgrade: h2c`` hands the connection to the
HTTP/2 analyzer, the upgrading request becoming its stream 1."""

from __future__ import annotations

from collections import deque

from meshscope.decoders.analyzer import Analyzer, Host
from meshscope.decoders.http1 import HttpHead, HttpStreamParser
from meshscope.decoders.peer_metadata import decode_peer_metadata

from meshscope.model import Exchange

MAX_PIPELINE = 1000  # requests awaiting a response on one connection before we stop queueing


class Http1Analyzer(Analyzer):
    protocol = "http"
    __slots__ = ("pending", "requesting", "responding")

    def __init__(self, host: Host, hunting: bool = False) -> None:
        super().__init__(host)
        self.pending: deque[Exchange] = deque()  # requests awaiting their response
        self.requesting: Exchange | None = None  # request whose body is being read
        self.responding: Exchange | None = None  # exchange whose response body is being read
        # the reassemblers feed the parsers directly (the hot path: one call less)
        self.client = HttpStreamParser(True, self._request_head, self._request_end,
                                       lambda t: self._damage(True, t), hunting=hunting,
                                       on_lost=lambda ts: self._lost_message(True, ts))
        self.server = HttpStreamParser(False, self._response_head, self._response_end,
                                       lambda t: self._damage(False, t), hunting=hunting,
                                       on_lost=lambda ts: self._lost_message(False, ts))

    def held(self) -> int:
        return len(self.client.buf) + len(self.server.buf)  # type: ignore[attr-defined]

    def busy(self) -> bool:
        return bool(self.pending or self.responding)

    def cut_short(self, text: str) -> None:
        self._damage(True, text)

    def _damage(self, from_client: bool, text: str) -> None:
        if from_client:
            target = self.requesting or (self.pending[-1] if self.pending else None)
        else:
            target = self.responding or (self.pending[0] if self.pending else None)
        self.damage(target, from_client, text)

    def _lost_message(self, from_client: bool, ts: float) -> None:
        """A gap swallowed (at least) one message start. Assume one, so that the messages after
        it still pair up: a lost request gets a placeholder its response can pair with; a lost
        response releases the oldest request waiting for one."""
        if from_client:
            ex = self.new_exchange("http", None)
            ex.damage.append("request lost in a gap")
            self.requesting = None
            self.pending.append(ex)
        elif self.pending:
            ex = self.pending.popleft()
            ex.damage.append("response lost in a gap")
            self.emit(ex)

    def _request_head(self, head: HttpHead) -> bool:
        ex = self.new_exchange("http", head.ts)
        ex.method, ex.uri, ex.http_version = head.method, head.uri, head.version
        ex.headers = headers = head.headers
        ex.host = headers.get("host")
        meta = headers.get("x-envoy-peer-metadata")
        if meta:
            ex.peer_workload, ex.peer_namespace = decode_peer_metadata(meta)
        self.requesting = ex
        if len(self.pending) >= MAX_PIPELINE:  # a response side we cannot follow: do not hoard
            self.emit(self.pending.popleft())
        self.pending.append(ex)
        return True

    def _request_end(self, body_bytes: int, ts: float) -> None:
        if self.requesting is not None:
            self.requesting.request_body_bytes = body_bytes
            self.requesting = None

    def _response_head(self, head: HttpHead) -> bool:
        status = head.status or 0
        if 100 <= status < 200 and status != 101:
            return False  # informational (100 Continue): the real response follows
        if self.pending:
            ex = self.pending.popleft()
        else:
            ex = self.new_exchange("http", None)
            ex.damage.append("response without a captured request")
            self.host.note_damage("response without a captured request")
        ex.status, ex.reason, ex.response_time = status, head.reason, head.ts
        if ex.http_version is None:
            ex.http_version = head.version
        ex.response_headers = head.headers
        meta = ex.response_headers.get("x-envoy-peer-metadata")
        if meta:
            ex.server_peer_workload, ex.server_peer_namespace = decode_peer_metadata(meta)
        self.responding = ex
        if status == 101 or (ex.method == "CONNECT" and 200 <= status < 300):
            # the connection now carries another protocol (h2c, WebSocket, a tunnel)
            self.done = True
            if status == 101 and head.headers.get("upgrade", "").lower() == "h2c":
                self._upgrade_h2c(ex)
            elif ex.method == "CONNECT":
                self._open_tunnel(ex, head.ts)
            else:
                self._response_end(0, head.ts)
                self.client.stop()  # type: ignore[attr-defined]
                self.server.stop()  # type: ignore[attr-defined]
            return False
        return not (ex.method == "HEAD" or status in (204, 304))

    def _upgrade_h2c(self, ex: Exchange) -> None:
        """RFC 9113 section 3.2 (RFC 7540 3.2): the request continues as stream 1 of HTTP/2."""
        from meshscope.decoders.http2_analyzer import Http2Analyzer

        self.responding = None
        h2 = Http2Analyzer(self.host, upgraded=ex)
        h2.index, h2.exchanges = self.index, self.exchanges
        client, server = self.client, self.server
        server.after_stop = h2.server.data  # type: ignore[attr-defined]  # the bytes after the 101
        client.stop()  # type: ignore[attr-defined]
        server.stop()  # type: ignore[attr-defined]
        self.host.hand_over(h2)

    def _open_tunnel(self, ex: Exchange, ts: float) -> None:
        """A 2xx to CONNECT: the bytes after it either way are a new stream (decoders.http_tunnel)."""
        from meshscope.decoders.http_tunnel import TunnelStart

        self._response_end(0, ts)
        host = self.host
        start = TunnelStart(host, f"CONNECT {ex.uri}", self.index, self.exchanges)
        client, server = self.client, self.server
        client.after_stop = start.client.data  # type: ignore[attr-defined]
        server.after_stop = start.server.data  # type: ignore[attr-defined]
        host.hand_over(start)  # first: bytes the parsers still hold go to the tunnel's analyzer
        client.stop()  # type: ignore[attr-defined]
        server.stop()  # type: ignore[attr-defined]

    def _response_end(self, body_bytes: int, ts: float) -> None:
        ex = self.responding
        if ex is not None:
            ex.response_body_bytes = body_bytes
            self.responding = None
            self.emit(ex)

    def close(self, ts: float, why: str = "capture-end") -> None:
        if not self.done:
            self.client.close(ts)  # type: ignore[attr-defined]
            self.server.close(ts)  # type: ignore[attr-defined]
        if self.responding is not None:
            self._response_end(0, ts)
        while self.pending:
            self.emit(self.pending.popleft())
        self.done = True
