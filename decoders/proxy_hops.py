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

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from decoders.legs import Leg, conn_text, exchange_time
from meshscope.model import Exchange, normalize_request_id

SLACK_S = 0.005  # clock tolerance between two captures' timestamps
MAX_REQUEST_S = 300.0  # how long a downstream request may stay open while its upstream call runs
MAX_CANDIDATES = 512  # bound the scan of concurrent requests when no id narrows it down
TLS_FORWARD_S = 10.0  # a passthrough proxy forwards the ClientHello this soon after receiving it
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


def _xff(ex: Exchange) -> list[str]:
    return [p.strip() for p in ex.headers.get("x-forwarded-for", "").split(",") if p.strip()]


def _b3(ex: Exchange) -> dict[str, str]:
    h = ex.headers
    out = {k: h[f"x-b3-{k}"] for k in ("traceid", "spanid", "parentspanid", "sampled") if f"x-b3-{k}" in h}
    if "b3" in h and "traceid" not in out:  # single-header form: trace-span-sampled-parent
        parts = h["b3"].split("-")
        for k, v in zip(("traceid", "spanid", "sampled", "parentspanid"), parts, strict=False):
            out[k] = v
    return out


class _Inbound:
    """Exchanges by the host that received them, in time order, with a request-id index."""

    def __init__(self, legs: list[Leg]) -> None:
        self.leg_of: dict[str, Leg] = {}
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

    def window(self, host: str, t: float) -> list[Exchange]:
        """Exchanges received by host that started before t (latest first), bounded."""
        times = self.times.get(host)
        if not times:
            return []
        rows = self.rows[host]
        i = bisect.bisect_right(times, t + SLACK_S)
        out: list[Exchange] = []
        while i > 0 and len(out) < MAX_CANDIDATES:
            i -= 1
            if times[i] < t - MAX_REQUEST_S:
                break
            out.append(rows[i])
        return out


def _open_during(parent: Exchange, t: float) -> bool:
    start = exchange_time(parent)
    end = parent.response_time
    return start <= t + SLACK_S and (end is None or t <= end + SLACK_S)


def _http_score(parent: Exchange, parent_leg: Leg, child: Exchange) -> tuple[int, list[str]]:
    """How strongly child looks caused by parent (0: not at all) and which evidence says so."""
    why: list[str] = []
    score = 1
    prid, crid = parent.request_id, child.request_id
    if prid and crid:
        if normalize_request_id(prid) != normalize_request_id(crid):
            return 0, []
        score += 100
        why.append("x-request-id")
    pb, cb = _b3(parent), _b3(child)
    if pb.get("traceid") and cb.get("traceid"):
        if pb["traceid"].lower().lstrip("0") != cb["traceid"].lower().lstrip("0"):
            return 0, []
        score += 50
        why.append("b3-traceid")
        if pb.get("spanid") and cb.get("parentspanid") == pb["spanid"]:
            score += 20
            why.append("b3-parent")
    if _extends_xff(parent, parent_leg, child):
        score += 30
        why.append("x-forwarded-for")
    if (parent.method, parent.uri) == (child.method, child.uri) and child.method:
        score += 10
        why.append("method+uri")
    why.append("timing")
    return score, why


def _extends_xff(parent: Exchange, parent_leg: Leg, child: Exchange) -> bool:
    """Did the proxy append the address it saw the downstream request come from?"""
    cx = _xff(child)
    if not cx:
        return False
    seen_from = parent_leg.sides[-1].conn.src  # after any SNAT: what the proxy saw
    return cx[-1] in (seen_from, parent_leg.sender) and cx[:-1] == _xff(parent)


def _http_kind(parent: Exchange, parent_leg: Leg, child: Exchange) -> str:
    if _extends_xff(parent, parent_leg, child) or any(h in child.headers for h in PROXY_HEADERS):
        return "l7-proxy"
    return "app-call"


def _tls_score(parent: Exchange, child: Exchange) -> int:
    if parent.exchange_type != "tls" or not child.sni or parent.sni != child.sni:
        return 0
    return 1 + (parent.alpn == child.alpn) + (parent.tls_offered_versions == child.tls_offered_versions)


def match_proxy(legs: list[Leg]) -> list[ProxyLink]:
    """Every proxy/app hop between exchanges of the legs; each upstream exchange gets one parent."""
    inbound = _Inbound(legs)
    children: dict[str, list[tuple[Exchange, Leg, list[str]]]] = defaultdict(list)
    parents: dict[str, Exchange] = {}
    tls_used: set[str] = set()
    for leg in legs:
        if leg.sender not in inbound.rows:  # nothing came into this host: it caused nothing
            continue
        for child in leg.exchanges:
            found = _find_parent(inbound, leg, child, tls_used)
            if found is None:
                continue
            parent, why = found
            parents[parent.id] = parent
            children[parent.id].append((child, leg, why))
    links: list[ProxyLink] = []
    for pid, kids in children.items():
        parent = parents[pid]
        links += _group_attempts(parent, inbound.leg_of[pid], kids)
    links.sort(key=lambda lk: exchange_time(lk.attempts[0]))
    return links


def _find_parent(inbound: _Inbound, leg: Leg, child: Exchange, tls_used: set[str]):
    t = exchange_time(child)
    host = leg.sender
    if child.exchange_type == "tls":
        best = None
        for cand in inbound.window(host, t):
            if cand.id in tls_used or inbound.leg_of[cand.id] is leg \
                    or t - exchange_time(cand) > TLS_FORWARD_S:
                continue
            score = _tls_score(cand, child)
            if score and (best is None or score > best[0]):
                best = (score, cand)
        if best is None:
            return None
        tls_used.add(best[1].id)
        return best[1], ["sni", "client-hello", "timing"]
    rid = normalize_request_id(child.request_id)
    pool = inbound.by_rid.get((host, rid), []) if rid else []
    pool = [p for p in pool if _open_during(p, t)] or inbound.window(host, t)
    best = None
    for cand in pool:
        cand_leg = inbound.leg_of[cand.id]
        if cand_leg is leg or cand.exchange_type != "http" or not _open_during(cand, t):
            continue
        score, why = _http_score(cand, cand_leg, child)
        if score and (best is None or score > best[0]):
            best = (score, cand, why)
    return None if best is None else (best[1], best[2])


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
            kind = _http_kind(parent, parent_leg, child)
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
        if _xff(first):
            ev["x_forwarded_for"] = first.headers["x-forwarded-for"]
        if _b3(first):
            ev["b3"] = _b3(first)
    ev["attempts"] = [
        {"upstream": conn_text(leg.sides[0].conn),
         "status": c.status, "attempt_count": c.headers.get("x-envoy-attempt-count"),
         "request_id": c.request_id}
        for c, leg, _ in members
    ]
    return ev
