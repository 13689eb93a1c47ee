"""A request's combined flow graph: its proxy hops (from access logs) and its packet flows (from
captures) in one sequence diagram, drawn with the decoders' sequence renderer."""

from __future__ import annotations

from meshscope.decoders import Message, Sequence, build_sequence, sequence_svg
from meshscope.traces import TraceHop, TraceView


def _ip(address: str | None) -> str | None:
    if not address:
        return None
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


def proxy_name(node_id: str) -> str:
    """The workload part of an Istio node id (``sidecar~10.0.0.9~webapp-1.shop~shop.svc…`` → webapp-1)."""
    parts = node_id.split("~")
    return parts[2].split(".")[0] if len(parts) >= 3 and parts[2] else node_id


def _hop_messages(hop: TraceHop, labels: dict[str, str]) -> list[Message]:
    """A proxy hop as messages: downstream → proxy, the proxy's note, proxy → upstream and the answers."""
    record = hop.record
    proxy = _ip(record.downstream_local) or hop.node_id or "proxy"
    labels[proxy] = f"{hop.role} {proxy_name(hop.node_id)}"[:40]  # a proxy's name beats a cluster name
    client = _ip(record.downstream_remote) or "client"
    upstream = _ip(hop.upstream_host) or hop.upstream_cluster or "upstream"
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


def trace_sequence(view: TraceView) -> Sequence:
    """Section 1: the proxy hops; then one section per packet flow carrying the request."""
    exchanges = {e.id: e for e in view.exchanges}
    packets = build_sequence(view.flows, exchanges)
    seq = Sequence(labels=dict(packets.labels))
    offset = 0
    if view.hops:
        msgs = [m for hop in view.hops for m in _hop_messages(hop, seq.labels)]
        msgs.sort(key=lambda m: m.t)
        seq.titles.append(f"proxy access logs  x-request-id {view.request_id_norm}")
        seq.starts.append(msgs[0].t)
        seq.messages += msgs
        offset = 1
    for m in packets.messages:
        m.flow += offset
    seq.titles += packets.titles
    seq.starts += packets.starts
    seq.messages += packets.messages
    for m in seq.messages:
        for p in (m.src, m.dst):
            if p not in seq.participants:
                seq.participants.append(p)
    return seq


def trace_svg(view: TraceView) -> str:
    """The combined flow graph of one request as an SVG document."""
    return sequence_svg(trace_sequence(view))
