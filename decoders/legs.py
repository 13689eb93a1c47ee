"""Sightings and legs: the units stitching works on.

A *sighting* is one TCP connection as seen by the captures — every copy of it (``tcpdump -i any``
records a routed packet once per interface; two captures may both see it) folded into one, with
its exchanges de-duplicated. A *leg* is a chain of sightings joined by NAT hops: one logical
connection from the host that really sent it to the host that really received it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshscope.model import Connection, Exchange


def endpoint(ip: str, port: int) -> str:
    """"ip:port", with IPv6 addresses bracketed."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def conn_text(c: Connection) -> str:
    return f"{endpoint(c.src, c.sport)} → {endpoint(c.dst, c.dport)}"


@dataclass(slots=True, eq=False)
class Sighting:
    """One TCP connection (5-tuple + initial sequence number) with every copy of it folded in."""

    conn: Connection  # the first copy seen
    exchanges: list[Exchange] = field(default_factory=list)  # one per position, earliest copy kept
    seen_at: list[tuple[str, str | None]] = field(default_factory=list)  # (capture, interface)
    duplicates: list[str] = field(default_factory=list)  # ids of the copies folded away

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


@dataclass(slots=True, eq=False)
class Leg:
    """Sightings joined by NAT, first the one nearest the sender; exchanges come from one of them."""

    sides: list[Sighting]
    nat: list = field(default_factory=list)  # NatLink between consecutive sides (decoders.nat_hops)

    @property
    def sender(self) -> str:
        return self.sides[0].conn.src

    @property
    def receiver(self) -> str:
        return self.sides[-1].conn.dst

    @property
    def primary(self) -> Sighting:
        """The side whose exchanges stand for the leg: the one nearest the receiver that has most."""
        return max(reversed(self.sides), key=lambda s: len(s.exchanges))

    @property
    def exchanges(self) -> list[Exchange]:
        return self.primary.exchanges


def _identity(c: Connection) -> tuple:
    # the ISN tells apart a reused 5-tuple; without a handshake the 5-tuple alone must do
    return (c.src, c.sport, c.dst, c.dport, c.client_isn)


def fold_copies(exchanges: Iterable[Exchange]) -> list[Sighting]:
    """Group exchanges by connection and fold the copies of one connection (other interface, other
    capture) into one sighting: copies are not retransmissions and not separate hops."""
    by_conn: dict[tuple, Sighting] = {}
    slots: dict[tuple, dict[tuple[str, int], int]] = {}
    for ex in exchanges:
        ident = _identity(ex.conn)
        s = by_conn.get(ident)
        if s is None:
            # a copy of its own: folding fills it in, and records are never changed
            s = by_conn[ident] = Sighting(conn=dataclasses.replace(ex.conn))
            slots[ident] = {}
        where = (ex.conn.capture, ex.conn.interface)
        if where not in s.seen_at:
            s.seen_at.append(where)
        _merge_conn(s.conn, ex.conn)
        pos = (ex.exchange_type, ex.index)
        at = slots[ident].get(pos)
        if at is None:
            slots[ident][pos] = len(s.exchanges)
            s.exchanges.append(ex)
            continue
        kept = s.exchanges[at]
        if _earlier(ex, kept):  # keep the earliest copy: the one nearest the sender
            s.exchanges[at] = ex
            s.duplicates.append(kept.id)
        else:
            s.duplicates.append(ex.id)
    for s in by_conn.values():
        s.exchanges.sort(key=lambda e: (e.index, e.exchange_type != "tls"))
    return sorted(by_conn.values(), key=lambda s: s.start)


def _merge_conn(kept: Connection, other: Connection) -> None:
    """Fill what the first copy missed (a copy may have caught the SYN/ACK the other did not)."""
    if kept.server_isn is None and other.server_isn is not None:
        kept.server_isn = other.server_isn
    if other.syn_time is not None and (kept.syn_time is None or other.syn_time < kept.syn_time):
        kept.syn_time = other.syn_time
    kept.handshake_seen = kept.handshake_seen or other.handshake_seen


def _earlier(a: Exchange, b: Exchange) -> bool:
    ta, tb = a.request_time, b.request_time
    if ta is None:
        return False
    return tb is None or ta < tb


def exchange_time(ex: Exchange) -> float:
    """When an exchange started: its request, else its response, else its connection's SYN."""
    for t in (ex.request_time, ex.response_time, ex.conn.syn_time):
        if t is not None:
            return t
    return 0.0
