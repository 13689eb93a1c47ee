"""``GET /api/traces/{request_id}``: every hop, span and packet exchange of one request, and its
combined flow graph; found whichever sampling digit Envoy wrote into the id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response

from meshscope.api.deps import reader_of, uploads_of
from meshscope.api.pcaps import SVG_HEADERS
from meshscope.api.schemas import ErrorBody
from meshscope.api.uploads import Uploads, capture_sources
from meshscope.pipelines import StoreReader
from meshscope.trace_graph import trace_svg
from meshscope.traces import TraceView, assemble_trace

router = APIRouter(prefix="/api/traces", tags=["traces"])
RequestId = Annotated[
    str, Path(min_length=1, max_length=200, description="x-request-id (any sampling digit)")
]


async def _found(store: StoreReader, uploads: Uploads, request_id: str) -> TraceView:
    view = await assemble_trace(store, request_id)
    if not view.found:
        raise HTTPException(404, f"nothing known about request {request_id}")
    view.captures = capture_sources(uploads.root, [e.conn.capture for e in view.exchanges])
    return view


@router.get("/{request_id}", response_model=TraceView, responses={404: {"model": ErrorBody}})
async def get_trace(
    request_id: RequestId,
    store: Annotated[StoreReader, Depends(reader_of)],
    uploads: Annotated[Uploads, Depends(uploads_of)],
) -> TraceView:
    """Access records of every proxy the request crossed (ordered into hops), its spans, and the
    exchanges and flows from uploaded captures that carry it."""
    return await _found(store, uploads, request_id)


@router.get(
    "/{request_id}/graph.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}, 404: {"model": ErrorBody}},
)
async def get_trace_graph(
    request_id: RequestId,
    store: Annotated[StoreReader, Depends(reader_of)],
    uploads: Annotated[Uploads, Depends(uploads_of)],
) -> Response:
    """The request's proxy hops and packet flows as one sequence diagram (SVG)."""
    return Response(
        trace_svg(await _found(store, uploads, request_id)), media_type="image/svg+xml", headers=SVG_HEADERS
    )
