"""A DNS lookup that went wrong or slowly before a request is part of that request's story: which
lookups belong to which request, by client and name.

A lookup belongs to a request (HTTP Host or :authority, or TLS/QUIC SNI) from the same client when
its name lines up with the request's — the name asked (``catalog.default``), the name answered
(``catalog.default.svc.cluster.local``) or an expansion of it — and it ended before the request
began, at most LOOKUP_WINDOW_S earlier; the latest such lookup of each query type is taken. Only
lookups worth telling join a flow: an NXDOMAIN along the way, a failure, a retry, or an answer
slower than SLOW_LOOKUP_S."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from meshscope.decoders.legs import Leg, exchange_time

from meshscope.model import Exchange

LOOKUP_WINDOW_S = 30.0
SLOW_LOOKUP_S = 0.1


def worth_telling(ex: Exchange) -> bool:
    """An NXDOMAIN on the way, no success, a retry, or a slow answer."""
    d = ex.dns
    if d is None:
        return False
    if d.rcode != "NOERROR" or d.retries or d.attempts:  # attempts: names tried before, NXDOMAIN
        return True
    return ex.response_time is None or ex.request_time is None or \
        ex.response_time - ex.request_time >= SLOW_LOOKUP_S


def request_name(ex: Exchange) -> str | None:
    """The name a request was sent to: Host / :authority without its port, else the SNI."""
    host = ex.host
    if host:
        if host.startswith("["):
            return None  # an IPv6 literal: no lookup
        return host.rsplit(":", 1)[0].lower().rstrip(".") if ":" in host else host.lower().rstrip(".")
    return ex.sni.lower() if ex.sni else None


def _lines_up(name: str, lookup: Exchange) -> bool:
    d = lookup.dns
    assert d is not None
    answered = d.name.lower().rstrip(".")
    return name == answered or name == (d.lookup or "").lower() or answered.startswith(name + ".")


def lookups_before(legs: Iterable[Leg]) -> dict[str, list[Exchange]]:
    """Request exchange id → the lookups (worth telling) that led to it, in time order."""
    lookups: dict[str, list[Exchange]] = defaultdict(list)  # client address → its lookups
    requests: list[Exchange] = []
    for leg in legs:
        for ex in leg.exchanges:
            if ex.exchange_type == "dns":
                if ex.dns is not None and worth_telling(ex):
                    lookups[ex.conn.src].append(ex)
            elif ex.exchange_type in ("http", "tls"):
                requests.append(ex)
    if not lookups:
        return {}
    for found in lookups.values():
        found.sort(key=exchange_time)
    out: dict[str, list[Exchange]] = {}
    for req in requests:
        mine = lookups.get(req.conn.src)
        name = request_name(req) if mine else None
        if not name:
            continue
        start = exchange_time(req)
        latest: dict[str, Exchange] = {}
        for lk in mine:  # type: ignore[union-attr]
            end = lk.response_time if lk.response_time is not None else exchange_time(lk)
            if end > start:
                break
            if start - end <= LOOKUP_WINDOW_S and _lines_up(name, lk):
                latest[lk.dns.qtype] = lk  # type: ignore[union-attr]
        if latest:
            out[req.id] = sorted(latest.values(), key=exchange_time)
    return out
