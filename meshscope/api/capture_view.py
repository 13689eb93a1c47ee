"""An upload's analysis narrowed by a filter (host, port, protocol, status, request id: the query
parameters of ``GET /api/pcaps/{id}/flows`` and ``/graph.svg``), drawn or listed as the command line
does with the same filter. The analysis document is read as a stream: memory holds its flows and
what the filter keeps, never every exchange of a big upload."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Query

from meshscope.decoders import ExchangeFilter, capture_diagram, diagram_svg
from meshscope.model import Exchange, Flow

HOST = Query(max_length=256, description="an IP at either end, an address block (10.0.0.0/24), or a Host, "
                                         "SNI or DNS name")
PORT = Query(ge=1, le=65535, description="a port at either end")
PROTOCOL = Query(max_length=16, description="http, h2 (gRPC included), grpc, tls, quic or dns")
STATUS = Query(max_length=128, description="5xx, 404, a gRPC status or DNS rcode; several with commas")
REQUEST_ID = Query(max_length=256, description="x-request-id, or its beginning")
EXCHANGES = b'],"exchanges":['  # where Analysis.write_json's flows end and its exchanges begin
CHUNK = 1 << 20


def filter_query(
    host: Annotated[str | None, HOST] = None,
    port: Annotated[int | None, PORT] = None,
    protocol: Annotated[str | None, PROTOCOL] = None,
    status: Annotated[str | None, STATUS] = None,
    request_id: Annotated[str | None, REQUEST_ID] = None,
) -> ExchangeFilter:
    """The filter from the query string (FilterError, a UserError: 400, for a value that means nothing)."""
    return ExchangeFilter.parse(host, port, protocol, status, request_id)


def read_document(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """An analysis document as written by ``Analysis.write_json``: its head (id, captures, duplicates,
    flows) and its exchanges one at a time."""
    f = path.open("rb")
    head, found = b"", -1
    while found < 0:
        chunk = f.read(CHUNK)
        if not chunk:  # not written by write_json: read it whole
            f.close()
            doc = orjson.loads(head)
            return doc, iter(doc.pop("exchanges", []))
        start = max(0, len(head) - len(EXCHANGES))
        head += chunk
        found = head.find(EXCHANGES, start)
    rest = head[found + len(EXCHANGES):]
    return orjson.loads(head[: found + 1] + b"}"), _objects(f, rest)


def _objects(f, rest: bytes) -> Iterator[dict[str, Any]]:
    """The objects of a JSON array whose opening bracket was read, up to its closing one."""
    decoder, text = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof = text.decode(rest), 0, False
    try:
        while True:
            while pos < len(buf) and buf[pos] in ", \n\r\t":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                if pos >= len(buf):
                    raise ValueError("need more")
                obj, end = decoder.raw_decode(buf, pos)
            except ValueError:
                if eof:
                    raise ValueError(f"{f.name}: the exchanges end mid-object") from None
                chunk = f.read(CHUNK)
                eof = not chunk
                buf, pos = buf[pos:] + text.decode(chunk, final=eof), 0
                continue
            yield obj
            pos = end
    finally:
        f.close()


Source = Path | dict  # flows.json (read as a stream), or an earlier version's analysis.json, loaded
Kept = dict[str, tuple[Exchange, dict]]  # exchange id → the exchange and its JSON form, as stored


def _narrowed(source: Source, flt: ExchangeFilter) -> tuple[dict, list[Flow], Kept, set[str]]:
    """The document's head, its flows, the exchanges worth keeping (matching, or on a flow) by id with
    their JSON form, and the ids of the matching ones."""
    if isinstance(source, dict):
        head = {k: v for k, v in source.items() if k != "exchanges"}
        exchanges: Iterator[dict[str, Any]] = iter(source.get("exchanges", []))
    else:
        head, exchanges = read_document(source)
    flows = [Flow.from_dict(f) for f in head.get("flows", [])]
    on_flows = {x for f in flows for x in f.exchange_ids}
    kept: Kept = {}
    matching: set[str] = set()
    for data in exchanges:
        ex = Exchange.from_dict(data)
        if flt.matches(ex):
            matching.add(ex.id)
        elif ex.id not in on_flows:
            continue
        kept[ex.id] = (ex, data)
    return head, flows, kept, matching


def filtered_document(source: Source, flt: ExchangeFilter) -> dict[str, Any]:
    """The analysis document with only the flows carrying a match, and the matching exchanges plus
    those of the kept flows (as stored); ``filter`` says what it was narrowed by."""
    head, flows, kept, matching = _narrowed(source, flt)
    shown = flt.flows(flows, {i: ex for i, (ex, _) in kept.items()})
    ids = {f.id for f in shown}
    keep = matching | {x for f in shown for x in f.exchange_ids}
    return {**head, "filter": flt.describe(),
            "flows": [f for f in head.get("flows", []) if f.get("id") in ids],
            "exchanges": [data for i, (_, data) in kept.items() if i in keep]}


def filtered_svg(source: Source, flt: ExchangeFilter) -> str:
    """The upload's picture (flows, else exchanges, else an overview) for what the filter matches."""
    _, flows, kept, _ = _narrowed(source, flt)
    return diagram_svg(capture_diagram(flows, {i: ex for i, (ex, _) in kept.items()}, flt))
