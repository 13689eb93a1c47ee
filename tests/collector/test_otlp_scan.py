"""OTLP/protobuf logs read by the C scanner (collector/_otlp_scan.c, ``decode_logs``) against the upb
message path it replaces: the same records (ids included), the same count and message of unreadable
ones, and the same BadOtlp for a request upb refuses — on requests built at random (bodies and
attribute values of every type, several resources and scopes) and on valid requests mangled byte by
byte."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.collector.otlp_records import (
    BadOtlp,
    ExportLogsServiceRequest,
    LogConverter,
    ScannedLogs,
    decode_logs,
)
from opentelemetry.proto.common.v1 import common_pb2

from tests.collector.test_access_log_lines import ISTIO_LINE, JSON_LINE, TCP_LINE


def test_the_extension_is_built():
    """scripts/setup.sh builds it (pip install -e .): without it every request goes through upb."""
    importlib.import_module("meshscope.collector._otlp_scan")


def _outcome(raw: bytes, scan: bool):
    """(records, skipped, last error) of one request, or BadOtlp's message."""
    converter = LogConverter()
    try:
        request = decode_logs(raw, scan=scan)
        records = converter.records(request)
    except BadOtlp as exc:
        return "BadOtlp", str(exc)
    return records, converter.skipped, converter.last_error


def _agree(raw: bytes) -> object:
    fast, slow = _outcome(raw, scan=True), _outcome(raw, scan=False)
    assert fast == slow, raw
    return fast


_LINES = [ISTIO_LINE.rstrip("\n"), TCP_LINE.rstrip("\n"), JSON_LINE.rstrip("\n"), "", "   ", "not a line",
          ISTIO_LINE.rstrip("\n").replace("2024", "20x4"), ISTIO_LINE.replace("a8a0f1d2", "é😀")]
_KEYS = ["x-envoy-attempt-count", "x-b3-traceid", "x-request-id", "http.request.method", "response_flags",
         "RESPONSE_CODE", "http.response.status_code", "START_TIME", "DOWNSTREAM_REMOTE_ADDRESS",
         "unknown.key", "", "upstream_cluster"]


def _value(kind: str, data) -> common_pb2.AnyValue:
    v = common_pb2.AnyValue()
    if kind == "str":
        v.string_value = data.draw(st.sampled_from(["1", "", "POST", "UF,URX", "503", "a b", "ä",
                                                    "2024-05-01T12:30:00.000Z", "10.9.9.9:1", "x" * 300]))
    elif kind == "int":
        v.int_value = data.draw(st.sampled_from([0, 1, 200, -5, 2**63 - 1, -(2**63)]))
    elif kind == "double":
        v.double_value = data.draw(st.sampled_from([0.0, 1.5, 200.0, float("inf"), -0.0]))
    elif kind == "bool":
        v.bool_value = data.draw(st.booleans())
    elif kind == "array":
        v.array_value.values.add(string_value="UF")
        v.array_value.values.add(int_value=2)
    elif kind == "kvlist":
        v.kvlist_value.values.add(key="k", value=common_pb2.AnyValue(string_value="v"))
    elif kind == "bytes":
        v.bytes_value = b"\x00\xff"
    return v  # "unset": no value at all


_KINDS = st.sampled_from(["str", "str", "str", "int", "double", "bool", "array", "kvlist", "bytes", "unset"])


def _request(data) -> bytes:
    request = ExportLogsServiceRequest()
    for _ in range(data.draw(st.integers(0, 2))):
        rl = request.resource_logs.add()
        if data.draw(st.booleans()):
            for key in data.draw(st.lists(st.sampled_from(["node_name", "log_name", "cluster_name",
                                                           "service.name"]), max_size=3)):
                rl.resource.attributes.add(key=key, value=common_pb2.AnyValue(string_value=f"{key}-v"))
        for _ in range(data.draw(st.integers(0, 2))):
            sl = rl.scope_logs.add()
            if data.draw(st.booleans()):
                sl.scope.name, sl.scope.version = "envoy", "1.40"
            for _ in range(data.draw(st.integers(0, 3))):
                log = sl.log_records.add()
                log.time_unix_nano = data.draw(st.sampled_from([0, 1_714_564_800_000_000_000]))
                log.observed_time_unix_nano = data.draw(st.sampled_from([0, 1_714_564_801_000_000_000]))
                body = data.draw(st.sampled_from(["line", "line", "kvlist", "int", "unset"]))
                if body == "line":
                    log.body.string_value = data.draw(st.sampled_from(_LINES))
                elif body == "kvlist":
                    log.body.kvlist_value.values.add(key="start_time",
                                                     value=common_pb2.AnyValue(string_value="2024-05-01T12:00:00Z"))
                elif body == "int":
                    log.body.int_value = 7
                for _ in range(data.draw(st.integers(0, 3))):
                    log.attributes.add(key=data.draw(st.sampled_from(_KEYS)),
                                       value=_value(data.draw(_KINDS), data))
                if data.draw(st.booleans()):
                    log.trace_id, log.span_id = bytes(range(16)), bytes(range(8))
                if data.draw(st.booleans()):
                    log.severity_text = "INFO"
    return request.SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_requests_agree(data):
    _agree(_request(data))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_requests_agree(data):
    """A byte changed, cut or inserted anywhere: both refuse it alike, or both read the same records."""
    raw = bytearray(_request(data))
    for _ in range(data.draw(st.integers(1, 3))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["set", "cut", "insert", "truncate"]))
        byte = data.draw(st.sampled_from([0x00, 0x08, 0x0A, 0x12, 0x7F, 0x80, 0xC3, 0xFF, 0x1A, 0x09]))
        if how == "set":
            raw[i] = byte
        elif how == "cut":
            del raw[i]
        elif how == "insert":
            raw.insert(i, byte)
        else:
            del raw[i:]
    _agree(bytes(raw))


def _envoy_request(n: int) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="node_name", value=common_pb2.AnyValue(string_value="sidecar~1~a.b~b"))
    logs = rl.scope_logs.add().log_records
    for i in range(n):
        log = logs.add()
        log.body.string_value = ISTIO_LINE.rstrip("\n").replace("a8a0f1d2", f"{i:08x}")
        log.attributes.add(key="x-envoy-attempt-count", value=common_pb2.AnyValue(string_value="1"))
        log.attributes.add(key="x-b3-traceid", value=common_pb2.AnyValue(string_value=f"{i:016x}"))
    return request


def test_envoy_shaped_requests_are_scanned_and_agree():
    """What Envoy's OpenTelemetry access logger sends is read by the scanner, not handed back to upb."""
    raw = _envoy_request(50).SerializeToString()
    assert type(decode_logs(raw)) is ScannedLogs
    records, skipped, _ = _agree(raw)
    assert len(records) == 50 and skipped == 0
    assert records[7].attempt_count == 1 and records[7].trace_id == f"{7:016x}"


@pytest.mark.parametrize("field", ["severity_text", "attribute key", "attribute value", "body", "scope name"])
def test_invalid_utf8_is_malformed_on_both_paths(field):
    """upb refuses a string field that is not UTF-8; so does the scanner (then upb says why)."""
    request = _envoy_request(2)
    log = request.resource_logs[0].scope_logs[0].log_records[1]
    marker = "\u00e9MARK"
    if field == "severity_text":
        log.severity_text = marker
    elif field == "attribute key":
        log.attributes[0].key = marker
    elif field == "attribute value":
        log.attributes[1].value.string_value = marker
    elif field == "body":
        log.body.string_value = marker
    else:
        request.resource_logs[0].scope_logs[0].scope.name = marker
    raw = request.SerializeToString().replace(marker.encode(), b"\xc3(MARK")  # same length, bad UTF-8
    assert _agree(raw)[0] == "BadOtlp"
