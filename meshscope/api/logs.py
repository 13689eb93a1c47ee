"""``POST /api/logs``: import an Envoy access-log file or stream (Istio text or JSON, Envoy default, or a
custom ``format``; plain or gzip; with or without ``kubectl logs --prefix``/``stern`` prefixes).

The body is read as it arrives and stored in batches, so a large file takes bounded memory; lines that
do not parse are counted and listed by line number in the answer, never fatal. Records have
deterministic ids: importing the same file again stores nothing twice.

Where the API runs with the collector and pipeline in one process (``meshscope up``), imported records
take the live records' way: the collector's publisher (intake checks, the bus's durable
acknowledgement), then the pipeline's store and alert engine, so a 5xx burst in an imported log fires
the alert a live one would. Records older than the alert windows are stored but cannot fire (the engine
counts only what its windows hold): importing last month's log pages nobody. The answer then says
``published`` (acknowledged on the bus; the pipeline stores them moments later). The API on its own
(``meshscope api``) has no pipeline in its process: it writes to the store (``stored``) and alerts do
not see the records."""

from __future__ import annotations

import zlib
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from meshscope.collector import (
    Backpressure,
    ImportReport,
    LineParser,
    LineSplitter,
    Origin,
    custom_format,
    parse_lines,
)
from meshscope.pipelines import StoreWriter

router = APIRouter(prefix="/api/logs", tags=["logs"])
BATCH = 5000


@router.post("", responses={200: {"description": "the import report"}})
async def import_logs(
    request: Request,
    format: Annotated[str | None, Query(max_length=4000, description="Envoy format string of the lines, "
                                        "or a JSON object of key → %OPERATOR%; default: detect")] = None,
    node_id: Annotated[str, Query(max_length=500, description="the proxy, for lines without a "
                                  "kubectl/stern prefix")] = "",
    log_name: Annotated[str, Query(max_length=200)] = "",
) -> JSONResponse:
    """Body: the log (``Content-Encoding: gzip`` or a gzip file both work). Answers the report:
    ``{lines, records, blank, failed, by_format, errors: [{line, reason, text}], stored}``."""
    parser = LineParser(custom_format(format) if format else None, Origin(node_id, log_name))
    store: StoreWriter = request.app.state.store
    publish = getattr(request.app.state, "publish_access", None)  # the collector's, under `meshscope up`
    write = publish or store.write
    limit = request.app.state.settings.upload_max_bytes
    report = ImportReport()
    splitter = LineSplitter()
    # a gzip Content-Encoding and a gzip file are the same bytes to us: the splitter sniffs the magic
    received = 0
    pending: list = []
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                return JSONResponse({"detail": f"body exceeds upload_max_bytes ({limit})",
                                     **report.to_dict()}, status_code=413)
            for batch in parse_lines(splitter.feed(chunk), parser, report):
                pending += batch
            if len(pending) >= BATCH:
                await write(pending)
                pending = []
        for batch in parse_lines(splitter.close(), parser, report):
            pending += batch
        if pending:
            await write(pending)
    except zlib.error as exc:
        return JSONResponse({"detail": f"bad gzip data: {exc}", **report.to_dict()}, status_code=400)
    except Backpressure as exc:  # the batches before this one are on the bus: a retry dedupes them
        return JSONResponse({"detail": f"the collector cannot take more records now, retry: {exc}",
                             **report.to_dict()}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({**report.to_dict(), ("published" if publish else "stored"): report.records})
