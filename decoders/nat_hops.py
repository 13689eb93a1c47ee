"""NAT hops: the two sides of a DNAT (NodePort → pod IP:targetPort, source kept, as with
externalTrafficPolicy Local) or of a SNAT (source rewritten to the node, as with Cluster).

A NAT rewrites addresses but keeps the TCP initial sequence numbers and the payload, so two
sightings with different 5-tuples and the same ISNs are one connection seen on both sides of a
NAT — in one capture (``-i any``, merged files) or in two captures analysed together. Without a
captured handshake the sides are matched by identical requests sent within a few milliseconds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from meshscope.decoders.legs import Leg, Sighting, conn_text, endpoint, exchange_time

from meshscope.model import Exchange

NODEPORT_RANGE = range(30000, 32768)  # Kubernetes' default service-node-port-range: a DNAT from a
# port in it is reported as a NodePort, from any other port as a service (ClusterIP) address
PAYLOAD_MATCH_WINDOW_S = 0.02  # a NAT forwards in microseconds; 20 ms allows two captures' clocks


@dataclass(slots=True, eq=False)
class NatLink:
    """One NAT between two sightings of one connection: ``pre`` as sent, ``post`` as rewritten."""

    pre: Sighting
    post: Sighting
    kind: str  # "nat-dnat" or "nat-snat"
    nodeport: int | None
    evidence: dict = field(default_factory=dict)

    @property
    def dnat(self) -> bool:
        return bool(self.evidence.get("dnat"))


def match_nat(sightings: list[Sighting]) -> list[NatLink]:
    """Every NAT link between the sightings: by initial sequence numbers, else by payload and timing."""
    links: list[NatLink] = []
    by_isn: dict[int, list[Sighting]] = defaultdict(list)
    no_isn: list[Sighting] = []
    for s in sightings:
        if s.conn.client_isn is None:
            no_isn.append(s)
        else:
            by_isn[s.conn.client_isn].append(s)
    for group in by_isn.values():
        if len(group) > 1:
            links += _chain(_compatible(group), "isn")
    links += _match_by_payload(no_isn)
    return links


def _compatible(group: list[Sighting]) -> list[Sighting]:
    """Keep the sightings whose server ISN agrees with the first one that has it."""
    server = next((s.conn.server_isn for s in group if s.conn.server_isn is not None), None)
    return [s for s in group if s.conn.server_isn in (None, server)]


def _chain(sides: list[Sighting], how: str) -> list[NatLink]:
    """Order the sides of one connection from the sender outwards and link neighbours."""
    if len(sides) < 2:
        return []
    one_nodeport = sum(s.conn.dport in NODEPORT_RANGE for s in sides) == 1
    # a NodePort side is the one before the NAT; otherwise the copy seen first is
    sides = sorted(sides, key=lambda s: (not (one_nodeport and s.conn.dport in NODEPORT_RANGE), s.start))
    return [_link(a, b, how) for a, b in zip(sides, sides[1:], strict=False)]


def _link(pre: Sighting, post: Sighting, how: str) -> NatLink:
    a, b = pre.conn, post.conn
    src_changed = (a.src, a.sport) != (b.src, b.sport)
    dst_changed = (a.dst, a.dport) != (b.dst, b.dport)
    evidence: dict = {
        "match": how, "pre": conn_text(a), "post": conn_text(b),
        "dnat": dst_changed, "snat": src_changed,
        "same_capture": a.capture == b.capture, "captures": sorted({a.capture, b.capture}),
    }
    if how == "isn":
        evidence["client_isn"] = a.client_isn
        evidence["server_isn"] = a.server_isn if a.server_isn is not None else b.server_isn
    if pre.start and post.start:
        evidence["dt_ms"] = round((post.start - pre.start) * 1000, 3)
    if src_changed:
        evidence["source_rewritten_to"] = endpoint(b.src, b.sport)
    nodeport = None
    if dst_changed:
        evidence["destination_rewritten_to"] = endpoint(b.dst, b.dport)
        if a.dport in NODEPORT_RANGE:
            nodeport = a.dport
        else:  # a ClusterIP (or other virtual) service address, not a node port
            evidence["service"] = endpoint(a.dst, a.dport)
    return NatLink(pre=pre, post=post, kind="nat-snat" if src_changed else "nat-dnat",
                   nodeport=nodeport, evidence=evidence)


def _signature(ex: Exchange) -> tuple:
    dns, quic = getattr(ex, "dns", None), getattr(ex, "quic", None)
    return (ex.exchange_type, ex.method, ex.uri, ex.host, tuple(sorted(ex.headers.items())), ex.sni,
            tuple(ex.alpn), ex.status, dns and (dns.id, dns.name, dns.qtype), quic and quic.dcid)


def _match_by_payload(sightings: list[Sighting]) -> list[NatLink]:
    """Handshake not captured: the same first request on two 5-tuples within a few milliseconds."""
    by_sig: dict[tuple, list[Sighting]] = defaultdict(list)
    for s in sightings:
        if s.exchanges:
            by_sig[_signature(s.exchanges[0])].append(s)
    links: list[NatLink] = []
    for group in by_sig.values():
        group.sort(key=lambda s: exchange_time(s.exchanges[0]))
        used: set[int] = set()
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if exchange_time(b.exchanges[0]) - exchange_time(a.exchanges[0]) > PAYLOAD_MATCH_WINDOW_S:
                    break
                if id(b) in used or id(a) in used or not _nat_shaped(a, b):
                    continue
                pre, post = (b, a) if b.conn.dport in NODEPORT_RANGE and a.conn.dport not in NODEPORT_RANGE \
                    else (a, b)
                links.append(_link(pre, post, "payload+timing"))
                used.update((id(a), id(b)))
    return links


def _nat_shaped(a: Sighting, b: Sighting) -> bool:
    """Could b be a rewritten a? DNAT keeps the source ip:port; SNAT moves the source to another host
    (a second connection from the same host is just another connection)."""
    ca, cb = a.conn, b.conn
    if ca.key == cb.key:
        return False
    if (ca.src, ca.sport) == (cb.src, cb.sport):
        return True
    return ca.src != cb.src


def build_legs(sightings: list[Sighting], links: list[NatLink]) -> list[Leg]:
    """Join sightings along their NAT links into legs (one per logical connection)."""
    nxt = {id(link.pre): link for link in links}
    has_prev = {id(link.post) for link in links}
    legs: list[Leg] = []
    for s in sightings:
        if id(s) in has_prev:
            continue
        leg = Leg(sides=[s])
        seen = {id(s)}
        while (link := nxt.get(id(leg.sides[-1]))) is not None and id(link.post) not in seen:
            leg.sides.append(link.post)
            leg.nat.append(link)
            seen.add(id(link.post))
        legs.append(leg.settle())
    return legs
