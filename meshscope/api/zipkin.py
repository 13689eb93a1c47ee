"""The Zipkin v2 read API (what Grafana's Zipkin data source and the Zipkin UI call), answered from
our store: service and span names, trace search, traces by id and service dependencies. Spans are
written in the model's Zipkin v2 JSON shape (``meshscope.model.zipkin``)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from meshscope.api.deps import reader_of
from meshscope.api.schemas import DependencyLink, ErrorBody, ZipkinSpan
from meshscope.model import Span, normalize_trace_id, pad_hex_id, span_to_zipkin
from meshscope.pipelines import StoreReader

router = APIRouter(prefix="/api/v2", tags=["zipkin"])
DAY_MS = 86_400_000
MAX_DEPENDENCY_TRACES = 10_000
ServiceName = Annotated[str, Query(alias="serviceName", min_length=1, max_length=500)]
TraceId = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{1,32}$", description="16 or 32 hex digits")]


def parse_annotation_query(query: str | None) -> dict[str, str | None]:
    """Zipkin's ``annotationQuery``: terms joined by " and "; ``key=value`` matches a tag, a bare
    ``key`` a tag key or an annotation value."""
    terms: dict[str, str | None] = {}
    for term in (query or "").split(" and "):
        term = term.strip()
        if not term:
            continue
        key, sep, value = term.partition("=")
        terms[key.strip()] = value.strip() if sep else None
    return terms


@router.get("/services", response_model=list[str])
async def services(store: Annotated[StoreReader, Depends(reader_of)]) -> list[str]:
    """Every local service name seen in spans."""
    return await store.service_names()


@router.get("/spans", response_model=list[str])
async def span_names(service: ServiceName, store: Annotated[StoreReader, Depends(reader_of)]) -> list[str]:
    """Span names recorded by one service."""
    return await store.span_names(service)


@router.get("/remoteServices", response_model=list[str])
async def remote_services(service: ServiceName,
                          store: Annotated[StoreReader, Depends(reader_of)]) -> list[str]:
    """Remote service names one service called or was called by."""
    return await store.remote_service_names(service)


@router.get("/traces", response_model=list[list[ZipkinSpan]], response_model_exclude_none=True)
async def traces(
    store: Annotated[StoreReader, Depends(reader_of)],
    service: Annotated[str | None, Query(alias="serviceName", max_length=500)] = None,
    remote_service: Annotated[str | None, Query(alias="remoteServiceName", max_length=500)] = None,
    span_name: Annotated[str | None, Query(alias="spanName", max_length=500)] = None,
    annotation_query: Annotated[str | None, Query(alias="annotationQuery", max_length=2000)] = None,
    min_duration: Annotated[int | None, Query(alias="minDuration", ge=0, description="microseconds")] = None,
    max_duration: Annotated[int | None, Query(alias="maxDuration", ge=0, description="microseconds")] = None,
    end_ts: Annotated[int | None, Query(alias="endTs", ge=0, le=2**53, description="epoch ms")] = None,
    lookback: Annotated[int, Query(ge=0, le=2**53, description="ms before endTs")] = DAY_MS,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> list[list[dict]]:
    """Traces with a span matching every condition, newest first."""
    end = end_ts if end_ts is not None else int(time.time() * 1000)
    found = await store.find_traces(
        service,
        None if span_name in (None, "", "all") else span_name,
        end,
        min(lookback, end),
        min_duration,
        max_duration,
        parse_annotation_query(annotation_query),
        limit,
    )
    if remote_service:
        wanted = remote_service.lower()
        found = [
            t
            for t in found
            if any(
                (s.remote_endpoint or {}).get("serviceName", "").lower() == wanted
                and (not service or (s.service_name or "").lower() == service.lower())
                for s in t
            )
        ]
    return [[span_to_zipkin(s) for s in trace] for trace in found]


@router.get(
    "/trace/{trace_id}",
    response_model=list[ZipkinSpan],
    response_model_exclude_none=True,
    responses={404: {"model": ErrorBody}},
)
async def trace(trace_id: TraceId, store: Annotated[StoreReader, Depends(reader_of)]) -> list[dict]:
    """Every span of one trace."""
    spans = await store.spans_by_trace_id(normalize_trace_id(trace_id))
    if not spans and len(trace_id) > 16:  # stored as 128-bit while asked by its low half, or the reverse
        spans = await store.spans_by_trace_id(pad_hex_id(trace_id))
    if not spans:
        raise HTTPException(404, f"trace {trace_id} not found")
    return [span_to_zipkin(s) for s in spans]


@router.get("/traceMany", response_model=list[list[ZipkinSpan]], response_model_exclude_none=True)
async def trace_many(
    store: Annotated[StoreReader, Depends(reader_of)],
    trace_ids: Annotated[
        str,
        Query(
            alias="traceIds",
            min_length=1,
            max_length=33 * 100,
            pattern=r"^[0-9a-fA-F]{1,32}(,[0-9a-fA-F]{1,32})*$",
        ),
    ],
) -> list[list[dict]]:
    """Several traces by id (comma-separated); unknown ids are left out."""
    out = []
    for tid in dict.fromkeys(trace_ids.split(",")):
        spans = await store.spans_by_trace_id(normalize_trace_id(tid))
        if spans:
            out.append([span_to_zipkin(s) for s in spans])
    return out


def dependency_links(traces: list[list[Span]]) -> list[DependencyLink]:
    """Service → service call counts derived from spans, as Zipkin's DependencyLinker does: a span whose
    parent belongs to another service is a call; a CLIENT span naming a remote service that left no span
    of its own counts too. A span tagged ``error`` counts as an error."""
    calls: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    for spans in traces:
        by_id = {s.span_id: s for s in spans}
        children = {s.parent_id for s in spans if s.parent_id}
        for s in spans:
            child = s.service_name
            parent_span = by_id.get(s.parent_id) if s.parent_id else None
            link = None
            if (
                parent_span is not None
                and parent_span.service_name
                and child
                and parent_span.service_name != child
            ):
                link = (parent_span.service_name.lower(), child.lower())
            elif s.span_kind == "CLIENT" and s.span_id not in children and child:
                remote = (s.remote_endpoint or {}).get("serviceName")
                if remote and remote.lower() != child.lower():
                    link = (child.lower(), remote.lower())
            if link is not None:
                calls[link] += 1
                if "error" in s.tags:
                    errors[link] += 1
    return [
        DependencyLink(parent=p, child=c, callCount=n, errorCount=errors[(p, c)])
        for (p, c), n in sorted(calls.items())
    ]


@router.get("/dependencies", response_model=list[DependencyLink])
async def dependencies(
    store: Annotated[StoreReader, Depends(reader_of)],
    end_ts: Annotated[int, Query(alias="endTs", ge=0, le=2**53, description="epoch ms")],
    lookback: Annotated[int, Query(ge=0, le=2**53, description="ms before endTs")] = DAY_MS,
) -> list[DependencyLink]:
    """Service dependency links over the time range, derived from the stored spans."""
    found = await store.find_traces(
        None, None, end_ts, min(lookback, end_ts), None, None, {}, MAX_DEPENDENCY_TRACES
    )
    return dependency_links(found)


# Zipkin's autocomplete keys: tags Envoy puts on its spans, answered from the access records holding the
# same values (indexed there), so Grafana and the Zipkin UI offer what meshscope's own search page offers
AUTOCOMPLETE_FIELDS = {
    "http.method": "method",
    "http.status_code": "response_code",
    "upstream_cluster": "upstream_cluster",
    "node_id": "node_id",
    "response_flags": "response_flags",
}


@router.get("/autocompleteKeys", response_model=list[str])
async def autocomplete_keys() -> list[str]:
    """The span tag keys whose values /autocompleteValues lists."""
    return list(AUTOCOMPLETE_FIELDS)


@router.get("/autocompleteValues", response_model=list[str])
async def autocomplete_values(
    store: Annotated[StoreReader, Depends(reader_of)],
    key: Annotated[str, Query(min_length=1, max_length=200)],
) -> list[str]:
    """Values seen for one autocomplete key, the most frequent first; none for another key (as Zipkin)."""
    field = AUTOCOMPLETE_FIELDS.get(key)
    return await store.search_values(field, limit=200) if field else []
