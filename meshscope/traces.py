"""Everything known about one request id, assembled from the store: the access records of every proxy
it crossed ordered into hops, its spans, the capture exchanges and flows that carry it.

One owner for this logic: the API (`/api/traces/{id}`) and the CLI (`meshscope trace`) both call
:func:`assemble_trace`, and :func:`format_trace` renders it as text."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshscope.model import AccessRecord, Exchange, Flow, Span, normalize_request_id, parse_node_id
from meshscope.pipelines import StoreReader


@dataclass(slots=True, kw_only=True)
class TraceHop:
    """One proxy's view of the request: the access record it logged, and how it links to the previous hop."""

    index: int
    role: str  # "gateway", "sidecar" or "proxy" (ProxyNode.role: the Istio node id's prefix)
    node_id: str
    node_cluster: str
    request_id: str | None  # raw, as this proxy saw it (the sampling digit may differ per hop)
    start_time: float
    duration_ms: float | None
    method: str | None
    authority: str | None
    path: str | None
    response_code: int | None
    response_flags: list[str]
    attempt_count: int | None
    upstream_cluster: str | None
    upstream_host: str | None
    downstream_remote: str | None
    linked_by: (
        str | None
    )  # what ties it to the hop before: "address" (upstream_local = downstream_remote) or "time"
    record: AccessRecord


@dataclass(slots=True, kw_only=True)
class TraceView:
    """The answer to "what happened to this request, hop by hop?"."""

    request_id: str
    request_id_norm: str
    raw_request_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    hops: list[TraceHop] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    # stored capture name → {"upload": id, "name": the file name it was uploaded as}, where known
    captures: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.hops or self.spans or self.exchanges or self.flows)


def order_hops(records: list[AccessRecord]) -> list[TraceHop]:
    """Order access records into hops: by start time, then any record whose downstream peer is another
    record's upstream local address is moved right after that record (a proxy chain seen on the wire)."""
    by_time = sorted(records, key=lambda r: (r.start_time, r.id))
    ordered: list[AccessRecord] = []
    linked: dict[str, str] = {}
    remaining = list(by_time)
    while remaining:
        nxt = remaining.pop(0)
        ordered.append(nxt)
        if nxt.upstream_local:
            child = next((r for r in remaining if r.downstream_remote == nxt.upstream_local), None)
            if child is not None:
                remaining.remove(child)
                remaining.insert(0, child)
                linked[child.id] = "address"
    return [
        TraceHop(
            index=i,
            role=parse_node_id(r.node_id).role,
            node_id=r.node_id,
            node_cluster=r.node_cluster,
            request_id=r.request_id,
            start_time=r.start_time,
            duration_ms=r.duration_ms,
            method=r.method,
            authority=r.authority,
            path=r.path,
            response_code=r.response_code,
            response_flags=list(r.response_flags),
            attempt_count=r.attempt_count,
            upstream_cluster=r.upstream_cluster,
            upstream_host=r.upstream_host,
            downstream_remote=r.downstream_remote,
            linked_by=linked.get(r.id, "time" if i else None),
            record=r,
        )
        for i, r in enumerate(ordered)
    ]


async def assemble_trace(reader: StoreReader, request_id: str) -> TraceView:
    """Gather one request's records through the store reader; the sampling digit does not matter."""
    norm = normalize_request_id(request_id) or ""
    records = await reader.access_by_request_id(norm)
    spans = {s.id: s for s in await reader.spans_by_request_id(norm)}
    trace_ids = list(
        dict.fromkeys(
            t.lower() for t in [*(r.trace_id for r in records), *(s.trace_id for s in spans.values())] if t
        )
    )
    for trace_id in trace_ids:
        for s in await reader.spans_by_trace_id(trace_id):
            spans.setdefault(s.id, s)
    exchanges = await reader.exchanges_by_request_id(norm)
    flows = await reader.flows_by_request_id(norm)
    raw = [
        *(r.request_id for r in records),
        *(s.request_id for s in spans.values()),
        *(e.request_id for e in exchanges),
    ]
    return TraceView(
        request_id=request_id,
        request_id_norm=norm,
        raw_request_ids=sorted({r for r in raw if r and normalize_request_id(r) == norm}),
        trace_ids=trace_ids,
        hops=order_hops(records),
        spans=sorted(spans.values(), key=lambda s: (s.timestamp or 0, s.id)),
        exchanges=sorted(exchanges, key=lambda e: (e.request_time or 0, e.id)),
        flows=flows,
    )


def format_trace(view: TraceView) -> str:
    """A plain-text account of a trace for the terminal."""
    lines = [f"request {view.request_id_norm}  (raw ids: {', '.join(view.raw_request_ids) or '-'})"]
    if view.trace_ids:
        lines.append(f"trace ids: {', '.join(view.trace_ids)}")
    lines.append(f"hops ({len(view.hops)}):")
    for h in view.hops:
        flags = ",".join(h.response_flags) or "-"
        took = h.duration_ms if h.duration_ms is not None else "-"
        lines.append(
            f"  {h.index + 1}. {h.role:<8} {h.node_id or '?'}  {h.method or ''} "
            f"{h.authority or ''}{h.path or ''} -> {h.upstream_cluster or '-'} ({h.upstream_host or '-'})"
            f"  {h.response_code or '-'} flags={flags} attempts={h.attempt_count or 1} {took} ms"
        )
    lines.append(f"spans ({len(view.spans)}):")
    for s in view.spans:
        lines.append(
            f"  {s.trace_id}/{s.span_id} {s.span_kind or '-'} {s.service_name or '-'} {s.name or ''}"
            f" {s.duration if s.duration is not None else '-'} us"
        )
    lines.append(f"packet exchanges ({len(view.exchanges)}):")
    for e in view.exchanges:
        c = e.conn
        what = (
            f"{e.method} {e.host or ''}{e.uri or ''} -> {e.status}"
            if e.exchange_type == "http"
            else f"TLS {e.sni}"
        )
        source = view.captures.get(c.capture)
        where = f"{source['name']} (upload {source['upload']})" if source else c.capture
        lines.append(f"  {where}: {c.src}:{c.sport} -> {c.dst}:{c.dport}  {what}")
    lines.append(f"flows ({len(view.flows)}):")
    for f in view.flows:
        hops = " | ".join(f"{h.kind} {h.src}->{h.dst}" for h in f.hops)
        lines.append(f"  {f.client or '?'} => {f.server or '?'}: {hops}")
    return "\n".join(lines)
