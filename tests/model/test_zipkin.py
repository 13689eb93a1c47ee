"""The model's Zipkin v2 JSON codec: decode, encode, round trip, trace-id normalisation."""

import orjson
import pytest

from meshscope.model import (
    BadSpans,
    Span,
    normalize_trace_id,
    span_from_zipkin,
    span_to_zipkin,
    spans_from_zipkin_json,
    spans_to_zipkin_json,
)

ENVOY_SPAN = {
    "traceId": "463ac35c9f6413ad48485a3953bb6124",
    "id": "48485a3953bb6124",
    "parentId": "a2fb4a1d1a96d312",
    "name": "webapp.default.svc.cluster.local:8080/*",
    "kind": "SERVER",
    "timestamp": 1_700_000_000_123_456,
    "duration": 2048,
    "localEndpoint": {"serviceName": "webapp.default", "ipv4": "10.10.0.9", "port": 8080},
    "remoteEndpoint": {"ipv4": "10.10.0.6"},
    "annotations": [{"timestamp": 1_700_000_000_123_500, "value": "ws"}],
    "tags": {"guid:x-request-id": "4c3f9e1a-2b7d-9e11-8a9f-0d3c5b6a7e81", "http.status_code": "200"},
    "shared": True,
}


def test_decode_then_encode_gives_the_same_json():
    span = span_from_zipkin(ENVOY_SPAN)
    assert span.service_name == "webapp.default" and span.shared and not span.debug
    assert span_to_zipkin(span) == ENVOY_SPAN
    assert orjson.loads(spans_to_zipkin_json([span, span])) == [ENVOY_SPAN, ENVOY_SPAN]
    assert spans_from_zipkin_json(spans_to_zipkin_json([span])) == [span]


def test_empty_fields_are_left_out():
    assert span_to_zipkin(Span(trace_id="0000000000000abc", span_id="0000000000000001")) == {
        "traceId": "0000000000000abc", "id": "0000000000000001"}


def test_a_bad_span_names_its_index_and_field():
    with pytest.raises(BadSpans, match=r"span 1: kind must be one of"):
        spans_from_zipkin_json(orjson.dumps([ENVOY_SPAN, {**ENVOY_SPAN, "kind": "SIDEWAYS"}]))
    with pytest.raises(BadSpans, match="traceId must be up to 32 hex"):
        span_from_zipkin({"traceId": "xyz", "id": "1"})


@pytest.mark.parametrize(("asked", "stored"), [
    ("ABC", "0000000000000abc"),
    ("463ac35c9f6413ad", "463ac35c9f6413ad"),
    ("0000000000000000463ac35c9f6413ad", "463ac35c9f6413ad"),  # 128-bit with a zero high half
    ("1463ac35c9f6413ad", "0000000000000001463ac35c9f6413ad"),
])
def test_trace_ids_are_normalised_for_lookup(asked, stored):
    assert normalize_trace_id(asked) == stored
