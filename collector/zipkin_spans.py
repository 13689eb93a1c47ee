"""Zipkin v2 span lists as the receiver gets them (JSON or proto3) → Span records.

The JSON shape and its validation belong to the model's codec (``meshscope.model.zipkin``); the proto3
transport is decoded here into the same Spans, refused whole with the same ``BadSpans`` on any bad span.
"""

from __future__ import annotations

import ipaddress

from google.protobuf.message import DecodeError
from meshscope.collector import zipkin_proto

from meshscope.model import BadSpans, Span, spans_from_zipkin_json

__all__ = ["BadSpans", "spans_from_json", "spans_from_proto"]

spans_from_json = spans_from_zipkin_json  # a Zipkin v2 JSON array → Spans: the model's codec


def _proto_endpoint(ep) -> dict | None:
    out: dict = {}
    if ep.service_name:
        out["serviceName"] = ep.service_name
    if ep.ipv4:
        out["ipv4"] = str(ipaddress.IPv4Address(ep.ipv4))
    if ep.ipv6:
        out["ipv6"] = str(ipaddress.IPv6Address(ep.ipv6))
    if ep.port:
        out["port"] = ep.port
    return out or None


def _proto_id(value: bytes, field: str, where: str, lengths: tuple[int, ...], required: bool) -> str | None:
    if not value:
        if required:
            raise BadSpans(f"{where}: {field} is required")
        return None
    if len(value) not in lengths:
        raise BadSpans(f"{where}: {field} must be {' or '.join(map(str, lengths))} bytes, got {len(value)}")
    return value.hex()


def spans_from_proto(body: bytes) -> list[Span]:
    """A serialized ``zipkin.proto3.ListOfSpans`` → Span records; BadSpans on a bad message or span."""
    try:
        message = zipkin_proto.ListOfSpans.FromString(body)
    except (DecodeError, ValueError) as exc:
        raise BadSpans(f"malformed zipkin.proto3.ListOfSpans: {exc}") from exc
    out = []
    for i, s in enumerate(message.spans):
        where = f"span {i}"
        try:
            local = _proto_endpoint(s.local_endpoint) if s.HasField("local_endpoint") else None
            remote = _proto_endpoint(s.remote_endpoint) if s.HasField("remote_endpoint") else None
        except ValueError as exc:
            raise BadSpans(f"{where}: bad endpoint address: {exc}") from exc
        out.append(Span(
            trace_id=_proto_id(s.trace_id, "trace_id", where, (8, 16), True),  # type: ignore[arg-type]
            span_id=_proto_id(s.id, "id", where, (8,), True),  # type: ignore[arg-type]
            parent_id=_proto_id(s.parent_id, "parent_id", where, (8,), False),
            name=s.name or None,
            span_kind=zipkin_proto.KIND_NAMES.get(s.kind),
            timestamp=s.timestamp or None,
            duration=s.duration or None,
            local_endpoint=local,
            remote_endpoint=remote,
            annotations=[{"timestamp": a.timestamp, "value": a.value} for a in s.annotations],
            tags=dict(s.tags),
            debug=s.debug,
            shared=s.shared,
        ))
    return out
