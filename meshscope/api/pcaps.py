"""Capture uploads: ``POST /api/pcaps`` (raw body or multipart, several files analysed together),
their status and damage report, flows and flow graph."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from meshscope.api.capture_view import filter_query, filtered_document, filtered_svg
from meshscope.api.deps import uploads_of
from meshscope.api.schemas import ErrorBody, UploadFlows
from meshscope.api.schemas import UploadStatus as UploadStatusBody
from meshscope.api.upload_status import UploadState, UploadStatus
from meshscope.api.uploads import Uploads
from meshscope.decoders import ExchangeFilter

router = APIRouter(prefix="/api/pcaps", tags=["captures"])
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the id POST /api/pcaps returned")]
SVG_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
SVG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/svg+xml": {}}},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
}

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one capture as the raw body, or several as multipart file parts (analysed together)",
        "content": {
            "application/vnd.tcpdump.pcap": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=UploadStatusBody,
    openapi_extra=UPLOAD_BODY,
    responses={413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
async def upload(request: Request, uploads: Annotated[Uploads, Depends(uploads_of)]) -> dict:
    """Store the capture(s) and queue their analysis; answers at once with the new upload's id."""
    status = await uploads.receive(
        request.headers.get("content-type", ""), request.headers.get("content-length"), request.stream()
    )
    return status.to_dict()


@router.get("", response_model=list[UploadStatusBody])
async def list_uploads(
    uploads: Annotated[Uploads, Depends(uploads_of)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict]:
    """The most recent uploads, newest first."""
    return [status.to_dict() for status in uploads.list(limit)]


def _status(uploads: Uploads, upload_id: str) -> UploadStatus:
    status = uploads.status(upload_id)
    if status is None:
        raise HTTPException(404, f"no upload {upload_id}")
    return status


def _finished(uploads: Uploads, upload_id: str) -> UploadStatus:
    status = _status(uploads, upload_id)
    if status.state is not UploadState.DONE:
        detail = status.error or f"upload {upload_id} is {status.state}"
        raise HTTPException(409 if status.state is not UploadState.FAILED else 422, detail)
    return status


@router.get("/{upload_id}", response_model=UploadStatusBody, responses={404: {"model": ErrorBody}})
async def get_upload(upload_id: UploadId, uploads: Annotated[Uploads, Depends(uploads_of)]) -> dict:
    """State (queued, analysing, done, failed), counts and each capture's damage report."""
    return _status(uploads, upload_id).to_dict()


@router.get(
    "/{upload_id}/flows",
    response_model=UploadFlows,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def get_flows(
    upload_id: UploadId, uploads: Annotated[Uploads, Depends(uploads_of)],
    flt: Annotated[ExchangeFilter, Depends(filter_query)],
) -> dict | FileResponse:
    """The upload's analysis document — its flows and exchanges, each capture's report and the copies
    folded — the same document as ``meshscope pcap analyze --json`` (409 while still being analysed).
    Filters (host, port, protocol, status, request_id) keep the flows carrying a matching exchange, and
    the matching exchanges, as ``meshscope pcap analyze --json --host …`` does."""
    _finished(uploads, upload_id)
    path = uploads.flows_file(upload_id)
    if path is not None and not flt:  # streamed from disk: a big upload's exchanges are never held in memory
        return FileResponse(path, media_type="application/json")
    # read as a stream (memory holds what the filter keeps); or analysed by an earlier version (or the
    # folder lost its results): the same document, from analysis.json
    source = path or uploads.analysis(upload_id) or {"id": upload_id, "flows": [], "exchanges": []}
    return await run_in_threadpool(filtered_document, source, flt) if flt else source


@router.get(
    "/{upload_id}/graph.svg",
    response_class=Response,
    responses={**SVG_RESPONSES, 501: {"model": ErrorBody}},
)
async def get_graph(upload_id: UploadId, uploads: Annotated[Uploads, Depends(uploads_of)],
                    flt: Annotated[ExchangeFilter, Depends(filter_query)]) -> Response:
    """The upload's picture as SVG, one column per host: its flows; with none stitched, its exchanges
    (a section per connection); too many to draw one by one, an overview of hosts and their exchanges
    with counts and error rates. Filters narrow what is drawn."""
    _finished(uploads, upload_id)
    if flt:  # drawn from the analysis document, for what the filter keeps
        source = uploads.flows_file(upload_id) or uploads.analysis(upload_id) or {}
        svg = await run_in_threadpool(filtered_svg, source, flt)  # a big document: off the event loop
        return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)
    svg = uploads.graph(upload_id)
    if svg is None:
        raise HTTPException(501, "no flow graph renderer in this build")
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def delete_upload(upload_id: UploadId, uploads: Annotated[Uploads, Depends(uploads_of)]) -> Response:
    """Delete an analysed upload's files and results (frees a place under upload_max_count); the
    exchanges and flows it stored stay in the store until retention removes them."""
    if not uploads.delete(upload_id):
        raise HTTPException(404, f"no upload {upload_id}")
    return Response(status_code=204)
