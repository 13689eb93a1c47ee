"""The record model: the only thing meshscope's components share (see DESIGN.md, "Records")."""

from meshscope.model.access import AccessRecord
from meshscope.model.alert import Alert
from meshscope.model.exchange import (
    Connection,
    DnsAttempt,
    DnsQuery,
    Exchange,
    GrpcCall,
    H2Stream,
    QuicInitial,
)
from meshscope.model.flow import HOP_KINDS, Flow, Hop
from meshscope.model.ids import normalize_request_id, record_id
from meshscope.model.istio import ProxyNode, parse_node_id
from meshscope.model.record import Record, register_nested
from meshscope.model.span import Span
from meshscope.model.zipkin import (
    BadSpans,
    normalize_trace_id,
    pad_hex_id,
    span_from_zipkin,
    span_to_zipkin,
    spans_from_zipkin_json,
    spans_to_zipkin_json,
)

register_nested(Exchange, conn=Connection, h2=H2Stream, grpc=GrpcCall, dns=DnsQuery, quic=QuicInitial)
register_nested(DnsQuery, attempts=DnsAttempt)
register_nested(Flow, hops=Hop)

RECORD_TYPES: dict[str, type[Record]] = {
    cls.kind: cls for cls in (AccessRecord, Span, Exchange, Flow, Alert)
}

__all__ = [
    "AccessRecord", "Alert", "Connection", "Exchange", "Flow", "Hop", "HOP_KINDS", "Record",
    "RECORD_TYPES", "Span", "normalize_request_id", "record_id",
    "GrpcCall", "H2Stream",  # what an HTTP/2 stream and a gRPC call add to an Exchange
    "DnsAttempt", "DnsQuery", "QuicInitial",  # what DNS lookups and QUIC Initials add
    "ProxyNode", "parse_node_id",  # Istio node ids
    # the Zipkin v2 JSON codec
    "BadSpans", "normalize_trace_id", "pad_hex_id", "span_from_zipkin", "span_to_zipkin",
    "spans_from_zipkin_json", "spans_to_zipkin_json",
]
