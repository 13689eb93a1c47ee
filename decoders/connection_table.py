"""The shared core every backend feeds with TCP segments: it tracks connections (bounded in number and
in bytes held), orients them client → server (also without a handshake), reassembles each direction
and hands the bytes to the protocol analyzer decoders.detect chose (HTTP/1, HTTP/2, TLS hello),
which turns them into Exchanges.

Backends differ only in how they read and dissect packets into segments; from here on the
answers are the same by construction."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from meshscope.decoders.analyzer import Analyzer
from meshscope.decoders.detect import choose_analyzer, first_is_client
from meshscope.decoders.pod_labels import process_side
from meshscope.decoders.tcp_flags import ACK, CONTROL, FIN, RST, SYN
from meshscope.decoders.tcp_reassembly import StreamReassembler

from meshscope.model import Connection, Exchange

DEFAULT_MAX_CONNECTIONS = 100_000
DEFAULT_MAX_BUFFERED = 128 << 20  # bytes held across all connections (heads, hellos, out-of-order data)
MAX_DAMAGE = 100


def wanted(flags: int, payload_len: int) -> bool:
    """Segments the table needs: payload, or SYN/FIN/RST. Pure ACKs carry nothing it uses, so every
    backend drops them before dissecting further (which is also what makes the fast path fast)."""
    return payload_len > 0 or bool(flags & CONTROL)


@dataclass(slots=True)
class ConnectionSummary:
    """Per-connection facts, also for connections that carried no HTTP or TLS."""

    conn: Connection
    protocol: str  # "http", "h2", "tls", "other" or "" (no payload seen)
    first_time: float
    last_time: float
    segments: int  # segments the table kept (payload, SYN, FIN, RST; not pure ACKs)
    client_bytes: int  # payload bytes seen each way, retransmissions included
    server_bytes: int
    gaps: int
    exchanges: int
    closed: str  # "fin", "rst", "evicted", "capture-end"


class _Undecided:
    """A direction's sink until the connection's protocol is known: its first bytes (either way)
    choose the analyzer (decoders.detect), which then takes both directions."""

    __slots__ = ("tc", "from_client")

    def __init__(self, tc: _Tracked, from_client: bool) -> None:
        self.tc = tc
        self.from_client = from_client

    def data(self, payload: bytes, ts: float) -> None:
        tc = self.tc
        analyzer = choose_analyzer(tc, self.from_client, payload)
        tc.hand_over(analyzer)
        if not analyzer.done:
            (analyzer.client if self.from_client else analyzer.server).data(payload, ts)

    def gap(self, nbytes: int, ts: float) -> None:
        pass  # before any protocol is known there is nothing to resynchronise


class _Tracked:
    """One tracked connection: its model, both reassemblers, its analyzer and a few counters. It is
    the analyzer's host (decoders.analyzer.Host)."""

    __slots__ = ("conn", "first_is_client", "c2s", "s2c", "analyzer", "fins", "first_time", "last_time",
                 "segments", "key", "client_bytes", "server_bytes", "buffered", "table", "ready", "started")

    def __init__(self, table: ConnectionTable, conn: Connection, first_is_client: bool, key: tuple,
                 ts: float) -> None:
        self.table = table
        self.ready = table.ready
        self.conn = conn
        self.first_is_client = first_is_client
        self.key = key
        self.analyzer: Analyzer | None = None  # chosen by the first payload
        self.started = False  # reassembly runs (from the first payload on: idle connections stay small)
        self.c2s: StreamReassembler | None = None
        self.s2c: StreamReassembler | None = None
        self.fins = 0
        self.first_time = ts
        self.last_time = ts
        self.segments = 0
        self.client_bytes = 0  # payload seen, retransmissions included
        self.server_bytes = 0
        self.buffered = 0  # bytes this connection holds, as last counted

    def note_damage(self, text: str) -> None:
        self.table.note_damage(self.conn, text)

    @property
    def keylog(self):
        """The TLS key log the capture is read with (None: TLS is read as hellos only)."""
        return self.table.keylog

    def hand_over(self, analyzer: Analyzer) -> None:
        """From now on ``analyzer`` gets this connection's bytes (first choice, or a protocol switch)."""
        old, self.analyzer = self.analyzer, analyzer
        if old is not None:
            old.release()
        self.c2s.sink = analyzer.client  # type: ignore[union-attr]
        self.s2c.sink = analyzer.server  # type: ignore[union-attr]

    def held(self) -> int:
        """Bytes a connection holds: out-of-order segments, an unfinished head, hello or frame."""
        n = self.c2s.pending_bytes + self.s2c.pending_bytes  # type: ignore[union-attr]
        return n if self.analyzer is None else n + self.analyzer.held()

    def done(self) -> bool:
        return self.analyzer is not None and self.analyzer.done


class ConnectionTable:
    """All connections of one capture. Feed segments with ``segment()``; completed Exchanges
    collect in ``ready`` (the caller drains it); ``finish()`` closes what is left at the end."""

    def __init__(self, capture: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_buffered: int = DEFAULT_MAX_BUFFERED,
                 on_connection: Callable[[ConnectionSummary], None] | None = None,
                 keylog=None) -> None:
        self.capture = capture
        self.keylog = keylog  # decoders.tls_keylog.KeyLog: TLS records are decrypted with it
        self.dns = None  # decoders.dns_lookups.DnsLookups: where DNS over TCP goes (None: not read)
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
        self.snap_cut = 0  # segments whose payload the capture's snaplen cut short
        self.names = None  # decoders.pod_labels.K8sNames: pod and service names by IP, for new connections

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
            if missing:
                self.snap_cut += 1
            if from_client:
                tc.client_bytes += len(payload)
            else:
                tc.server_bytes += len(payload)
            if not tc.started:  # reassembly starts with the first payload: idle connections stay small
                tc.started = True
                tc.c2s = StreamReassembler(_Undecided(tc, True))
                tc.s2c = StreamReassembler(_Undecided(tc, False))
                if conn.client_isn is not None:
                    tc.c2s.syn(conn.client_isn)
                if conn.server_isn is not None:
                    tc.s2c.syn(conn.server_isn)
            analyzer = tc.analyzer
            if analyzer is None or not analyzer.done:
                own, other = (tc.c2s, tc.s2c) if from_client else (tc.s2c, tc.c2s)
                if flags & ACK and other.pending:  # type: ignore[union-attr]
                    other.acked(ack, ts)  # type: ignore[union-attr]
                own.segment(seq, payload, ts, missing)  # type: ignore[union-attr]
                held = tc.held()
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
        client_first = not flags & ACK if flags & SYN else first_is_client(payload, sport, dport)
        if client_first:
            conn = Connection(src=src, sport=sport, dst=dst, dport=dport, capture=self.capture,
                              interface=interface)
        else:
            conn = Connection(src=dst, sport=dport, dst=src, dport=sport, capture=self.capture,
                              interface=interface)
        if self.names is not None:
            self.names.label(conn)
        tc = _Tracked(self, conn, client_first, key, ts)
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
        analyzer = tc.analyzer
        if tc.started and (analyzer is None or not analyzer.done):
            tc.c2s.flush(ts)  # type: ignore[union-attr]
            tc.s2c.flush(ts)  # type: ignore[union-attr]
            analyzer = tc.analyzer  # flushing may have chosen it (or switched protocols)
        if analyzer is not None:
            if why == "evicted" and not analyzer.done and analyzer.busy():
                analyzer.cut_short("connection evicted: too many connections tracked at once")
            analyzer.close(ts, why)
        if self.on_connection is not None:
            c2s, s2c = tc.c2s, tc.s2c
            self.on_connection(ConnectionSummary(
                conn=tc.conn, protocol=analyzer.protocol if analyzer else "", first_time=tc.first_time,
                last_time=tc.last_time, segments=tc.segments, client_bytes=tc.client_bytes,
                server_bytes=tc.server_bytes, gaps=(c2s.gaps + s2c.gaps) if c2s and s2c else 0,
                exchanges=analyzer.exchanges if analyzer else 0, closed=why))
        if analyzer is not None:
            analyzer.release()
        if tc.started:
            tc.c2s.sink = tc.s2c.sink = None  # type: ignore[union-attr,assignment]
        tc.analyzer = tc.c2s = tc.s2c = None
        tc.table = None  # type: ignore[assignment]

    def label(self, src: str, sport: int, dst: str, dport: int, labels: dict[str, str],
              direction: int) -> None:
        """Labels a packet from src to dst carried (its capture's comment: the process on this host that
        sent or received it, by ``direction``) go on its connection, on that end's side."""
        tc = self.conns.get((src, sport, dst, dport)) or self.conns.get((dst, dport, src, sport))
        if tc is None or not labels:
            return
        side = process_side(direction, tc.conn.src == src and tc.conn.sport == sport)
        tc.conn.labels.update({f"{side}.{k}": v for k, v in labels.items()})

    def finish(self) -> None:
        """End of capture: close every connection still open."""
        while self.conns:
            _, tc = next(iter(self.conns.items()))
            self._close(tc, tc.last_time, "capture-end")
