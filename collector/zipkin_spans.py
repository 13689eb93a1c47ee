"""Zipkin v2 span lists (JSON or proto3) → Span records, validated as Zipkin's own server does.

A list with one bad span is refused whole with a message naming the span and field, like Zipkin's
collector, so a sender never has half a batch accepted without knowing which half.
"""

from __future__ import annotations

import ipaddress
import string

import orjson
from google.protobuf.message import DecodeError
from meshscope.collector import zipkin_proto

from meshscope.model import Span

_HEX = frozenset(string.hexdigits)
_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})


class BadSpans(ValueError):
    """The body is not a valid Zipkin v2 span list; the message says where."""


def _hex_id(value: object, field: str, where: str, lengths: tuple[int, ...], required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise BadSpans(f"{where}: {field} is required")
        return None
    if not isinstance(value, str) or len(value) > lengths[-1] or not _HEX.issuperset(value):
        raise BadSpans(f"{where}: {field} must be up to {lengths[-1]} hex characters, got {value!r}")
    # like Zipkin, pad a short id with leading zeros to 16 (or 32) characters
    width = next(n for n in lengths if len(value) <= n)
    return value.lower().rjust(width, "0")


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


def _json_span(raw: object, index: int) -> Span:
    where = f"span {index}"
    if not isinstance(raw, dict):
        raise BadSpans(f"{where}: expected an object")
    kind = raw.get("kind")
    if kind is not None and (not isinstance(kind, str) or kind not in _KINDS):
        raise BadSpans(f"{where}: kind must be one of {sorted(_KINDS)}, got {kind!r}")
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


def spans_from_json(body: bytes) -> list[Span]:
    """A Zipkin v2 JSON array of spans → Span records; BadSpans on any bad span."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadSpans(f"malformed JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BadSpans("expected a JSON array of spans")
    return [_json_span(raw, i) for i, raw in enumerate(data)]


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
