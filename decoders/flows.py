"""Flows: the NAT and proxy hops of one request, in order, with the evidence linking each and its timings.

Each exchange nobody caused (a client's request) roots a flow: its leg's NAT hops come first,
then every upstream request it caused (depth first, in time order) with that upstream leg's NAT
hops. Hops are labelled with workload names where Istio peer metadata named the hosts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from meshscope.decoders.legs import Leg, endpoint, exchange_time
from meshscope.decoders.nat_hops import NatLink
from meshscope.decoders.proxy_hops import ProxyLink

from meshscope.model import Exchange, Flow, Hop, normalize_request_id

MAX_DEPTH = 64  # proxies and calls in a row; real meshes have a handful


def _workload(name: str | None, namespace: str | None) -> str | None:
    return f"{namespace}/{name}" if name and namespace else name


def workload_names(legs: Iterable[Leg]) -> dict[str, str]:
    """ip → "namespace/workload" from the Istio peer metadata a host sent with its requests (naming
    the sender) or its responses (naming the receiver)."""
    names: dict[str, str] = {}
    for leg in legs:
        for ex in leg.exchanges:
            if ex.peer_workload:
                names.setdefault(leg.sender, _workload(ex.peer_workload, ex.peer_namespace))
            if ex.server_peer_workload:
                names.setdefault(leg.receiver, _workload(ex.server_peer_workload, ex.server_peer_namespace))
    return names


class FlowBuilder:
    """Walks the exchanges' cause tree (from ProxyLinks) and emits one Flow per root exchange.
    ``lookups``: request id → the DNS lookups before it that its flow starts with (decoders.dns_flows)."""

    def __init__(self, legs: list[Leg], links: list[ProxyLink],
                 lookups: dict[str, list[Exchange]] | None = None) -> None:
        self.legs = legs
        self.lookups = lookups or {}
        self.names: dict[str, str] = {}
        self.leg_of: dict[str, Leg] = {}
        self.caused: dict[str, list[ProxyLink]] = defaultdict(list)
        self.has_parent: set[str] = set()
        for link in links:
            self.caused[link.parent.id].append(link)
            self.has_parent.update(a.id for a in link.attempts)

    def flows(self) -> list[Flow]:
        """A flow for each exchange nobody caused that went through a NAT or caused another: an
        exchange on its own is already fully told by itself."""
        lookups = self.lookups
        roots = [ex for leg in self.legs for ex in leg.exchanges
                 if ex.id not in self.has_parent and (leg.nat or ex.id in self.caused or ex.id in lookups)]
        if not roots:
            return []  # no NAT, no proxy: nothing to look up names and legs for
        roots.sort(key=exchange_time)
        self.names = workload_names(self.legs)
        self.leg_of = {ex.id: leg for leg in self.legs for ex in leg.exchanges}
        return [self.flow(root) for root in roots]

    def flow(self, root: Exchange) -> Flow:
        leg = self.leg_of[root.id]
        dns = [self._dns_hop(lk) for lk in self.lookups.get(root.id, ())]
        hops = self._nat_hops(leg, root)
        self._walk(root, hops, 0)
        hops = dns + hops
        exchange_ids = [root.id, *(i for h in hops for i in h.exchange_ids)]  # the root first
        rid = next((normalize_request_id(r) for h in hops for r in h.request_ids if r), None)
        rid = normalize_request_id(root.request_id) or rid
        captures = sorted({cap for h in hops for cap in h.evidence.get("captures", [])}
                          | set(leg.primary.captures))
        start = exchange_time(root)
        if root.index == 0 and leg.sides[0].conn.syn_time is not None:
            start = min(start, leg.sides[0].conn.syn_time)
        if dns:
            start = min(start, *(h.start for h in dns if h.start is not None))
        ends = [t for t in (root.response_time, *(h.end for h in hops)) if t is not None]
        rest = hops[len(dns):]  # the request's own hops: where it ended up
        last = rest[-1].dst if rest else endpoint(leg.receiver, leg.sides[-1].conn.dport)
        return Flow(hops=hops, request_id=rid, client=endpoint(leg.sender, leg.sides[0].conn.sport),
                    server=last, start=start, end=max(ends) if ends else None, captures=captures,
                    exchange_ids=list(dict.fromkeys(exchange_ids)))

    def _walk(self, parent: Exchange, hops: list[Hop], depth: int) -> None:
        """Append the hops parent caused, depth first, to at most MAX_DEPTH calls deep (a crafted
        capture must not exhaust the stack)."""
        if depth >= MAX_DEPTH:
            return
        for link in sorted(self.caused.get(parent.id, []), key=lambda lk: exchange_time(lk.attempts[0])):
            hops.append(self._proxy_hop(link))
            for attempt in link.attempts:
                hops += self._nat_hops(self.leg_of[attempt.id], attempt)
                self._walk(attempt, hops, depth + 1)

    def _name(self, ip: str) -> str | None:
        return self.names.get(ip)

    def _nat_hops(self, leg: Leg, ex: Exchange) -> list[Hop]:
        return [self._nat_hop(link, ex) for link in leg.nat]

    def _nat_hop(self, link: NatLink, ex: Exchange) -> Hop:
        a, b = link.pre.conn, link.post.conn
        # the same request as seen on each side of the NAT
        mirrors = [m.id for side in (link.pre, link.post) for m in side.exchanges
                   if (m.exchange_type, m.index) == (ex.exchange_type, ex.index)]
        return Hop(kind=link.kind, src=endpoint(a.src, a.sport), dst=endpoint(b.dst, b.dport),
                   src_name=self._name(a.src), dst_name=self._name(b.dst),
                   start=link.pre.start or None, end=link.post.start or None, nodeport=link.nodeport,
                   sni=ex.sni, request_ids=[ex.request_id] if ex.request_id else [],
                   evidence=dict(link.evidence), exchange_ids=mirrors)

    def _dns_hop(self, lookup: Exchange) -> Hop:
        c, d = lookup.conn, lookup.dns
        assert d is not None
        evidence = {"name": d.name, "qtype": d.qtype, "rcode": d.rcode, "lookup": d.lookup,
                    "tried": [f"{a.name} {a.rcode}" for a in d.attempts], "retries": d.retries}
        if lookup.response_time is not None and lookup.request_time is not None:
            evidence["latency_ms"] = round((lookup.response_time - lookup.request_time) * 1000, 3)
        return Hop(kind="dns-lookup", src=endpoint(c.src, c.sport), dst=endpoint(c.dst, c.dport),
                   src_name=self._name(c.src), dst_name=self._name(c.dst), start=lookup.request_time,
                   end=lookup.response_time, evidence=evidence, exchange_ids=[lookup.id])

    def _proxy_hop(self, link: ProxyLink) -> Hop:
        first = link.attempts[0]
        up = self.leg_of[first.id]
        c0, c1 = up.sides[0].conn, up.sides[-1].conn
        raw = [link.parent.request_id, *(a.request_id for a in link.attempts)]
        ends = [a.response_time for a in link.attempts if a.response_time is not None]
        return Hop(kind=link.kind, src=endpoint(c0.src, c0.sport), dst=endpoint(c1.dst, c1.dport),
                   src_name=self._name(c0.src), dst_name=self._name(c1.dst),
                   start=exchange_time(first), end=max(ends) if ends else None,
                   sni=first.sni if link.kind == "tls-passthrough" else None,
                   request_ids=list(dict.fromkeys(r for r in raw if r)), retries=link.retries,
                   evidence=dict(link.evidence, captures=sorted(set(up.primary.captures))),
                   exchange_ids=[link.parent.id, *(a.id for a in link.attempts)])


def build_flows(legs: list[Leg], links: list[ProxyLink],
                lookups: dict[str, list[Exchange]] | None = None) -> list[Flow]:
    """Ordered Flows of Hops for every root exchange of the legs (DNS lookups first, when given)."""
    return FlowBuilder(legs, links, lookups).flows()
