"""A request's combined flow graph: its proxy hops (from access logs) and its packet flows (from
captures) as one sequence diagram — a section for the hops, then the decoders' section per flow."""

from __future__ import annotations

from meshscope.decoders import Diagram, Message, Section, diagram_svg, flow_diagram
from meshscope.model import parse_node_id
from meshscope.traces import TraceHop, TraceView


def _ip(address: str | None) -> str | None:
    if not address:
        return None
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


def _parties(hop: TraceHop) -> tuple[str, str, str]:
    """A hop's client, proxy and upstream columns: their addresses, with the port where two share one
    (everything on one host, as in a loopback lab: the diagram would fold into one column)."""
    record = hop.record
    client = _ip(record.downstream_remote) or "client"
    proxy = _ip(record.downstream_local) or hop.node_id or "proxy"
    upstream = _ip(hop.upstream_host) or hop.upstream_cluster or "upstream"
    if proxy in (client, upstream) and record.downstream_local:
        proxy = record.downstream_local
    if upstream in (client, proxy) and hop.upstream_host:
        upstream = hop.upstream_host
    return client, proxy, upstream


def _hop_messages(hop: TraceHop, labels: dict[str, str]) -> list[Message]:
    """A proxy hop as messages: downstream → proxy, the proxy's note, proxy → upstream and the answers."""
    record = hop.record
    client, proxy, upstream = _parties(hop)
    labels[proxy] = f"{hop.role} {parse_node_id(hop.node_id).name}"[:40]  # a proxy's name beats a cluster's
    if hop.upstream_cluster and upstream != hop.upstream_cluster:
        labels.setdefault(upstream, hop.upstream_cluster[:40])
    t0 = hop.start_time
    t1 = t0 + (hop.duration_ms or 0.0) / 1000
    what = f"{hop.method or ''} {hop.authority or ''}{hop.path or ''}".strip() or record.protocol
    attempts = f" ×{hop.attempt_count}" if (hop.attempt_count or 1) > 1 else ""
    code = str(hop.response_code or "-") + (f" {','.join(hop.response_flags)}" if hop.response_flags else "")
    rid = f" rid …v{hop.request_id[14]}" if hop.request_id and len(hop.request_id) > 14 else ""
    return [
        Message(t0, client, proxy, (what + rid)[:48], "request"),
        Message(t0 + 1e-6, proxy, proxy, f"{hop.role} access log{attempts}"[:48], "note"),
        Message(t0 + 2e-6, proxy, upstream, f"→ {hop.upstream_cluster or '?'}{attempts}"[:48], "request"),
        Message(t1 - 1e-6, upstream, proxy, code[:48], "response"),
        Message(t1, proxy, client, code[:48], "response"),
    ]


def trace_diagram(view: TraceView) -> Diagram:
    """Section 1: the proxy hops; then one section per packet flow carrying the request."""
    packets = flow_diagram(view.flows, {e.id: e for e in view.exchanges})
    diagram = Diagram(labels=dict(packets.labels))
    if view.hops:
        msgs = [m for hop in view.hops for m in _hop_messages(hop, diagram.labels)]
        msgs.sort(key=lambda m: m.t)
        diagram.add(Section(f"proxy access logs  x-request-id {view.request_id_norm}", msgs[0].t, msgs))
    for section in packets.sections:
        diagram.add(section)
    return diagram


def trace_svg(view: TraceView) -> str:
    """The combined flow graph of one request as an SVG document."""
    return diagram_svg(trace_diagram(view))
