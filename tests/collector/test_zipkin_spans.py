"""Zipkin span decoding: any input gives Span records or BadSpans with a message, never another error."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.collector.zipkin_spans import BadSpans, spans_from_json, spans_from_proto

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=40)
    | st.sampled_from(["463ac35c9f6413ad", "SERVER", "CLIENT", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["traceId", "id", "parentId", "kind", "name", "timestamp", "duration", "tags",
                         "localEndpoint", "remoteEndpoint", "annotations", "serviceName", "ipv4", "port",
                         "value", "debug", "shared"]) | st.text(max_size=8),
        children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=3))
def test_any_json_is_spans_or_a_clear_error(doc):
    try:
        spans = spans_from_json(orjson.dumps(doc))
    except BadSpans as exc:
        assert str(exc)
        return
    for s in spans:
        assert len(s.trace_id) in (16, 32) and len(s.span_id) == 16
        s.to_json()  # every accepted span is a storable record


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_spans_or_a_clear_error(body):
    try:
        spans = spans_from_proto(body)
    except BadSpans as exc:
        assert str(exc)
        return
    for s in spans:
        s.to_json()


def test_short_ids_are_padded_like_zipkin():
    (span,) = spans_from_json(b'[{"traceId": "abc", "id": "1"}]')
    assert (span.trace_id, span.span_id) == ("0000000000000abc", "0000000000000001")
