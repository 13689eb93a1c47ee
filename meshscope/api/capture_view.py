"""An upload's analysis narrowed by a filter (host, port, protocol, status, request id: the query
parameters of ``GET /api/pcaps/{id}/flows`` and ``/graph.svg``), drawn or listed as the command line
does with the same filter."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from meshscope.decoders import ExchangeFilter, capture_diagram, diagram_svg
from meshscope.model import Exchange, Flow

HOST = Query(max_length=256, description="an IP at either end, an address block (10.0.0.0/24), or a Host, "
                                         "SNI or DNS name")
PORT = Query(ge=1, le=65535, description="a port at either end")
PROTOCOL = Query(max_length=16, description="http, h2 (gRPC included), grpc, tls, quic or dns")
STATUS = Query(max_length=128, description="5xx, 404, a gRPC status or DNS rcode; several with commas")
REQUEST_ID = Query(max_length=256, description="x-request-id, or its beginning")


def filter_query(
    host: Annotated[str | None, HOST] = None,
    port: Annotated[int | None, PORT] = None,
    protocol: Annotated[str | None, PROTOCOL] = None,
    status: Annotated[str | None, STATUS] = None,
    request_id: Annotated[str | None, REQUEST_ID] = None,
) -> ExchangeFilter:
    """The filter from the query string (FilterError, a UserError: 400, for a value that means nothing)."""
    return ExchangeFilter.parse(host, port, protocol, status, request_id)


def _records(doc: dict[str, Any]) -> tuple[list[Flow], dict[str, Exchange]]:
    flows = [Flow.from_dict(f) for f in doc.get("flows", [])]
    exchanges = {e["id"]: Exchange.from_dict(e) for e in doc.get("exchanges", []) if e.get("id")}
    return flows, exchanges


def filtered_document(doc: dict[str, Any], flt: ExchangeFilter) -> dict[str, Any]:
    """The analysis document with only the flows carrying a match, and the matching exchanges plus
    those of the kept flows; ``filter`` says what it was narrowed by."""
    flows, exchanges = _records(doc)
    kept_ids = {f.id for f in flt.flows(flows, exchanges)}
    kept_flows = [f for f in doc.get("flows", []) if f.get("id") in kept_ids]
    keep = {x for f in kept_flows for x in f.get("exchange_ids", [])}
    keep.update(i for i, ex in exchanges.items() if flt.matches(ex))
    return {**doc, "filter": flt.describe(), "flows": kept_flows,
            "exchanges": [e for e in doc.get("exchanges", []) if e.get("id") in keep]}


def filtered_svg(doc: dict[str, Any], flt: ExchangeFilter) -> str:
    """The upload's picture (flows, else exchanges, else an overview) for what the filter matches."""
    flows, exchanges = _records(doc)
    return diagram_svg(capture_diagram(flows, exchanges, flt))
