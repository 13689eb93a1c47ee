"""``GET /api/pcaps/{id}/flows/{flow_id}/graph.svg``: the flow graph of one flow of an upload (the upload's
whole graph draws only its first flows; the page shows any one flow on its own, as Wireshark's Flow Graph
does for a selected conversation)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from meshscope.api.capture_view import Source, read_document
from meshscope.api.deps import uploads_of
from meshscope.api.pcaps import SVG_HEADERS, SVG_RESPONSES, UploadId, _finished
from meshscope.api.uploads import Uploads
from meshscope.model import Exchange, Flow

router = APIRouter(prefix="/api/pcaps", tags=["captures"])
FlowId = Annotated[str, Path(max_length=200, description="a flow's id from GET /api/pcaps/{id}/flows")]


def flow_svg(source: Source, flow_id: str) -> str | None:
    """The sequence diagram of one flow of an analysis document with the exchanges it names, or None.
    flows.json is read as a stream up to the flow's last exchange: memory never holds the others."""
    from meshscope.decoders import render_svg

    if isinstance(source, dict):
        head, items = source, iter(source.get("exchanges", []))
    else:
        head, items = read_document(source)
    try:
        found = next((f for f in head.get("flows", []) if f.get("id") == flow_id), None)
        if found is None:
            return None
        wanted = set(found.get("exchange_ids") or [])
        exchanges: dict[str, Exchange] = {}
        for data in items:
            if len(exchanges) == len(wanted):
                break
            if data.get("id") in wanted:
                exchanges[data["id"]] = Exchange.from_dict(data)
    finally:
        close = getattr(items, "close", None)  # the stream's file
        if close is not None:
            close()
    return render_svg([Flow.from_dict(found)], exchanges)


def _source(uploads: Uploads, upload_id: str) -> Source:
    return uploads.flows_file(upload_id) or uploads.analysis(upload_id) or {}


@router.get(
    "/{upload_id}/flows/{flow_id}/graph.svg",
    response_class=Response,
    responses=SVG_RESPONSES,
)
async def get_flow_graph(
    upload_id: UploadId, flow_id: FlowId, uploads: Annotated[Uploads, Depends(uploads_of)]
) -> Response:
    """One flow's sequence diagram as SVG (one column per host), drawn from the upload's analysis."""
    _finished(uploads, upload_id)
    svg = await run_in_threadpool(flow_svg, _source(uploads, upload_id), flow_id)
    if svg is None:
        raise HTTPException(404, f"upload {upload_id} has no flow {flow_id}")
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)
