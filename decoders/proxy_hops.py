"""Proxy hops: a request into an Envoy (or an app) matched with the upstream request(s) it caused.

A proxy opens a new connection, so nothing at the TCP level links the two sides. The request
itself does: ``x-request-id`` (compared normalised — Envoy rewrites the UUID's version nibble
with its sampling decision — and shown raw), the ``x-forwarded-for`` chain the proxy extends with
the address it saw, the B3 ids, and timing (the upstream request happens while the downstream
one is open). Matching is per request, so pooled keep-alive upstream connections that carry
requests of several flows are split correctly. Retries show as several upstream attempts of one
downstream request (``x-envoy-attempt-count``, the same request id sent again). A TLS connection
routed on SNI without termination (Envoy ``tcp_proxy`` behind ``tls_inspector``) is matched by
the same ClientHello (SNI, ALPN, versions) forwarded upstream.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from meshscope.decoders.legs import Leg, conn_text, exchange_time

from meshscope.model import Exchange, normalize_request_id

SLACK_S = 0.005  # clock tolerance between two captures' timestamps
MAX_REQUEST_S = 300.0  # how long a downstream request may stay open while its upstream call runs
MAX_CANDIDATES = 512  # bound the scan of concurrent requests when no id narrows it down
TLS_FORWARD_S = 10.0  # a passthrough proxy forwards the ClientHello this soon after receiving it
IDENTIFYING = 30  # an _http_score from here up has an id, B3 or x-forwarded-for agreeing, not only timing
PROXY_HEADERS = ("x-envoy-attempt-count", "x-envoy-expected-rq-timeout-ms", "x-envoy-decorator-operation",
                 "x-envoy-internal")


@dataclass(slots=True, eq=False)
class ProxyLink:
    """A downstream exchange and the upstream exchange(s) it caused on one route (several = retries)."""

    parent: Exchange
    attempts: list[Exchange]
    kind: str  # "l7-proxy", "app-call" or "tls-passthrough"
    evidence: dict = field(default_factory=dict)
    retries: int = 0


@dataclass(slots=True)
class _Ident:
    """What identifies one request, worked out once: normalised id, B3 ids, forwarding chain."""

    rid: str | None
    b3: dict[str, str]
    xff: list[str]
    method: str | None
    uri: str | None
    proxied: bool  # carries headers only a proxy adds

    @classmethod
    def of(cls, ex: Exchange) -> _Ident:
        h = ex.headers
        b3 = {k: h[f"x-b3-{k}"] for k in ("traceid", "spanid", "parentspanid") if f"x-b3-{k}" in h}
        if "b3" in h and "traceid" not in b3:  # single-header form: trace-span-sampled-parent
            parts = h["b3"].split("-")
            for k, v in zip(("traceid", "spanid", "sampled", "parentspanid"), parts, strict=False):
                b3[k] = v
        if "traceid" in b3:
            b3["traceid"] = b3["traceid"].lower().lstrip("0")  # a 64-bit id zero-padded to 128 is the same
        xff = [p.strip() for p in h.get("x-forwarded-for", "").split(",") if p.strip()]
        return cls(rid=normalize_request_id(h.get("x-request-id")), b3=b3, xff=xff, method=ex.method,
                   uri=ex.uri, proxied=any(name in h for name in PROXY_HEADERS))


class _Inbound:
    """Exchanges by the host that received them, in time order, with a request-id index."""

    def __init__(self, legs: list[Leg]) -> None:
        self.leg_of: dict[str, Leg] = {}
        self._idents: dict[str, _Ident] = {}
        rows: dict[str, list[tuple[float, int, Exchange]]] = defaultdict(list)
        self.by_rid: dict[tuple[str, str], list[Exchange]] = defaultdict(list)
        # only a host that also sends requests can be a proxy or an app calling out
        senders = {leg.sender for leg in legs}
        for leg in legs:
            if leg.receiver not in senders:
                continue
            for ex in leg.exchanges:
                self.leg_of[ex.id] = leg
                rows[leg.receiver].append((exchange_time(ex), len(rows[leg.receiver]), ex))
                if ex.request_id:
                    self.by_rid[(leg.receiver, normalize_request_id(ex.request_id))].append(ex)
        self.times: dict[str, list[float]] = {}
        self.rows: dict[str, list[Exchange]] = {}
        for host, r in rows.items():
            r.sort(key=lambda t: (t[0], t[1]))
            self.times[host] = [t for t, _, _ in r]
            self.rows[host] = [e for _, _, e in r]

    def ident(self, ex: Exchange) -> _Ident:
        """A downstream request's identity, worked out once however many upstream ones look at it."""
        ident = self._idents.get(ex.id)
        if ident is None:
            ident = self._idents[ex.id] = _Ident.of(ex)
        return ident



class _OpenRequests:
    """A sweep over one host's inbound requests in time order: which are open at a given moment.
    Asked with non-decreasing times, it costs O(log n) per request however many there are."""

    def __init__(self, times: list[float], rows: list[Exchange]) -> None:
        self.times, self.rows, self.next = times, rows, 0
        self.ends: list[tuple[float, int]] = []  # heap of (end, position)
        self.open: dict[int, Exchange] = {}  # position → exchange, in start order

    def at(self, t: float) -> list[Exchange]:
        """Requests open at t (latest started first), bounded."""
        times, rows = self.times, self.rows
        while self.next < len(rows) and times[self.next] <= t + SLACK_S:
            ex = rows[self.next]
            heapq.heappush(self.ends, (_end(ex, times[self.next]), self.next))
            self.open[self.next] = ex
            self.next += 1
        while self.ends and self.ends[0][0] < t - SLACK_S:
            self.open.pop(heapq.heappop(self.ends)[1], None)
        return list(itertools.islice(reversed(self.open.values()), MAX_CANDIDATES))


def _end(ex: Exchange, start: float) -> float:
    """Until when a request can still cause upstream requests."""
    if ex.exchange_type == "tls":  # a passthrough proxy forwards the ClientHello at once
        return start + TLS_FORWARD_S
    return ex.response_time if ex.response_time is not None else start + MAX_REQUEST_S


def _open_during(parent: Exchange, t: float, child: Exchange) -> bool:
    """Whether parent was open when child (at t) was sent. Two captures' clocks differ by up to
    SLACK_S; one capture's are exact, so there a request that started after child cannot have caused
    it (on one host's loopback, the proxy's upstream request would otherwise look like the cause of
    the request it forwards, a cycle no flow survives)."""
    slack = 0.0 if parent.conn.capture == child.conn.capture else SLACK_S
    start = exchange_time(parent)
    end = parent.response_time
    return start <= t + slack and (end is None or t <= end + slack)


def _http_score(parent: _Ident, parent_leg: Leg, child: _Ident) -> tuple[int, list[str]]:
    """How strongly child looks caused by parent (0: not at all) and which evidence says so."""
    why: list[str] = []
    score = 1
    if parent.rid and child.rid:
        if parent.rid != child.rid:
            return 0, []
        score += 100
        why.append("x-request-id")
    pb, cb = parent.b3, child.b3
    if pb.get("traceid") and cb.get("traceid"):
        if pb["traceid"] != cb["traceid"]:
            return 0, []
        score += 50
        why.append("b3-traceid")
        if pb.get("spanid") and cb.get("parentspanid") == pb["spanid"]:
            score += 20
            why.append("b3-parent")
    if _extends_xff(parent, parent_leg, child):
        score += 30
        why.append("x-forwarded-for")
    if child.method and (parent.method, parent.uri) == (child.method, child.uri):
        score += 10
        why.append("method+uri")
    why.append("timing")
    return score, why


def _seen_from(leg: Leg) -> tuple[str, str]:
    """The addresses a proxy may have recorded for a downstream request: after any SNAT, and the sender."""
    return leg.sides[-1].conn.src, leg.sender


def _extends_xff(parent: _Ident, parent_leg: Leg, child: _Ident) -> bool:
    """Did the proxy append the address it saw the downstream request come from?"""
    cx = child.xff
    return bool(cx) and cx[-1] in _seen_from(parent_leg) and cx[:-1] == parent.xff


def _http_kind(parent: _Ident, parent_leg: Leg, child: _Ident) -> str:
    return "l7-proxy" if child.proxied or _extends_xff(parent, parent_leg, child) else "app-call"


def _tls_score(parent: Exchange, child: Exchange) -> int:
    if parent.exchange_type != "tls" or not child.sni or parent.sni != child.sni:
        return 0
    return 1 + (parent.alpn == child.alpn) + (parent.tls_offered_versions == child.tls_offered_versions)


def match_proxy(legs: list[Leg]) -> list[ProxyLink]:
    """Every proxy/app hop between exchanges of the legs; each upstream exchange gets one parent."""
    inbound = _Inbound(legs)
    outbound: dict[str, list[tuple[float, int, Exchange, Leg]]] = defaultdict(list)
    for leg in legs:
        if leg.sender in inbound.rows:  # a host nothing came into caused nothing
            for child in leg.exchanges:
                outbound[leg.sender].append((exchange_time(child), len(outbound[leg.sender]), child, leg))
    children: dict[str, list[tuple[Exchange, Leg, list[str]]]] = defaultdict(list)
    parents: dict[str, Exchange] = {}
    tls_used: set[str] = set()
    for host, sent in outbound.items():
        sent.sort(key=lambda row: (row[0], row[1]))
        sweep = _OpenRequests(inbound.times[host], inbound.rows[host])
        for t, _, child, leg in sent:
            found = _find_parent(inbound, leg, child, t, sweep.at(t), tls_used)
            if found is not None:
                parent, why = found
                parents[parent.id] = parent
                children[parent.id].append((child, leg, why))
    links: list[ProxyLink] = []
    for pid, kids in children.items():
        links += _group_attempts(parents[pid], inbound.leg_of[pid], kids)
    links.sort(key=lambda lk: exchange_time(lk.attempts[0]))
    return links


def _find_parent(inbound: _Inbound, leg: Leg, child: Exchange, t: float, open_now: list[Exchange],
                 tls_used: set[str]) -> tuple[Exchange, list[str]] | None:
    """The downstream request that caused child, among those open when it was sent."""
    if child.exchange_type == "tls":
        best = None
        for cand in open_now:
            if cand.id in tls_used or inbound.leg_of[cand.id] is leg:
                continue
            score = _tls_score(cand, child)
            if score and (best is None or score > best[0]):
                best = (score, cand)
        if best is None:
            return None
        tls_used.add(best[1].id)
        return best[1], ["sni", "client-hello", "timing"]
    me = _Ident.of(child)
    pool = inbound.by_rid.get((leg.sender, me.rid), []) if me.rid else []
    pool = [p for p in pool if _open_during(p, t, child)] or open_now
    if me.xff and len(pool) > 1:  # a proxy appended the address it saw: only those requests qualify
        pool = [p for p in pool if me.xff[-1] in _seen_from(inbound.leg_of[p.id])] or pool
    best = None
    ties = 0
    for cand in pool:
        cand_leg = inbound.leg_of[cand.id]
        if cand_leg is leg or cand.exchange_type != "http" or not _open_during(cand, t, child):
            continue
        score, why = _http_score(inbound.ident(cand), cand_leg, me)
        if score == 1 and cand_leg.sender == leg.receiver:
            continue  # timing alone, and a call straight back to the caller: not evidence of a cause
        if score < IDENTIFYING and (cand.conn.dst, cand.conn.dport) == (child.conn.dst, child.conn.dport):
            continue  # alike and to the same server: two clients of it (a load generator), not a forward
        if score and (best is None or score > best[0]):
            best, ties = (score, cand, why), 1
        elif score and score == best[0]:
            ties += 1
    if best is None or (best[0] < IDENTIFYING and ties > 1):
        return None  # method+uri and timing alone link a call only when no other open request fits as well
    return best[1], best[2]


def _group_attempts(parent: Exchange, parent_leg: Leg,
                    kids: list[tuple[Exchange, Leg, list[str]]]) -> list[ProxyLink]:
    """Upstream requests of one downstream request: a proxy's repeats of it are attempts of one hop;
    an app's distinct calls are hops of their own."""
    kids.sort(key=lambda k: exchange_time(k[0]))
    groups: dict[tuple, list[tuple[Exchange, Leg, list[str]]]] = {}
    for child, leg, why in kids:
        if child.exchange_type == "tls":
            kind = "tls-passthrough"
        else:
            kind = _http_kind(_Ident.of(parent), parent_leg, _Ident.of(child))
        key = (kind, child.method, child.uri) if kind == "l7-proxy" else (kind, child.id)
        groups.setdefault(key, []).append((child, leg, why))
    links = []
    for key, members in groups.items():
        attempts = [c for c, _, _ in members]
        links.append(ProxyLink(parent=parent, attempts=attempts, kind=key[0], retries=_retries(attempts),
                               evidence=_evidence(parent, parent_leg, members)))
    return links


def _retries(attempts: list[Exchange]) -> int:
    counts = [int(a.headers["x-envoy-attempt-count"]) for a in attempts
              if a.headers.get("x-envoy-attempt-count", "").isdigit()]
    return max([len(attempts), *counts]) - 1


def _attempt(c: Exchange, leg: Leg) -> dict:
    row = {"upstream": conn_text(leg.sides[0].conn), "status": c.status,
           "attempt_count": c.headers.get("x-envoy-attempt-count"), "request_id": c.request_id}
    if c.stream_id is not None:  # HTTP/2: which stream of a pooled upstream connection
        row["stream_id"] = c.stream_id
    if c.grpc is not None and c.grpc.status is not None:
        row["grpc_status"] = c.grpc.status
    return row


def _evidence(parent: Exchange, parent_leg: Leg, members: list[tuple[Exchange, Leg, list[str]]]) -> dict:
    first = members[0][0]
    ev: dict = {
        "downstream": conn_text(parent_leg.sides[-1].conn),
        "matched_by": members[0][2],
        "delay_ms": round((exchange_time(first) - exchange_time(parent)) * 1000, 3),
    }
    if first.exchange_type == "tls":
        ev.update(sni=first.sni, alpn=first.alpn, offered_versions=first.tls_offered_versions)
    else:
        ids = {"downstream": parent.request_id, "upstream": [c.request_id for c, _, _ in members]}
        if any(ids["upstream"]) or ids["downstream"]:
            ids["normalised"] = normalize_request_id(first.request_id or parent.request_id)
            ev["request_id"] = ids
        if first.headers.get("x-forwarded-for"):
            ev["x_forwarded_for"] = first.headers["x-forwarded-for"]
        b3 = {k[5:]: v for k, v in first.headers.items() if k.startswith("x-b3-")}
        if "b3" in first.headers:
            b3["b3"] = first.headers["b3"]
        if b3:  # as sent, not normalised
            ev["b3"] = b3
    ev["attempts"] = [_attempt(c, leg) for c, leg, _ in members]
    return ev
