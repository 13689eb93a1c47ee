"""What every protocol analyzer is: the connection table hands it one connection's reassembled bytes
(``client`` and ``server`` are the sinks of the two directions) and it turns them into Exchanges.

Analyzers own their parsing and their pairing; the table owns connections. A new protocol is a
subclass in a module of its own and one line in ``decoders.detect``."""

from __future__ import annotations

from typing import ClassVar, Protocol

from meshscope.decoders.tcp_reassembly import StreamSink

from meshscope.model import Connection, Exchange


class Host(Protocol):
    """The tracked connection an analyzer runs on (decoders.connection_table)."""

    conn: Connection
    ready: list[Exchange]  # the table's outgoing Exchanges

    def note_damage(self, text: str) -> None: ...

    def hand_over(self, analyzer: Analyzer) -> None: ...


class Analyzer:
    """One connection's application-layer dialogue. ``done``: nothing more to learn from its bytes
    (the table then stops reassembling them)."""

    protocol: ClassVar[str]
    __slots__ = ("host", "conn", "ready", "client", "server", "done", "exchanges", "index",
                 "client_damage", "server_damage", "tunnel")

    def __init__(self, host: Host) -> None:
        self.host = host
        self.conn = host.conn
        self.ready = host.ready
        self.client: StreamSink = _NOWHERE
        self.server: StreamSink = _NOWHERE
        self.done = False
        self.exchanges = 0  # emitted so far
        self.index = 0  # the next exchange's position on the connection
        self.client_damage: list[str] = []  # damage seen before the exchange it belongs to began
        self.server_damage: list[str] = []
        self.tunnel: str | None = None  # inside an HTTP CONNECT tunnel: "CONNECT host:port"

    def held(self) -> int:
        """Bytes buffered (an unfinished head, hello or frame): counted against the table's budget."""
        return 0

    def busy(self) -> bool:
        """Whether an exchange is open (an eviction then cuts it short)."""
        return False

    def cut_short(self, text: str) -> None:
        """The open exchange(s) end before their time (the connection was evicted)."""
        self.damage(None, True, text)

    def close(self, ts: float, why: str = "capture-end") -> None:
        """The connection is over (``why``: "fin", "rst", "evicted", "capture-end"): emit whatever
        is still open, as it stands."""
        self.done = True

    # -- shared by the analyzers ------------------------------------------------------------------
    def new_exchange(self, kind: str, ts: float | None, index: int | None = None) -> Exchange:
        ex = Exchange(exchange_type=kind, conn=self.conn, request_time=ts,
                      index=self.index if index is None else index)
        if index is None:
            self.index += 1
        if self.tunnel is not None:
            ex.tunnel = self.tunnel
        if self.client_damage or self.server_damage:  # damage seen before this exchange began
            ex.damage.extend(self.client_damage)
            ex.damage.extend(self.server_damage)
            self.client_damage.clear()
            self.server_damage.clear()
        return ex

    def emit(self, ex: Exchange) -> None:
        self.exchanges += 1
        self.ready.append(ex)

    def damage(self, target: Exchange | None, from_client: bool, text: str) -> None:
        """Damage on ``target``, or (none open) on the next exchange of the connection."""
        if target is not None:
            target.damage.append(text)
        else:
            (self.client_damage if from_client else self.server_damage).append(text)
        self.host.note_damage(text)

    def release(self) -> None:
        """Break reference cycles (parsers hold bound methods): a closed connection is freed at once,
        also while the cyclic GC is off."""
        self.client = self.server = _NOWHERE
        self.host = None  # type: ignore[assignment]


class _Nowhere:
    """The sink of a direction whose bytes nobody wants."""

    __slots__ = ()

    def data(self, payload: bytes, ts: float) -> None:
        pass

    def gap(self, nbytes: int, ts: float) -> None:
        pass


_NOWHERE = _Nowhere()


class Opaque(Analyzer):
    """A connection in a protocol no analyzer speaks: counted, not parsed."""

    protocol = "other"
    __slots__ = ()

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.done = True
