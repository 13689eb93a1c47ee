"""``GET /api/records``: stored access records by time range, status class, cluster, authority; paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from meshscope.api.deps import reader_of
from meshscope.api.schemas import RecordsPage
from meshscope.pipelines import AccessQuery, StoreReader

router = APIRouter(prefix="/api/records", tags=["records"])


@router.get("", response_model=RecordsPage)
async def list_records(
    store: Annotated[StoreReader, Depends(reader_of)],
    start: Annotated[float | None, Query(description="epoch seconds, inclusive")] = None,
    end: Annotated[float | None, Query(description="epoch seconds, exclusive")] = None,
    status_class: Annotated[int | None, Query(ge=1, le=5, description="2 for 2xx, 5 for 5xx …")] = None,
    cluster: Annotated[str | None, Query(max_length=500, description="upstream cluster")] = None,
    authority: Annotated[str | None, Query(max_length=500)] = None,
    node_id: Annotated[str | None, Query(max_length=500, description="the proxy that logged it")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=500, description="next_cursor of the previous page")
    ] = None,
) -> RecordsPage:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    page = await store.list_access(
        AccessQuery(
            start=start,
            end=end,
            status_class=status_class,
            upstream_cluster=cluster,
            authority=authority,
            node_id=node_id,
            limit=limit,
            cursor=cursor,
        )
    )
    return RecordsPage(items=page.items, next_cursor=page.next_cursor)
