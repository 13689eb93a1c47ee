"""Gateways that terminate TLS, seen without keys: which client TLS connection caused which plaintext
upstream request. Nothing on the wire proves it, so every link made here is *inferred*: it carries
the evidence used and a confidence, and a request that two connections explain equally well is
reported as ambiguous with both candidates, never assigned to one at random.

Evidence, as Envoy writes it: the ClientHello's SNI equals the upstream Host / ``:authority``; the
last ``x-forwarded-for`` entry (or ``x-envoy-external-address``) is the TLS client's address;
``x-forwarded-proto: https``; the upstream request leaves the address the TLS connection arrived at;
and it happens after the handshake while that connection can still be open. With keys none of this
is needed: the decrypted request carries the request id, and proxy_hops links it exactly."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshscope.decoders.legs import endpoint, exchange_time

from meshscope.model import Exchange

MAX_OPEN_S = 300.0  # a client connection reused for this long still counts as a candidate
SLACK_S = 0.005
WEIGHTS = {  # how much each piece of evidence says; they add up to at most 1.0
    "sni = authority": 0.35,
    "x-forwarded-for ends with the client": 0.25,
    "x-envoy-external-address is the client": 0.15,
    "x-forwarded-proto: https": 0.1,
    "leaves the gateway's address": 0.1,
    "the only TLS connection open then": 0.05,
}
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
                    "x-envoy-external-address is the client"})


def _score(tls: Exchange, up: Exchange, alone: bool) -> tuple[float, list[str]]:
    why: list[str] = []
    h = up.headers
    sni = (tls.sni or "").lower()
    if sni and sni == _host(up.host or h.get(":authority") or h.get("host")):
        why.append("sni = authority")
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
    return sum(WEIGHTS[w] for w in why), why


def infer_terminations(tls_exchanges: list[Exchange],
                       http_exchanges: list[Exchange]) -> list[InferredTermination]:
    """For each plaintext HTTP request that a TLS-terminating gateway may have sent, the client TLS
    connection(s) that explain it. Requests with no plausible TLS parent are left out.

    Only TLS exchanges that were not decrypted should come in (decrypted ones are linked exactly)."""
    hellos = sorted((t for t in tls_exchanges if t.exchange_type == "tls"), key=exchange_time)
    out: list[InferredTermination] = []
    for up in http_exchanges:
        if up.exchange_type != "http" or up.method is None:
            continue
        h = up.headers
        if not (h.get("x-forwarded-proto", "").lower() == "https" or "x-envoy-external-address" in h
                or h.get("x-forwarded-for")):
            continue  # nothing says a proxy forwarded it
        t = exchange_time(up)
        before = [x for x in hellos if exchange_time(x) - SLACK_S <= t <= exchange_time(x) + MAX_OPEN_S
                  and x.conn.key != up.conn.key]
        scored = []
        for x in before:
            score, why = _score(x, up, len(before) == 1)
            if STRONG.intersection(why) and score >= MIN_CONFIDENCE:  # timing alone is no evidence
                scored.append((x, score, why))
        if not scored:
            continue
        scored.sort(key=lambda s: (-s[1], -exchange_time(s[0])))
        best = scored[0]
        rivals = [s for s in scored if best[1] - s[1] < TIE]
        if len(rivals) > 1 and _distinct_clients(rivals):
            out.append(InferredTermination(up, None, best[1], best[2], ambiguous=True, candidates=rivals))
        else:
            out.append(InferredTermination(up, best[0], best[1], best[2], candidates=scored[:3]))
    return out


def _distinct_clients(rivals: list[tuple[Exchange, float, list[str]]]) -> bool:
    """Rivals that are the same connection seen twice (two interfaces) are one candidate."""
    return len({(x.conn.src, x.conn.sport, x.conn.client_isn) for x, _, _ in rivals}) > 1
