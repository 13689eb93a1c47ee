"""``GET /api/alerts``: alert firings and resolutions, filtered by rule, group, state and time."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from meshscope.api.deps import reader_of
from meshscope.api.schemas import AlertList
from meshscope.pipelines import StoreReader

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


@router.get("", response_model=AlertList)
async def list_alerts(
    store: Annotated[StoreReader, Depends(reader_of)],
    rule: Annotated[str | None, Query(max_length=200)] = None,
    group: Annotated[
        str | None, Query(max_length=500, description='group key, e.g. "upstream_cluster=catalog"')
    ] = None,
    state: Literal["firing", "resolved"] | None = None,
    start: Annotated[float | None, Query(description="epoch seconds: alerts last seen at or after")] = None,
    end: Annotated[float | None, Query(description="epoch seconds: alerts first seen before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Newest first."""
    items = await store.alerts(rule=rule, group_key=group, state=state, start=start, end=end, limit=limit)
    return AlertList(items=items)
