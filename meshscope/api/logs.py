"""``POST /api/logs``: import an Envoy access-log file or stream (Istio text or JSON, Envoy default, or a
custom ``format``; plain or gzip; with or without ``kubectl logs --prefix``/``stern`` prefixes).

The body is read as it arrives and stored in batches, so a large file takes bounded memory; lines that
do not parse are counted and listed by line number in the answer, never fatal. Records have
deterministic ids: importing the same file again stores nothing twice.

Imported records take the live records' way when a bus is there to take them: the collector's
publisher (intake checks, the bus's durable acknowledgement), then the pipeline's store and alert
engine, so a 5xx burst in an imported log fires the alert a live one would. Under ``meshscope up`` the
API borrows the collector's publisher; a standalone ``meshscope api`` with Kafka configured (the
scale-out shape) owns one (``imports_for``). Records older than the alert windows are stored but cannot
fire (the engine counts only what its windows hold): importing last month's log pages nobody. The
answer then says ``published`` (acknowledged on the bus; the pipeline stores them moments later).
With no bus to reach (``meshscope api`` over the embedded store, whose in-process bus only lives
inside ``meshscope up``) the API writes to the store (``stored``) and the answer says plainly that
alerts were not evaluated."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from meshscope.collector import (
    Backpressure,
    ImportReport,
    LineParser,
    LineSplitter,
    LogImports,
    Origin,
    custom_format,
    parse_lines,
)
from meshscope.pipelines import StoreWriter, make_bus
from meshscope.settings import Settings

router = APIRouter(prefix="/api/logs", tags=["logs"])
BATCH = 5000
NOT_EVALUATED = ("alerts were not evaluated: this API has no bus to the pipeline (configure bus: kafka, "
                 "or import under `meshscope up`); the records are in the store")


@asynccontextmanager
async def imports_for(settings: Settings) -> AsyncIterator[LogImports | None]:
    """A standalone API's way onto the bus: its own publisher over the configured Kafka bus, or None
    when the bus is the in-process one (no pipeline listens to it outside ``meshscope up``). The bus is
    not started here: a broker that is down at start-up must not keep the API from serving (the
    publisher spools until it answers)."""
    if settings.bus == "memory":
        yield None
        return
    bus = make_bus(settings)
    imports = LogImports.own(settings, bus)
    await imports.start()
    try:
        yield imports
    finally:
        await imports.stop()
        await bus.stop()


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
    ``{lines, records, blank, failed, by_format, errors: [{line, reason, text}]}`` and ``published``
    (on the bus: the pipeline stores them and its alert rules see them) or ``stored`` with ``alerts``
    saying they were not evaluated."""
    parser = LineParser(custom_format(format) if format else None, Origin(node_id, log_name))
    store: StoreWriter = request.app.state.store
    imports: LogImports | None = getattr(request.app.state, "log_imports", None)
    write = imports.publish if imports else store.write
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
    if imports:
        return JSONResponse({**report.to_dict(), "published": report.records})
    return JSONResponse({**report.to_dict(), "stored": report.records, "alerts": NOT_EVALUATED})
