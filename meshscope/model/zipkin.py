"""The Zipkin v2 JSON codec: trace-id normalisation and the v2 span shape, in both directions.

One owner for what a Zipkin span looks like on the wire, so the receiver (collector), the read API
and anything publishing spans as Zipkin JSON agree. Decoding validates as Zipkin's own server does: a
list with one bad span is refused whole with a message naming the span and field, so a sender never
has half a batch accepted without knowing which half.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

import orjson

from meshscope.model.span import Span

SPAN_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
_HEX = frozenset(string.hexdigits)


class BadSpans(ValueError):
    """The body is not a valid Zipkin v2 span list; the message says where."""


def pad_hex_id(value: str, lengths: tuple[int, ...] = (16, 32)) -> str:
    """A hex id as Zipkin stores it: lower-case, padded with leading zeros to the first of ``lengths``
    (16 or 32 digits) it fits. The caller checks it is hex and not too long."""
    width = next(n for n in lengths if len(value) <= n)
    return value.lower().rjust(width, "0")


def normalize_trace_id(trace_id: str) -> str:
    """The form to look a trace up by: lower-case hex, padded to 16 digits, with the high 64 bits
    dropped when they are zero (a 128-bit id asked by its low half)."""
    tid = trace_id.lower().rjust(16, "0")
    if len(tid) > 16:
        tid = tid.rjust(32, "0")
        if tid.startswith("0" * 16):
            tid = tid[16:]
    return tid


def _hex_id(value: object, field: str, where: str, lengths: tuple[int, ...], required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise BadSpans(f"{where}: {field} is required")
        return None
    if not isinstance(value, str) or len(value) > lengths[-1] or not _HEX.issuperset(value):
        raise BadSpans(f"{where}: {field} must be up to {lengths[-1]} hex characters, got {value!r}")
    return pad_hex_id(value, lengths)


def _int(value: object, field: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadSpans(f"{where}: {field} must be a non-negative integer, got {value!r}")
    return value


def _endpoint(value: object, field: str, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadSpans(f"{where}: {field} must be an object")
    out: dict = {}
    for key in ("serviceName", "ipv4", "ipv6"):
        v = value.get(key)
        if v is not None:
            if not isinstance(v, str):
                raise BadSpans(f"{where}: {field}.{key} must be a string")
            out[key] = v
    port = _int(value.get("port"), f"{field}.port", where)
    if port:
        out["port"] = port
    return out or None


def span_from_zipkin(raw: object, index: int = 0) -> Span:
    """One Zipkin v2 JSON span (a decoded object) → a Span; BadSpans naming span ``index`` if invalid."""
    where = f"span {index}"
    if not isinstance(raw, dict):
        raise BadSpans(f"{where}: expected an object")
    kind = raw.get("kind")
    if kind is not None and (not isinstance(kind, str) or kind not in SPAN_KINDS):
        raise BadSpans(f"{where}: kind must be one of {sorted(SPAN_KINDS)}, got {kind!r}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise BadSpans(f"{where}: name must be a string")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise BadSpans(f"{where}: tags must be an object of strings")
    annotations = raw.get("annotations") or []
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict) and isinstance(a.get("value"), str)
        and _int(a.get("timestamp"), "annotation timestamp", where) is not None
        for a in annotations
    ):
        raise BadSpans(f"{where}: annotations must be objects with a timestamp and a string value")
    return Span(
        trace_id=_hex_id(raw.get("traceId"), "traceId", where, (16, 32), True),  # type: ignore[arg-type]
        span_id=_hex_id(raw.get("id"), "id", where, (16,), True),  # type: ignore[arg-type]
        parent_id=_hex_id(raw.get("parentId"), "parentId", where, (16,), False),
        name=name,
        span_kind=kind,
        timestamp=_int(raw.get("timestamp"), "timestamp", where),
        duration=_int(raw.get("duration"), "duration", where),
        local_endpoint=_endpoint(raw.get("localEndpoint"), "localEndpoint", where),
        remote_endpoint=_endpoint(raw.get("remoteEndpoint"), "remoteEndpoint", where),
        annotations=[{"timestamp": a["timestamp"], "value": a["value"]} for a in annotations],
        tags=dict(tags),
        debug=bool(raw.get("debug", False)),
        shared=bool(raw.get("shared", False)),
    )


def spans_from_zipkin_json(body: bytes) -> list[Span]:
    """A Zipkin v2 JSON array of spans → Span records; BadSpans on any bad span."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadSpans(f"malformed JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BadSpans("expected a JSON array of spans")
    return [span_from_zipkin(raw, i) for i, raw in enumerate(data)]


def span_to_zipkin(span: Span) -> dict:
    """A Span in Zipkin's JSON v2 shape (camelCase keys; empty fields left out), the inverse of
    ``span_from_zipkin``."""
    out = {
        "traceId": span.trace_id,
        "id": span.span_id,
        "parentId": span.parent_id,
        "name": span.name,
        "kind": span.span_kind,
        "timestamp": span.timestamp,
        "duration": span.duration,
        "localEndpoint": span.local_endpoint or None,
        "remoteEndpoint": span.remote_endpoint or None,
        "annotations": span.annotations or None,
        "tags": span.tags or None,
        "debug": True if span.debug else None,
        "shared": True if span.shared else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def spans_to_zipkin_json(spans: Iterable[Span]) -> bytes:
    """Spans as one Zipkin v2 JSON list (what ``POST /api/v2/spans`` and Zipkin's Kafka topic carry)."""
    return orjson.dumps([span_to_zipkin(s) for s in spans])
