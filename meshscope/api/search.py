"""``GET /api/search``: access records by any of the page's filters, their histogram over time by status
class, and field values for autocomplete (Kibana Discover's three questions, answered by the store)."""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from meshscope.api.deps import reader_of
from meshscope.api.schemas import Histogram, HistogramBar, RecordsPage
from meshscope.pipelines import VALUE_FIELDS, AccessSearch, StoreReader

router = APIRouter(prefix="/api/search", tags=["search"])
# nice bucket sizes (seconds) for a histogram of about BARS bars
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
BARS = 60
DEFAULT_RANGE_S = 3600.0
_TRACE_ID = re.compile(r"^(?:[0-9a-fA-F]{16}|[0-9a-fA-F]{32})$")
Text = Annotated[str | None, Query(max_length=500)]


def search_filters(
    start: Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds, inclusive")] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds, exclusive")] = None,
    proxy: Annotated[str | None, Query(max_length=500, description="node id of the logging proxy")] = None,
    service: Annotated[str | None, Query(max_length=500, description="the proxy's cluster")] = None,
    cluster: Annotated[str | None, Query(max_length=500, description="upstream cluster")] = None,
    route: Annotated[str | None, Query(max_length=500, description="route name")] = None,
    path: Annotated[str | None, Query(max_length=2000, description="path prefix")] = None,
    authority: Text = None,
    method: Annotated[str | None, Query(max_length=40)] = None,
    status_class: Annotated[int | None, Query(ge=1, le=5, description="2 for 2xx, 5 for 5xx …")] = None,
    status: Annotated[int | None, Query(ge=0, le=999, description="an exact response code")] = None,
    flag: Annotated[str | None, Query(max_length=20, description="an Envoy response flag: UF, URX …")] = None,
    retried: Annotated[bool, Query(description="only retried requests")] = False,
    min_ms: Annotated[float | None, Query(ge=0, le=1e9, description="minimum duration, ms")] = None,
    id: Annotated[
        str | None,
        Query(max_length=200, description="x-request-id (any sampling digit) or a 16/32-hex-digit trace id"),
    ] = None,
) -> AccessSearch:
    """The search filters as query parameters (shared by the list and the histogram)."""
    request_id = trace_id = None
    if id is not None and id.strip():
        if _TRACE_ID.match(id.strip()):
            trace_id = id.strip()
        else:
            request_id = id.strip()
    return AccessSearch(
        start=start, end=end, node_id=proxy or None, node_cluster=service or None,
        upstream_cluster=cluster or None, route_name=route or None, path_prefix=path or None,
        authority=authority or None, method=method.upper() if method else None, status_class=status_class,
        status=status, response_flag=flag or None, retried=retried, min_duration_ms=min_ms,
        request_id=request_id, trace_id=trace_id,
    )


Filters = Annotated[AccessSearch, Depends(search_filters)]
Reader = Annotated[StoreReader, Depends(reader_of)]


@router.get("", response_model=RecordsPage)
async def search(
    store: Reader,
    query: Filters,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500, description="the previous next_cursor")] = None,
) -> RecordsPage:
    """Matching access records, newest first; pass ``next_cursor`` back as ``cursor`` for more."""
    query.limit, query.cursor = limit, cursor
    page = await store.search_access(query)
    return RecordsPage(items=page.items, next_cursor=page.next_cursor)


def bucket_size(span_s: float, bars: int = BARS) -> int:
    """The smallest nice step that draws span_s in at most ``bars`` bars."""
    return next((s for s in STEPS if span_s / s <= bars), STEPS[-1])


@router.get("/histogram", response_model=Histogram)
async def histogram(store: Reader, query: Filters) -> Histogram:
    """Matching records per time bucket and status class. Without a range: the last hour."""
    end = query.end if query.end is not None else time.time()
    start = query.start if query.start is not None else end - DEFAULT_RANGE_S
    if start >= end:
        raise ValueError("start must be before end")
    query.start, query.end = start, end
    step = bucket_size(end - start)
    buckets = await store.access_histogram(query, step)
    bars = [HistogramBar(start=b.start, counts=b.counts) for b in buckets]
    return Histogram(start=start, end=end, bucket_s=step, total=sum(sum(b.counts.values()) for b in bars),
                     bars=bars)


@router.get("/values", response_model=list[str])
async def values(
    store: Reader,
    field: Literal[VALUE_FIELDS],  # type: ignore[valid-type]
    prefix: Annotated[str, Query(max_length=500)] = "",
    start: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[str]:
    """Values of one field starting with ``prefix``, the most frequent first (for autocomplete)."""
    return await store.search_values(field, prefix, start, end, limit)
