"""The shared core every backend feeds with TCP segments: it tracks connections (bounded in number),
orients them client → server (also without a handshake), reassembles each direction and hands
the bytes to the HTTP/1.x or TLS-hello parsers, and turns what they find into Exchanges.

Backends differ only in how they read and dissect packets into segments; from here on the
answers are the same by construction."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from meshscope.decoders.http1 import HttpHead, HttpStreamParser, looks_like_request, looks_like_response
from meshscope.decoders.peer_metadata import decode_peer_metadata
from meshscope.decoders.tcp_reassembly import StreamReassembler
from meshscope.decoders.tls_hello import (
    HelloAssembler,
    looks_like_handshake,
    parse_client_hello,
    parse_server_hello,
)

from meshscope.model import Connection, Exchange

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
DEFAULT_MAX_CONNECTIONS = 100_000
DEFAULT_MAX_BUFFERED = 128 << 20  # bytes held across all connections (heads, hellos, out-of-order data)
MAX_DAMAGE = 100
MAX_PIPELINE = 1000  # requests awaiting a response on one connection before we stop queueing


def wanted(flags: int, payload_len: int) -> bool:
    """Segments the table needs: payload, or SYN/FIN/RST. Pure ACKs carry nothing it uses, so every
    backend drops them before dissecting further (which is also what makes the fast path fast)."""
    return payload_len > 0 or bool(flags & (SYN | FIN | RST))


@dataclass(slots=True)
class ConnectionSummary:
    """Per-connection facts, also for connections that carried no HTTP or TLS."""

    conn: Connection
    protocol: str  # "http", "tls", "other" or "" (no payload seen)
    first_time: float
    last_time: float
    segments: int  # segments the table kept (payload, SYN, FIN, RST; not pure ACKs)
    client_bytes: int  # payload bytes seen each way, retransmissions included
    server_bytes: int
    gaps: int
    exchanges: int
    closed: str  # "fin", "rst", "evicted", "capture-end"


class _Side:
    """Adapter: one direction's reassembled bytes into the dialogue."""

    __slots__ = ("dialogue", "from_client")

    def __init__(self, dialogue: _Dialogue, from_client: bool) -> None:
        self.dialogue = dialogue
        self.from_client = from_client

    def data(self, payload: bytes, ts: float) -> None:
        self.dialogue.data(self.from_client, payload, ts)

    def gap(self, nbytes: int, ts: float) -> None:
        self.dialogue.gap(self.from_client, nbytes, ts)


class _Dialogue:
    """What the two directions of one connection say to each other, at the application layer."""

    __slots__ = ("table", "tc", "protocol", "client", "server", "pending", "requesting", "responding",
                 "tls", "index", "client_damage", "server_damage", "done", "exchanges")

    def __init__(self, table: ConnectionTable, tc: _Tracked) -> None:
        self.table = table
        self.tc = tc
        self.protocol = ""
        self.client: HttpStreamParser | HelloAssembler | None = None
        self.server: HttpStreamParser | HelloAssembler | None = None
        self.pending: deque[Exchange] = deque()  # requests awaiting their response
        self.requesting: Exchange | None = None  # request whose body is being read
        self.responding: Exchange | None = None  # exchange whose response body is being read
        self.tls: Exchange | None = None
        self.index = 0
        self.client_damage: list[str] = []
        self.server_damage: list[str] = []
        self.done = False  # nothing more to learn from this connection's bytes
        self.exchanges = 0

    # -- choosing the protocol -------------------------------------------------------------------
    def _start(self, from_client: bool, payload: bytes) -> None:
        midstream = not self.tc.conn.handshake_seen
        if looks_like_handshake(payload) and (from_client or payload[5:6] == b"\x02"):
            self.protocol = "tls"
            self.client, self.server = HelloAssembler(), HelloAssembler()
            if not from_client:
                self.client.failed = "ClientHello not captured"
                self._damage(True, "ClientHello not captured")
            return
        starts = looks_like_request(payload) if from_client else looks_like_response(payload)
        if starts:
            hunting = False
        elif midstream and not (len(payload) >= 3 and 20 <= payload[0] <= 23 and payload[1] == 3):
            hunting = True  # joined mid-stream, perhaps inside a body: look for the next message
        else:
            self.protocol = "other"
            self.done = True
            return
        self.protocol = "http"
        self.client = HttpStreamParser(True, self._request_head, self._request_end,
                                       lambda t: self._damage(True, t), hunting=hunting,
                                       on_lost=lambda ts: self._lost_message(True, ts))
        self.server = HttpStreamParser(False, self._response_head, self._response_end,
                                       lambda t: self._damage(False, t), hunting=hunting,
                                       on_lost=lambda ts: self._lost_message(False, ts))
        # from now on the reassemblers feed the parsers directly (the hot path: one call less)
        self.tc.c2s.sink = self.client  # type: ignore[union-attr]
        self.tc.s2c.sink = self.server  # type: ignore[union-attr]

    def data(self, from_client: bool, payload: bytes, ts: float) -> None:
        if self.done:
            return
        if not self.protocol:
            self._start(from_client, payload)
            if self.done:
                return
        if self.protocol == "http":
            (self.client if from_client else self.server).feed(payload, ts)  # type: ignore[union-attr]
        else:
            self._tls_data(from_client, payload, ts)

    def gap(self, from_client: bool, nbytes: int, ts: float) -> None:
        if self.done:
            return
        if self.protocol == "http":
            (self.client if from_client else self.server).gap(nbytes, ts)  # type: ignore[union-attr]
        elif self.protocol == "tls":
            side = self.client if from_client else self.server
            if not side.done and not side.failed:  # type: ignore[union-attr]
                side.failed = f"{nbytes} bytes lost inside the hello"  # type: ignore[union-attr]
                self._damage(from_client, side.failed)  # type: ignore[union-attr]
                self._tls_check_done()

    def _damage(self, from_client: bool, text: str) -> None:
        target = (self.requesting or (self.pending[-1] if self.pending else None)) if from_client \
            else (self.responding or (self.pending[0] if self.pending else None))
        if self.protocol == "tls":
            target = self.tls
        if target is not None:
            target.damage.append(text)
        else:
            (self.client_damage if from_client else self.server_damage).append(text)
        self.table.note_damage(self.tc.conn, text)

    def _lost_message(self, from_client: bool, ts: float) -> None:
        """A gap swallowed (at least) one message start. Assume one, so that the messages after
        it still pair up: a lost request gets a placeholder its response can pair with; a lost
        response releases the oldest request waiting for one."""
        if from_client:
            ex = self._new_exchange("http", None)  # type: ignore[arg-type]
            ex.damage.append("request lost in a gap")
            self.requesting = None
            self.pending.append(ex)
        elif self.pending:
            ex = self.pending.popleft()
            ex.damage.append("response lost in a gap")
            self._emit(ex)

    # -- HTTP ------------------------------------------------------------------------------------
    def _new_exchange(self, kind: str, ts: float) -> Exchange:
        ex = Exchange(exchange_type=kind, conn=self.tc.conn, index=self.index, request_time=ts)
        self.index += 1
        if self.client_damage or self.server_damage:  # damage seen before this exchange began
            ex.damage.extend(self.client_damage)
            ex.damage.extend(self.server_damage)
            self.client_damage.clear()
            self.server_damage.clear()
        return ex

    def _request_head(self, head: HttpHead) -> bool:
        ex = self._new_exchange("http", head.ts)
        ex.method, ex.uri, ex.http_version = head.method, head.uri, head.version
        ex.headers = headers = head.headers
        ex.host = headers.get("host")
        meta = headers.get("x-envoy-peer-metadata")
        if meta:
            ex.peer_workload, ex.peer_namespace = decode_peer_metadata(meta)
        self.requesting = ex
        if len(self.pending) >= MAX_PIPELINE:  # a response side we cannot follow: do not hoard
            self._emit(self.pending.popleft())
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
            ex = self._new_exchange("http", None)  # type: ignore[arg-type]
            ex.damage.append("response without a captured request")
            self.table.note_damage(self.tc.conn, "response without a captured request")
        ex.status, ex.reason, ex.response_time = status, head.reason, head.ts
        if ex.http_version is None:
            ex.http_version = head.version
        ex.response_headers = head.headers
        meta = ex.response_headers.get("x-envoy-peer-metadata")
        if meta:
            ex.server_peer_workload, ex.server_peer_namespace = decode_peer_metadata(meta)
        self.responding = ex
        if status == 101 or (ex.method == "CONNECT" and 200 <= status < 300):
            # the connection now carries another protocol (WebSocket, a tunnel): stop here
            self._response_end(0, head.ts)
            self.done = True
            self.client.stop()  # type: ignore[union-attr]
            self.server.stop()  # type: ignore[union-attr]
            return False
        return not (ex.method == "HEAD" or status in (204, 304))

    def _response_end(self, body_bytes: int, ts: float) -> None:
        ex = self.responding
        if ex is not None:
            ex.response_body_bytes = body_bytes
            self.responding = None
            self._emit(ex)

    # -- TLS -------------------------------------------------------------------------------------
    def _tls_data(self, from_client: bool, payload: bytes, ts: float) -> None:
        side: HelloAssembler = self.client if from_client else self.server  # type: ignore[assignment]
        if side.done or side.failed:
            return
        first = not side.records and not side.handshake
        if self.tls is None and first and from_client:
            self.tls = self._new_exchange("tls", ts)
        elif self.tls is None and not from_client and first:
            self.tls = self._new_exchange("tls", None)  # type: ignore[arg-type]
        if not from_client and first:
            self.tls.response_time = ts  # type: ignore[union-attr]
        msg = side.feed(payload)
        ex = self.tls
        if msg is not None and ex is not None:
            mtype, body = msg
            try:
                if from_client and mtype == 1:
                    hello = parse_client_hello(body)
                    ex.sni, ex.alpn, ex.tls_offered_versions = hello.sni, hello.alpn, hello.versions
                elif not from_client and mtype == 2:
                    ex.tls_version = parse_server_hello(body).version
                else:
                    side.failed = f"handshake message type {mtype} where a hello should be"
            except (ValueError, IndexError) as e:
                side.failed = f"bad {'Client' if from_client else 'Server'}Hello: {e}"
        if side.failed:
            self._damage(from_client, side.failed)
        self._tls_check_done()

    def _tls_check_done(self) -> None:
        c, s = self.client, self.server
        if (c.done or c.failed) and (s.done or s.failed):  # type: ignore[union-attr]
            self.done = True
            if self.tls is not None:
                self._emit(self.tls)
                self.tls = None

    # -- the end ---------------------------------------------------------------------------------
    def _emit(self, ex: Exchange) -> None:
        self.exchanges += 1
        self.table.ready.append(ex)

    def close(self, ts: float) -> None:
        """The connection is over: whatever is still open is emitted as it stands."""
        if self.protocol == "http" and not self.done:
            self.client.close(ts)  # type: ignore[union-attr]
            self.server.close(ts)  # type: ignore[union-attr]
        if self.responding is not None:
            self._response_end(0, ts)
        while self.pending:
            self._emit(self.pending.popleft())
        if self.tls is not None:
            self._emit(self.tls)
            self.tls = None
        self.done = True


class _Tracked:
    """One tracked connection: its model, both reassemblers, its dialogue and a few counters."""

    __slots__ = ("conn", "first_is_client", "c2s", "s2c", "dialogue", "fins", "first_time", "last_time",
                 "segments", "key", "client_bytes", "server_bytes", "buffered")

    def __init__(self, conn: Connection, first_is_client: bool, key: tuple, ts: float) -> None:
        self.conn = conn
        self.first_is_client = first_is_client
        self.key = key
        self.dialogue: _Dialogue | None = None
        self.c2s: StreamReassembler | None = None
        self.s2c: StreamReassembler | None = None
        self.fins = 0
        self.first_time = ts
        self.last_time = ts
        self.segments = 0
        self.client_bytes = 0  # payload seen, retransmissions included
        self.server_bytes = 0
        self.buffered = 0  # bytes this connection holds, as last counted


def _held(tc: _Tracked) -> int:
    """Bytes a connection holds: out-of-order segments, an unfinished head or hello."""
    n = tc.c2s.pending_bytes + tc.s2c.pending_bytes  # type: ignore[union-attr]
    dlg = tc.dialogue
    for side in (dlg.client, dlg.server):  # type: ignore[union-attr]
        if isinstance(side, HttpStreamParser):
            n += len(side.buf)
        elif side is not None:
            n += len(side.records) + len(side.handshake)
    return n


class ConnectionTable:
    """All connections of one capture. Feed segments with ``segment()``; completed Exchanges
    collect in ``ready`` (the caller drains it); ``finish()`` closes what is left at the end."""

    def __init__(self, capture: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_buffered: int = DEFAULT_MAX_BUFFERED,
                 on_connection: Callable[[ConnectionSummary], None] | None = None) -> None:
        self.capture = capture
        self.max_connections = max_connections
        self.max_buffered = max_buffered
        self.buffered = 0  # bytes held by all connections together
        self.on_connection = on_connection
        self.conns: OrderedDict[tuple, _Tracked] = OrderedDict()
        self.ready: list[Exchange] = []
        self.damage: list[str] = []
        self.damage_count = 0
        self.connections = 0
        self.evicted = 0

    def note_damage(self, conn: Connection, text: str) -> None:
        self.damage_count += 1
        if len(self.damage) < MAX_DAMAGE:
            self.damage.append(f"{conn.src}:{conn.sport} -> {conn.dst}:{conn.dport}: {text}")

    def segment(self, ts: float, src: str, sport: int, dst: str, dport: int, seq: int, ack: int,
                flags: int, payload: bytes, missing: int = 0, interface: str | None = None) -> None:
        """One TCP segment as captured (``missing``: payload bytes the snaplen cut off)."""
        key = (src, sport, dst, dport)
        conns = self.conns
        tc = conns.get(key)
        forward = True
        if tc is None:
            tc = conns.get((dst, dport, src, sport))
            forward = False
            if tc is None:
                if flags & RST and not payload:
                    return  # a reset for a connection we never saw: nothing to track
                tc = self._open(key, ts, flags, payload, interface)
                forward = True
        conns.move_to_end(tc.key)
        tc.last_time = ts
        tc.segments += 1
        from_client = forward == tc.first_is_client
        conn = tc.conn
        if flags & SYN:
            if from_client and not flags & ACK:
                conn.client_isn = seq
                conn.syn_time = ts if conn.syn_time is None else conn.syn_time
                if tc.c2s is not None:
                    tc.c2s.syn(seq)
            elif not from_client and flags & ACK:
                conn.server_isn = seq
                conn.handshake_seen = conn.client_isn is not None
                if tc.s2c is not None:
                    tc.s2c.syn(seq)
        if payload or missing:
            if from_client:
                tc.client_bytes += len(payload)
            else:
                tc.server_bytes += len(payload)
            dlg = tc.dialogue
            if dlg is None:  # reassembly starts with the first payload: idle connections stay small
                dlg = tc.dialogue = _Dialogue(self, tc)
                tc.c2s = StreamReassembler(_Side(dlg, True))
                tc.s2c = StreamReassembler(_Side(dlg, False))
                if conn.client_isn is not None:
                    tc.c2s.syn(conn.client_isn)
                if conn.server_isn is not None:
                    tc.s2c.syn(conn.server_isn)
            if not dlg.done:
                own, other = (tc.c2s, tc.s2c) if from_client else (tc.s2c, tc.c2s)
                if flags & ACK and other.pending:  # type: ignore[union-attr]
                    other.acked(ack, ts)  # type: ignore[union-attr]
                own.segment(seq, payload, ts, missing)  # type: ignore[union-attr]
                held = _held(tc)
                if held != tc.buffered:
                    self.buffered += held - tc.buffered
                    tc.buffered = held
                    if self.buffered > self.max_buffered:
                        self._shed(ts)
        if flags & (FIN | RST):
            if flags & RST:
                self._close(tc, ts, "rst")
            else:
                tc.fins |= 1 if from_client else 2
                if tc.fins == 3:
                    self._close(tc, ts, "fin")

    def _open(self, key: tuple, ts: float, flags: int, payload: bytes, interface: str | None) -> _Tracked:
        src, sport, dst, dport = key
        if flags & SYN:
            first_is_client = not flags & ACK
        elif payload and (looks_like_request(payload) or (looks_like_handshake(payload)
                                                           and payload[5:6] == b"\x01")):
            first_is_client = True
        elif payload and (looks_like_response(payload) or (looks_like_handshake(payload)
                                                            and payload[5:6] == b"\x02")):
            first_is_client = False
        else:  # no clue in the bytes: the server is the side with the lower (well-known) port
            first_is_client = sport >= dport
        if first_is_client:
            conn = Connection(src=src, sport=sport, dst=dst, dport=dport, capture=self.capture,
                              interface=interface)
        else:
            conn = Connection(src=dst, sport=dport, dst=src, dport=sport, capture=self.capture,
                              interface=interface)
        tc = _Tracked(conn, first_is_client, key, ts)
        self.conns[key] = tc
        self.connections += 1
        if len(self.conns) > self.max_connections:
            _, oldest = next(iter(self.conns.items()))
            self.evicted += 1
            self._close(oldest, ts, "evicted")
        return tc

    def _shed(self, ts: float) -> None:
        """Over the memory budget: close the least recently active connections until under it."""
        while self.buffered > self.max_buffered and self.conns:
            _, oldest = next(iter(self.conns.items()))
            self.evicted += 1
            self._close(oldest, ts, "evicted")

    def _close(self, tc: _Tracked, ts: float, why: str) -> None:
        if self.conns.pop(tc.key, None) is None:
            return  # already closed (evicted while its own segment was being handled)
        self.buffered -= tc.buffered
        tc.buffered = 0
        dlg = tc.dialogue
        if dlg is not None and not dlg.done:
            tc.c2s.flush(ts)  # type: ignore[union-attr]
            tc.s2c.flush(ts)  # type: ignore[union-attr]
        if dlg is not None:
            if why == "evicted" and not dlg.done and (dlg.pending or dlg.responding or dlg.tls):
                dlg._damage(True, "connection evicted: too many connections tracked at once")
            dlg.close(ts)
        if self.on_connection is not None:
            c2s, s2c = tc.c2s, tc.s2c
            self.on_connection(ConnectionSummary(
                conn=tc.conn, protocol=dlg.protocol if dlg else "", first_time=tc.first_time,
                last_time=tc.last_time, segments=tc.segments, client_bytes=tc.client_bytes,
                server_bytes=tc.server_bytes, gaps=(c2s.gaps + s2c.gaps) if c2s and s2c else 0,
                exchanges=dlg.exchanges if dlg else 0, closed=why))
        if dlg is not None:
            # the dialogue, its parsers (whose callbacks are its bound methods) and the connection
            # refer to each other: break the cycles, so a closed connection is freed at once even
            # while the cyclic GC is off (decoders.analyze turns it off for big captures)
            dlg.client = dlg.server = None
            dlg.tc = None  # type: ignore[assignment]
            tc.dialogue = tc.c2s = tc.s2c = None

    def finish(self) -> None:
        """End of capture: close every connection still open."""
        while self.conns:
            _, tc = next(iter(self.conns.items()))
            self._close(tc, tc.last_time, "capture-end")
