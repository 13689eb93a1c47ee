"""Gateways that terminate TLS, seen without keys: which client TLS connection caused which plaintext
upstream request. Nothing on the wire proves it, so every link made here is *inferred*: it carries
the evidence used and a confidence, and a request that two connections explain equally well is
reported as ambiguous with both candidates, never assigned to one at random.

Evidence, as Envoy writes it: the ClientHello's SNI equals the upstream Host / ``:authority``; the
last ``x-forwarded-for`` entry (or ``x-envoy-external-address``) is the TLS client's address;
``x-forwarded-proto: https``; the upstream request leaves the address the TLS connection arrived at;
and it happens after the handshake while that connection can still be open. An Istio sidecar is
such a gateway too: its mTLS leg (on the pod's eth0) carries Istio's SNI naming the service the
plaintext request asks for, and that request leaves 127.0.0.6 for the address the mTLS leg arrived
at (on the pod's loopback). With keys none of this is needed: the decrypted request carries the
request id, and proxy_hops links it exactly."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from meshscope.decoders.istio_mtls import INBOUND_PASSTHROUGH_SOURCE, parse_istio_sni
from meshscope.decoders.legs import Leg, endpoint, exchange_time
from meshscope.decoders.proxy_hops import ProxyLink

from meshscope.model import Exchange

MAX_OPEN_S = 300.0  # a client connection reused for this long still counts as a candidate
MAX_CANDIDATES = 64  # most recent connections per client address or SNI considered for one request
SLACK_S = 0.005
WEIGHTS = {  # how much each piece of evidence says (the sum is capped at 1.0)
    "sni = authority": 0.35,
    "istio sni names the authority's service": 0.35,
    "sidecar inbound: 127.0.0.6 to where the mTLS leg arrived": 0.3,
    "x-forwarded-for ends with the client": 0.25,
    "x-envoy-external-address is the client": 0.15,
    "x-forwarded-proto: https": 0.1,
    "leaves the gateway's address": 0.1,
    "the only TLS connection open then": 0.05,
    "first request right after its handshake": 0.05,
}
FRESH_S = 0.25  # a new connection's first request follows its handshake this closely
MIN_CONFIDENCE = 0.45  # below this a candidate is not reported at all
TIE = 0.02  # candidates this close are ambiguous


@dataclass(slots=True, eq=False)
class InferredTermination:
    """An upstream request and the client TLS connection(s) that may have caused it."""

    upstream: Exchange
    tls: Exchange | None  # the chosen TLS exchange; None when ambiguous
    confidence: float
    evidence: list[str]
    ambiguous: bool = False
    candidates: list[tuple[Exchange, float, list[str]]] = field(default_factory=list)

    @property
    def inferred(self) -> bool:
        return True  # always: without keys this is a judgement, never a match

    def summary(self) -> dict:
        """For a Hop's evidence: what linked it, how sure, and that it is inferred."""
        out: dict = {"inferred": True, "confidence": round(self.confidence, 2),
                     "evidence": list(self.evidence)}
        if self.ambiguous:
            out["ambiguous"] = True
            out["candidates"] = [
                {"exchange_id": ex.id, "sni": ex.sni, "client": endpoint(ex.conn.src, ex.conn.sport),
                 "confidence": round(score, 2)}
                for ex, score, _ in self.candidates]
        return out


def _host(authority: str | None) -> str | None:
    if not authority:
        return None
    a = authority.strip().lower()
    if a.startswith("["):
        return a[1:a.find("]")] if "]" in a else a
    return a.rsplit(":", 1)[0] if a.count(":") == 1 else a


STRONG = frozenset({"sni = authority", "x-forwarded-for ends with the client",
                    "x-envoy-external-address is the client", "istio sni names the authority's service",
                    "sidecar inbound: 127.0.0.6 to where the mTLS leg arrived"})


def _sni_names(sni: str | None) -> list[str]:
    """The names an SNI stands for: itself, and for Istio's (outbound_.8080_._.catalog.shop.svc…)
    the service's host, ``name.namespace`` and ``name``."""
    if not sni:
        return []
    ist = parse_istio_sni(sni)
    if ist is None:
        return [sni.lower()]
    return list(dict.fromkeys([ist.host.lower(), ist.service.lower(), ist.host.split(".")[0].lower()]))


def _score(tls: Exchange, up: Exchange, alone: bool, fresh: bool) -> tuple[float, list[str]]:
    why: list[str] = []
    h = up.headers
    sni = (tls.sni or "").lower()
    authority = _host(up.host or h.get(":authority") or h.get("host"))
    if sni and sni == authority:
        why.append("sni = authority")
    elif authority and parse_istio_sni(sni) is not None and authority in _sni_names(sni):
        why.append("istio sni names the authority's service")
    if up.conn.src == INBOUND_PASSTHROUGH_SOURCE and up.conn.dst == tls.conn.dst:
        why.append("sidecar inbound: 127.0.0.6 to where the mTLS leg arrived")
    xff = [p.strip() for p in h.get("x-forwarded-for", "").split(",") if p.strip()]
    if xff and xff[-1] == tls.conn.src:
        why.append("x-forwarded-for ends with the client")
    if h.get("x-envoy-external-address") == tls.conn.src:
        why.append("x-envoy-external-address is the client")
    if h.get("x-forwarded-proto", "").lower() == "https":
        why.append("x-forwarded-proto: https")
    if up.conn.src == tls.conn.dst:
        why.append("leaves the gateway's address")
    if alone:
        why.append("the only TLS connection open then")
    elif fresh:
        why.append("first request right after its handshake")
    return min(1.0, sum(WEIGHTS[w] for w in why)), why


class _Hellos:
    """TLS exchanges indexed by client address and by SNI, each in time order, so that a request's
    candidates are found by bisection (linear in the capture, not requests × connections)."""

    def __init__(self, hellos: list[Exchange]) -> None:
        hellos = sorted(hellos, key=exchange_time)
        self.times = [exchange_time(x) for x in hellos]
        self.by_ip: dict[str, tuple[list[float], list[Exchange]]] = {}
        self.by_sni: dict[str, tuple[list[float], list[Exchange]]] = {}
        self.by_dst: dict[str, tuple[list[float], list[Exchange]]] = {}
        # the few distinct x-forwarded-for and authority values recur on every request: worked out once
        self._last_hops: dict[str, str] = {}
        self._hosts: dict[str, str] = {}
        names: dict[str | None, list[str]] = {}
        for t, x in zip(self.times, hellos, strict=True):
            keys = [(self.by_ip, x.conn.src), (self.by_dst, x.conn.dst)]
            sni_names = names.get(x.sni)
            if sni_names is None:
                sni_names = names[x.sni] = _sni_names(x.sni)
            keys += [(self.by_sni, name) for name in sni_names]
            for index, key in keys:
                if key:
                    times, rows = index.setdefault(key, ([], []))
                    times.append(t)
                    rows.append(x)

    def open_at(self, t: float) -> int:
        """How many TLS connections began in the window before t (any client)."""
        return bisect_right(self.times, t + SLACK_S) - bisect_left(self.times, t - MAX_OPEN_S)

    @staticmethod
    def window(entry: tuple[list[float], list[Exchange]] | None, t: float) -> list[Exchange]:
        if entry is None:
            return []
        times, rows = entry
        lo, hi = bisect_left(times, t - MAX_OPEN_S), bisect_right(times, t + SLACK_S)
        return rows[max(lo, hi - MAX_CANDIDATES):hi]

    def entries(self, up: Exchange) -> list[tuple[list[float], list[Exchange]]]:
        """The index entries a request's candidates come from (client address from x-forwarded-for
        or x-envoy-external-address, SNI = authority, the sidecar's inbound address): mostly none,
        and then the request is passed over without any more work."""
        h = up.headers
        out = []
        xff = h.get("x-forwarded-for")
        if xff:
            last = self._last_hops.get(xff)
            if last is None:
                last = self._last_hops[xff] = _last_hop(xff)
            if last and (entry := self.by_ip.get(last)) is not None:
                out.append(entry)
        if (entry := self.by_ip.get(h.get("x-envoy-external-address", ""))) is not None:
            out.append(entry)
        authority = up.host or h.get(":authority") or h.get("host") or ""
        host = self._hosts.get(authority)
        if host is None:
            host = self._hosts[authority] = _host(authority) or ""
        if (entry := self.by_sni.get(host)) is not None:
            out.append(entry)
        if up.conn.src == INBOUND_PASSTHROUGH_SOURCE and (entry := self.by_dst.get(up.conn.dst)) is not None:
            out.append(entry)
        return out

    def candidates(self, up: Exchange, t: float,
                   entries: list[tuple[list[float], list[Exchange]]] | None = None) -> list[Exchange]:
        found: dict[int, Exchange] = {}
        for entry in self.entries(up) if entries is None else entries:
            for x in self.window(entry, t):
                if x.conn.key != up.conn.key:
                    found[id(x)] = x
        return list(found.values())


def infer_terminations(tls_exchanges: list[Exchange],
                       http_exchanges: list[Exchange]) -> list[InferredTermination]:
    """For each plaintext HTTP request that a TLS-terminating gateway may have sent, the client TLS
    connection(s) that explain it. Requests with no plausible TLS parent are left out.

    Only TLS exchanges that were not decrypted should come in (decrypted ones are linked exactly)."""
    hellos = _Hellos([x for x in tls_exchanges if x.exchange_type == "tls"])
    out: list[InferredTermination] = []
    for up in http_exchanges:
        if up.exchange_type != "http" or up.method is None:
            continue
        h = up.headers
        if not (h.get("x-forwarded-proto", "").lower() == "https" or "x-envoy-external-address" in h
                or h.get("x-forwarded-for") or up.conn.src == INBOUND_PASSTHROUGH_SOURCE):
            continue  # nothing says a proxy forwarded it
        entries = hellos.entries(up)
        if not entries:
            continue  # no TLS connection from its client, to its authority or its address
        t = exchange_time(up)
        before = hellos.candidates(up, t, entries)
        if not before:
            continue
        alone = hellos.open_at(t) == 1
        fresh = [x for x in before if t - _handshake_end(x) <= FRESH_S]
        scored = []
        for x in before:
            score, why = _score(x, up, alone, len(fresh) == 1 and x is fresh[0])
            if STRONG.intersection(why) and score >= MIN_CONFIDENCE:  # timing alone is no evidence
                scored.append((x, score, why))
        if not scored:
            continue
        scored.sort(key=lambda s: (-s[1], -exchange_time(s[0])))
        best = scored[0]
        rivals = [s for s in scored if best[1] - s[1] < TIE]
        fresh_rivals = [s for s in rivals if s[0] in fresh]
        if len(fresh_rivals) > 1:  # it follows several new handshakes at once: one of those
            rivals = fresh_rivals
        if len(rivals) > 1 and _distinct_clients(rivals):
            out.append(InferredTermination(up, None, best[1], best[2], ambiguous=True, candidates=rivals))
        else:
            out.append(InferredTermination(up, best[0], best[1], best[2], candidates=scored[:3]))
    return out


def _last_hop(xff: str) -> str:
    """The last non-empty entry of an x-forwarded-for chain: the address the proxy saw."""
    last = xff.rpartition(",")[2].strip()
    if last:
        return last
    hops = [p.strip() for p in xff.split(",") if p.strip()]
    return hops[-1] if hops else ""


def _handshake_end(x: Exchange) -> float:
    return x.response_time if x.response_time is not None else exchange_time(x)


def _distinct_clients(rivals: list[tuple[Exchange, float, list[str]]]) -> bool:
    """Rivals that are the same connection seen twice (two interfaces) are one candidate."""
    return len({(x.conn.src, x.conn.sport, x.conn.client_isn) for x, _, _ in rivals}) > 1


def inferred_tls_links(legs: list[Leg], links: list[ProxyLink]) -> list[ProxyLink]:
    """Proxy hops from a TLS-terminating gateway's client connections (not decrypted) to the upstream
    requests nothing else explains; their evidence says ``inferred`` (and ``ambiguous``: then one
    hop per candidate, each saying so)."""
    linked = {a.id for link in links for a in link.attempts}
    tls_ex, http_ex = [], []
    for leg in legs:
        for ex in leg.exchanges:
            if ex.exchange_type == "tls" and ex.tls_decryption != "decrypted":
                tls_ex.append(ex)
            elif ex.exchange_type == "http" and ex.id not in linked:
                http_ex.append(ex)
    if not tls_ex or not http_ex:
        return []
    out: list[ProxyLink] = []
    for inf in infer_terminations(tls_ex, http_ex):
        parents = [inf.tls] if inf.tls is not None else [c[0] for c in inf.candidates]
        for parent in parents:
            out.append(ProxyLink(parent=parent, attempts=[inf.upstream], kind="l7-proxy",
                                 evidence=inf.summary()))
    return out
