"""Sightings and legs: the units stitching works on.

A *sighting* is one TCP connection as seen by the captures — every copy of it (``tcpdump -i any``
records a routed packet once per interface; two captures may both see it) folded into one, with
its exchanges de-duplicated. A *leg* is a chain of sightings joined by NAT hops: one logical
connection from the host that really sent it to the host that really received it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshscope.decoders.istio_mtls import INBOUND_PASSTHROUGH_SOURCE

from meshscope.model import Connection, Exchange


def endpoint(ip: str, port: int) -> str:
    """"ip:port", with IPv6 addresses bracketed."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def conn_text(c: Connection) -> str:
    return f"{endpoint(c.src, c.sport)} → {endpoint(c.dst, c.dport)}"


def exchange_time(ex: Exchange) -> float:
    """When an exchange started: its request, else its response, else its connection's SYN."""
    for t in (ex.request_time, ex.response_time, ex.conn.syn_time):
        if t is not None:
            return t
    return 0.0


def _earlier(a: Exchange, b: Exchange) -> bool:
    ta, tb = a.request_time, b.request_time
    if ta is None:
        return False
    return tb is None or ta < tb


@dataclass(slots=True, eq=False)
class Sighting:
    """One TCP connection (5-tuple + initial sequence number) with every copy of it folded in."""

    conn: Connection  # the first copy seen (copied before folding changes anything)
    exchanges: list[Exchange] = field(default_factory=list)  # one per position, earliest copy kept
    seen_at: list[tuple[str, str | None]] = field(default_factory=list)  # (capture, interface)
    duplicates: list[str] = field(default_factory=list)  # ids of the copies folded away
    slots: dict[tuple[str, int], int] | None = None  # (type, index) → position, for long connections

    @property
    def start(self) -> float:
        c = self.conn
        if c.syn_time is not None:
            return c.syn_time
        times = [e.request_time for e in self.exchanges if e.request_time is not None]
        return min(times) if times else 0.0

    @property
    def captures(self) -> list[str]:
        return sorted({cap for cap, _ in self.seen_at})

    def add(self, ex: Exchange, where: tuple[str, str | None]) -> None:
        """Take one exchange of this connection, seen at where (capture, interface); a copy of one
        already held keeps the earliest."""
        if where not in self.seen_at:
            self.seen_at.append(where)
            if len(self.seen_at) > 1:
                self._merge_conn(ex.conn)
        at = self._position(ex.exchange_type, ex.index)
        if at is None:
            if self.slots is not None:
                self.slots[(ex.exchange_type, ex.index)] = len(self.exchanges)
            self.exchanges.append(ex)
            return
        kept = self.exchanges[at]
        if _earlier(ex, kept):  # the earliest copy is the one nearest the sender
            self.exchanges[at] = ex
            self.duplicates.append(kept.id)
        else:
            self.duplicates.append(ex.id)

    def _position(self, kind: str, index: int) -> int | None:
        """Where the exchange at this position on the connection is held, if it is: a short scan for
        the usual few exchanges, an index once a connection carries many (keep-alive)."""
        if self.slots is None:
            if len(self.exchanges) < 16:
                for i, e in enumerate(self.exchanges):
                    if e.index == index and e.exchange_type == kind:
                        return i
                return None
            self.slots = {(e.exchange_type, e.index): i for i, e in enumerate(self.exchanges)}
        return self.slots.get((kind, index))

    def _merge_conn(self, other: Connection) -> None:
        """Fill what the first copy missed (a copy may have caught the SYN/ACK the other did not);
        records are never changed, so the first change works on a copy."""
        kept = self.conn
        fill_isn = kept.server_isn is None and other.server_isn is not None
        earlier = other.syn_time is not None and (kept.syn_time is None or other.syn_time < kept.syn_time)
        if not (fill_isn or earlier or (other.handshake_seen and not kept.handshake_seen)):
            return
        if any(kept is ex.conn for ex in self.exchanges):
            kept = self.conn = dataclasses.replace(kept)
        if fill_isn:
            kept.server_isn = other.server_isn
        if earlier:
            kept.syn_time = other.syn_time
        kept.handshake_seen = kept.handshake_seen or other.handshake_seen


@dataclass(slots=True, eq=False)
class Leg:
    """Sightings joined by NAT, first the one nearest the sender; exchanges come from one of them."""

    sides: list[Sighting]
    nat: list = field(default_factory=list)  # NatLink between consecutive sides (decoders.nat_hops)
    primary: Sighting | None = None  # the side whose exchanges stand for the leg (set by settle())
    sender_host: str | None = None  # set when the sender's address is loopback: the host it is on
    receiver_host: str | None = None

    def settle(self) -> Leg:
        """Choose the primary side once the chain is complete: nearest the receiver, with most exchanges."""
        self.primary = max(reversed(self.sides), key=lambda s: len(s.exchanges))
        return self

    @property
    def sender(self) -> str:
        """The host that sent the requests (a loopback address stands for the capture's own host)."""
        return self.sender_host or self.sides[0].conn.src

    @property
    def receiver(self) -> str:
        return self.receiver_host or self.sides[-1].conn.dst

    @property
    def exchanges(self) -> list[Exchange]:
        return self.primary.exchanges if self.primary is not None else self.settle().exchanges


def fold_copies(exchanges: Iterable[Exchange]) -> list[Sighting]:
    """Group exchanges by connection and fold the copies of one connection (other interface, other
    capture) into one sighting: copies are not retransmissions and not separate hops."""
    by_conn: dict[tuple, Sighting] = {}
    places: dict[tuple, tuple] = {}  # one (capture, interface) tuple, shared by every sighting
    for ex in exchanges:
        c = ex.conn
        # the ISN tells apart a reused 5-tuple; without a handshake the 5-tuple alone must do
        ident = (c.src, c.sport, c.dst, c.dport, c.client_isn)
        s = by_conn.get(ident)
        if s is None:
            s = by_conn[ident] = Sighting(conn=c)
        where = (c.capture, c.interface)
        s.add(ex, places.setdefault(where, where))
    for s in by_conn.values():
        if len(s.exchanges) > 1:
            s.exchanges.sort(key=lambda e: (e.index, e.exchange_type != "tls"))
    return sorted(by_conn.values(), key=lambda s: s.start)


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def place_loopback(legs: list[Leg]) -> None:
    """Put loopback ends on the host they belong to. In a pod's capture the sidecar talks to its app
    over loopback (127.0.0.6 → pod IP, pod IP → 127.0.0.1:15001): when one capture shows exactly
    one address at the other end of its loopback connections, that address is the capture's host.
    A connection from 127.0.0.6 is an Istio sidecar's inbound passthrough to its own pod's app: it is
    sent by the host it goes to, whatever else the capture shows."""
    local: dict[str, set[str]] = defaultdict(set)
    for leg in legs:
        first = leg.sides[0].conn
        if first.src == INBOUND_PASSTHROUGH_SOURCE and leg.sender_host is None:
            leg.sender_host = leg.sides[-1].conn.dst
        src, dst = first.src, leg.sides[-1].conn.dst
        if is_loopback(src) != is_loopback(dst):
            local[first.capture].add(dst if is_loopback(src) else src)
    if not local:
        return  # no loopback connection in any capture
    for leg in legs:
        hosts = local.get(leg.sides[0].conn.capture)
        if not hosts or len(hosts) != 1:
            continue
        (host,) = hosts
        if is_loopback(leg.sides[0].conn.src):
            leg.sender_host = host
        if is_loopback(leg.sides[-1].conn.dst):
            leg.receiver_host = host
