"""OTLP logs and traces (protobuf or OTLP/JSON) → AccessRecords and Span records.

Logs: what Envoy's OpenTelemetry access logger (Istio's ``envoyOtelAls``) sends — a LogRecord whose
body is a formatted access-log line (Istio's text format by default) plus the attributes the operator
configured, under a resource naming the proxy (``node_name``, ``cluster_name``, ``log_name``). The body
is parsed with the access-log line parser; attributes are read by OTel semantic-convention names,
Istio's JSON-format keys and Envoy command-operator names, and win over the body. Traces: each span
becomes a Zipkin-shaped Span (hex ids, microseconds, string tags) with ``guid:x-request-id`` and the
HTTP attributes mapped to the tags the trace view and the Zipkin API read.

Fields are read straight off the upb messages (``json_format`` is far too slow for a hot path); OTLP/JSON
is first parsed into the same messages (its hex trace and span ids turned into protobuf's base64).
OTLP/protobuf logs are read in one pass over their bytes by a C scanner when it was built
(``decode_logs``, ``_otlp_scan.c``): each record's body and scalar attributes without a upb object per
value; a record holding more (a map body, an array attribute) is read with upb, and the upb path stays
the reference (tests/collector/test_otlp_scan.py).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from meshscope.collector.access_log_lines import (
    ISTIO_JSON,
    BadLine,
    LineParser,
    Origin,
    make_record,
    operator_key,
)
from meshscope.collector.access_log_lines import OPERATORS as _OPERATORS
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from meshscope.model import AccessRecord, Span

try:  # compiled by the package's install (scripts/setup.sh), like _line_split.c
    from meshscope.collector._otlp_scan import scan_logs as _scan_logs
except ImportError:  # pragma: no cover - a checkout whose extension was not built
    _scan_logs = None

_RESOURCE_LOGS = logs_service_pb2.ExportLogsServiceRequest.DESCRIPTOR.fields_by_name["resource_logs"]
_RESOURCE_LOGS = _RESOURCE_LOGS.message_type
if "scope_logs" not in _RESOURCE_LOGS.fields_by_name:
    # xds-protos carries an old copy of these modules at the same paths (scripts/setup.sh reinstalls ours)
    raise ImportError("opentelemetry.proto is xds-protos' old copy (no scope_logs): reinstall "
                      "opentelemetry-proto after xds-protos (pip install --force-reinstall --no-deps "
                      "opentelemetry-proto)")

ExportLogsServiceRequest = logs_service_pb2.ExportLogsServiceRequest
ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
_LogRecord, _Resource = logs_pb2.LogRecord, resource_pb2.Resource
_NO_RESOURCE = _Resource()
LOGS_RESPONSE = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
TRACE_RESPONSE = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()


class BadOtlp(ValueError):
    """An OTLP request that cannot be decoded; the message says what is wrong."""


# ---- attribute values ---------------------------------------------------------------------------
def any_value(value) -> Any:
    """An OTLP AnyValue as str/int/float/bool; arrays of scalars as lists; anything else (kvlist,
    bytes, an unknown type) as None: such an attribute is skipped, never an error."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        items = [any_value(v) for v in value.array_value.values]
        return items if all(isinstance(i, str | int | float | bool) for i in items) else None
    return None


def _attributes(kvs) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = any_value(kv.value)
        if v is not None:
            out[kv.key] = v
    return out


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


# ---- logs → AccessRecords -----------------------------------------------------------------------
def _reader(field: str) -> Callable[[Any], Any]:
    return next(read for name, read in _OPERATORS.values() if name == field)


# OTel semantic conventions (current and older names) and Envoy's tag names → AccessRecord field
_SEMCONV: dict[str, str] = {
    "http.request.method": "method", "http.method": "method",
    "url.path": "path", "http.target": "path", "url.scheme": "scheme", "http.scheme": "scheme",
    "http.response.status_code": "response_code", "http.status_code": "response_code",
    "network.protocol.version": "protocol_version", "http.flavor": "protocol_version",
    "user_agent.original": "user_agent", "http.user_agent": "user_agent",
    "server.address": "authority", "http.host": "authority", "http.request.header.host": "authority",
    "http.request.header.x-request-id": "request_id", "guid:x-request-id": "request_id",
    "x-request-id": "request_id",
    "http.request.header.x-forwarded-for": "x_forwarded_for",
    "http.request.header.x-envoy-attempt-count": "attempt_count",
    "http.request.header.x-b3-traceid": "trace_id", "http.request.header.x-b3-spanid": "span_id",
    "http.request.header.x-b3-parentspanid": "parent_span_id",
    "http.request.header.x-b3-sampled": "sampled",
    "http.request.body.size": "request_bytes", "http.response.body.size": "response_bytes",
    "upstream_cluster": "upstream_cluster", "upstream_cluster.name": "upstream_cluster",
    "response_flags": "response_flags",
    "tls.server.name": "sni",
}


def _attribute_readers() -> dict[str, tuple[str, Callable[[Any], Any]]]:
    readers: dict[str, tuple[str, Callable[[Any], Any]]] = dict(ISTIO_JSON.keys)  # Istio's JSON keys
    for key, field in _SEMCONV.items():
        readers[key] = (field, _reader(field))
    for op, reader in _OPERATORS.items():  # "RESPONSE_CODE", "REQ(X-REQUEST-ID)": operator names
        readers.setdefault(op, reader)
    return readers


ATTRIBUTES = _attribute_readers()


_RESOLVED: dict[str, tuple[str, Callable[[Any], Any]] | None] = {}


def _resolve(key: str) -> tuple[str, Callable[[Any], Any]] | None:
    """The reader of an attribute key: by name; as an operator ("RESPONSE_CODE"); as a request header
    ("x-envoy-attempt-count"). Remembered per key: the same few keys come with every record."""
    try:
        return _RESOLVED[key]
    except KeyError:
        pass
    reader = ATTRIBUTES.get(key) or ATTRIBUTES.get(operator_key(key)) or ATTRIBUTES.get(f"REQ({key.upper()})")
    if len(_RESOLVED) < 10_000:
        _RESOLVED[key] = reader
    return reader


def _attribute_field(key: str, value: Any, reader: tuple[str, Callable[[Any], Any]]) -> tuple[str, Any]:
    """(field, value read) of one attribute; BadLine naming it when its value does not read."""
    name, read = reader
    try:
        if isinstance(value, list):
            value = ",".join(map(str, value)) if name == "response_flags" else _first(value)
        return name, read(value)
    except (ValueError, TypeError, OverflowError) as exc:  # int(inf): OverflowError
        raise BadLine(f"attribute {key}={value!r}: {exc}") from None


def _fields_from_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        reader = _resolve(key)
        if reader is not None:
            name, got = _attribute_field(key, value, reader)
            if got is not None:
                out[name] = got
    return out


def _origin(resource) -> tuple[Origin, str]:
    """(the proxy, its cluster) named by a Resource's attributes."""
    attrs = _attributes(resource.attributes)
    origin = Origin(str(attrs.get("node_name") or attrs.get("service.instance.id")
                        or attrs.get("service.name") or ""), str(attrs.get("log_name") or ""))
    return origin, str(attrs.get("cluster_name") or attrs.get("service.name") or "")


class ScannedLogs:
    """An ExportLogsServiceRequest as the C scanner read it (``decode_logs``): its bytes, and per
    ResourceLogs the Resource's bytes (or None) and the log entries (see ``_otlp_scan.c``)."""

    __slots__ = ("data", "resource_logs")

    def __init__(self, data: bytes, resource_logs: list) -> None:
        self.data, self.resource_logs = data, resource_logs


def decode_logs(body: bytes, *, scan: bool = True):
    """OTLP/protobuf logs bytes → what ``LogConverter.records`` reads (ScannedLogs, or the upb message
    when the scanner is not built or leaves the request to upb); BadOtlp when malformed."""
    if scan and _scan_logs is not None:
        found = _scan_logs(body)
        if found is not None:
            return ScannedLogs(body, found)
    return decode_protobuf(ExportLogsServiceRequest, body)


class LogConverter:
    """OTLP log records → AccessRecords; a record that cannot be read is counted, never fatal."""

    def __init__(self) -> None:
        self.parser = LineParser()
        self.skipped = 0
        self.last_error = ""

    def records(self, request) -> list[AccessRecord]:
        """The records of an ExportLogsServiceRequest (a upb message, or ScannedLogs)."""
        if type(request) is ScannedLogs:
            return self._scanned(request)
        out: list[AccessRecord] = []
        for resource_logs in request.resource_logs:
            origin, cluster = _origin(resource_logs.resource)
            for scope_logs in resource_logs.scope_logs:
                for log in scope_logs.log_records:
                    try:
                        out.append(self.record(log, origin, cluster))
                    except (BadLine, TypeError, ValueError) as exc:
                        self.skipped += 1
                        self.last_error = str(exc)
        return out

    def _scanned(self, request: ScannedLogs) -> list[AccessRecord]:
        """``records`` of what the C scanner read: as the upb path does per record, from the body text
        and attribute values it handed over; a record it left as bytes goes through upb and
        ``record``. A record or resource upb refuses makes the whole request malformed (BadOtlp), as
        decoding it with upb would have."""
        skipped, last_error = self.skipped, self.last_error
        try:
            return self._scanned_records(request)
        except DecodeError:
            self.skipped, self.last_error = skipped, last_error
            return self.records(decode_protobuf(ExportLogsServiceRequest, request.data))

    def _scanned_records(self, request: ScannedLogs) -> list[AccessRecord]:
        out: list[AccessRecord] = []
        for resource, entries in request.resource_logs:
            origin, cluster = _origin(_NO_RESOURCE if resource is None else _Resource.FromString(resource))
            for entry in entries:
                try:
                    if type(entry) is bytes:  # a map body, an array attribute…: upb reads it
                        out.append(self.record(_LogRecord.FromString(entry), origin, cluster))
                        continue
                    body, attrs, trace_id, span_id, start, end = entry
                    record = self._whole_line(body, attrs, _apply_pairs, trace_id, span_id, origin, cluster)
                    if record is None:  # not a whole line: the fields merged as upb's path does
                        log = _LogRecord.FromString(request.data[start:end])
                        record = self._record_from_fields(log, origin, cluster)
                    out.append(record)
                except (BadLine, TypeError, ValueError) as exc:
                    self.skipped += 1
                    self.last_error = str(exc)
        return out

    def record(self, log, origin: Origin, cluster: str) -> AccessRecord:
        body = log.body
        if body.WhichOneof("value") == "string_value":
            record = self._whole_line(body.string_value, log.attributes, _apply_attributes, log.trace_id,
                                      log.span_id, origin, cluster)
            if record is not None:
                return record
        return self._record_from_fields(log, origin, cluster)

    def _whole_line(self, body: str, attributes, apply: Callable[[AccessRecord, Any], None],
                    trace_id: bytes, span_id: bytes, origin: Origin, cluster: str) -> AccessRecord | None:
        """The common case, for both paths: the body is a whole access-log line, the attributes
        (``apply``'d: upb KeyValues or the scanner's pairs) add to it. None: the body is not a line
        (then the fields are merged); BadLine when it is not and no attribute could make up for it."""
        text = body.strip()
        if not text:
            return None
        try:
            record = self.parser.line_record(text, origin)[1]
        except BadLine:
            if not attributes:
                raise
            return None
        record.node_cluster = cluster
        if attributes:
            apply(record, attributes)
        if not record.trace_id and trace_id:
            record.trace_id = trace_id.hex()
            if span_id and record.span_id is None:
                record.span_id = span_id.hex()
        return record

    def _record_from_fields(self, log, origin: Origin, cluster: str) -> AccessRecord:
        """A body that is not a whole line (a map, a custom text, nothing): fields merged, then built."""
        fields: dict[str, Any] = {}
        body = log.body
        which = body.WhichOneof("value")
        if which == "string_value" and body.string_value.strip():
            try:
                fields = self.parser.fields(body.string_value.strip())[1]
            except BadLine:
                if not log.attributes:
                    raise
        elif which == "kvlist_value":  # a JSON-format body sent as a map
            fields = ISTIO_JSON.from_mapping(_attributes(body.kvlist_value.values))
        fields.update(_fields_from_attributes(_attributes(log.attributes)))
        if fields.get("start_time") is None:
            nanos = log.time_unix_nano or log.observed_time_unix_nano
            if nanos:
                fields["start_time"] = nanos / 1e9
        if not fields.get("trace_id") and log.trace_id:
            fields["trace_id"] = log.trace_id.hex()
            if log.span_id:
                fields.setdefault("span_id", log.span_id.hex())
        return make_record(fields, origin, cluster)


# fields that make a record's id (AccessRecord.compute_id) or its protocol (make_record)
_IDENTITY = frozenset({"start_time", "downstream_remote", "upstream_local", "request_id", "path",
                       "access_log_type", "duration_ms", "method", "protocol_version"})


def _apply_attributes(record: AccessRecord, kvs) -> None:
    """``_apply_pairs`` of upb KeyValues."""
    _apply_pairs(record, [(kv.key, any_value(kv.value)) for kv in kvs])


def _apply_pairs(record: AccessRecord, pairs) -> None:
    """Attributes, as (key, value: ``any_value``'s result), win over the body (as
    ``_fields_from_attributes``, set on the record); the protocol and id are worked out again when an
    attribute changed what they are made of."""
    again = False
    resolved = _RESOLVED
    for key, value in pairs:
        reader = resolved[key] if key in resolved else _resolve(key)
        if reader is None or value is None:
            continue
        if type(value) is str:  # what Envoy sends: read here, no call
            name, read = reader
            try:
                got = read(value)
            except (ValueError, TypeError, OverflowError):
                name, got = _attribute_field(key, value, reader)  # raises BadLine naming it
        else:
            name, got = _attribute_field(key, value, reader)
        if got is not None:
            setattr(record, name, got)
            again = again or name in _IDENTITY
    if again:
        record.protocol = "HTTP" if (record.method or record.protocol_version) else "TCP"
        record.id = record.compute_id()


# ---- traces → Spans -----------------------------------------------------------------------------
_KINDS = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
# OTel HTTP semantic conventions → the Zipkin tags Envoy's Zipkin tracer writes (what the views read)
_SPAN_TAGS = {
    "http.request.method": "http.method", "http.response.status_code": "http.status_code",
    "url.full": "http.url", "url.path": "http.path", "network.protocol.version": "http.protocol",
    "user_agent.original": "user_agent", "http.request.header.x-request-id": "guid:x-request-id",
    "x-request-id": "guid:x-request-id",
}


def _tag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(_tag, value))
    return str(value)


def spans(request) -> list[Span]:
    """Every span of an ExportTraceServiceRequest; BadOtlp for a span without valid ids."""
    out: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8:
                    raise BadOtlp(f"span {s.name!r}: trace_id must be 16 bytes and span_id 8 "
                                  f"(got {len(s.trace_id)} and {len(s.span_id)})")
                tags = {k: _tag(v) for k, v in _attributes(s.attributes).items()}
                for otel, zipkin in _SPAN_TAGS.items():
                    if otel in tags and zipkin not in tags:
                        tags[zipkin] = tags[otel]
                if s.status.code == 2:  # STATUS_CODE_ERROR
                    tags.setdefault("error", s.status.message or "true")
                start, end = s.start_time_unix_nano, s.end_time_unix_nano
                ip = tags.get("net.host.ip") or tags.get("server.address")
                local = {"serviceName": str(service)} if service else {}
                if ip and ":" not in ip and ip.replace(".", "").isdigit():
                    local["ipv4"] = ip
                peer = tags.get("net.peer.ip") or tags.get("network.peer.address") or tags.get("peer.address")
                remote = {"ipv4": peer.rsplit(":", 1)[0]} if peer and "." in peer else None
                out.append(Span(
                    trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                    parent_id=s.parent_span_id.hex() if len(s.parent_span_id) == 8 else None,
                    name=s.name or None, span_kind=_KINDS.get(s.kind),
                    timestamp=start // 1000 if start else None,
                    duration=max(0, (end - start) // 1000) if start and end else None,
                    local_endpoint=local or None, remote_endpoint=remote,
                    annotations=[{"timestamp": e.time_unix_nano // 1000, "value": e.name} for e in s.events],
                    tags=tags,
                ))
    return out


# ---- decoding -----------------------------------------------------------------------------------
def decode_protobuf(message_type, body: bytes):
    try:
        return message_type.FromString(body)
    except (DecodeError, ValueError) as exc:
        name = message_type.DESCRIPTOR.name
        raise BadOtlp(f"malformed {name} protobuf ({len(body)} bytes): {exc}") from None


_ID_KEYS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64 for bytes."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                if value == "":
                    continue
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise BadOtlp(f"{key} {value!r} is not hex") from None
                node[key] = base64.b64encode(raw).decode()
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def decode_json(message_type, body: bytes):
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadOtlp(f"malformed OTLP/JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadOtlp(f"OTLP/JSON: expected an {message_type.DESCRIPTOR.name} object")
    _hex_ids_to_base64(doc)
    try:
        return json_format.ParseDict(doc, message_type(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadOtlp(f"OTLP/JSON {message_type.DESCRIPTOR.name}: {exc}") from None
