"""Envoy gRPC access-log entries (HTTP and TCP) → AccessRecords, reading protobuf fields directly.

``json_format.MessageToJson`` manages ~13 k entries/s; reading the few dozen fields we keep straight
off the upb message is several times faster, which is what the collector's hot path needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from meshscope.model import AccessRecord

# Envoy's short response-flag strings (StreamInfo::ResponseFlagUtils), keyed by ResponseFlags field.
RESPONSE_FLAGS: dict[str, str] = {
    "failed_local_healthcheck": "LH",
    "no_healthy_upstream": "UH",
    "upstream_request_timeout": "UT",
    "local_reset": "LR",
    "upstream_remote_reset": "UR",
    "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC",
    "upstream_overflow": "UO",
    "no_route_found": "NR",
    "delay_injected": "DI",
    "fault_injected": "FI",
    "rate_limited": "RL",
    "rate_limit_service_error": "RLSE",
    "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX",
    "stream_idle_timeout": "SI",
    "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE",
    "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF",
    "no_filter_config_found": "NFCF",
    "duration_timeout": "DT",
    "upstream_protocol_error": "UPE",
    "no_cluster_found": "NC",
    "overload_manager": "OM",
    "dns_resolution_failure": "DF",
    "downstream_remote_reset": "DR",
}
_FLAG_OF = {**RESPONSE_FLAGS, "unauthorized_details": "UAEX"}

_METHODS = {v: k for k, v in base_pb2.RequestMethod.items()}
_METHODS[0] = None
_HTTP_VERSIONS = {0: None, 1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 4: "HTTP/3"}
_TLS_VERSIONS = {0: None, 1: "TLSv1", 2: "TLSv1.1", 3: "TLSv1.2", 4: "TLSv1.3"}
_LOG_TYPES = {v: k for k, v in accesslog_pb2.AccessLogType.items()}
_LOG_TYPES[0] = None

HTTPAccessLogEntry = accesslog_pb2.HTTPAccessLogEntry
TCPAccessLogEntry = accesslog_pb2.TCPAccessLogEntry


@dataclass(slots=True, frozen=True)
class LogSource:
    """Which proxy wrote a stream: taken from the stream's first message, applied to every entry."""

    node_id: str
    node_cluster: str
    log_name: str


def response_flags(flags) -> list[str]:
    """The ResponseFlags booleans as Envoy's short strings, in Envoy's order."""
    # ListFields() yields only the flags that are set (proto3 drops false bools), in field order
    return [_FLAG_OF[f.name] for f, _ in flags.ListFields() if f.name in _FLAG_OF]


def _address(addr) -> str | None:
    """An envoy Address as "ip:port" (pipe path for unix sockets); None when unset."""
    sock = addr.socket_address
    host = sock.address
    if host:
        return f"{host}:{sock.port_value}" if ":" not in host else f"[{host}]:{sock.port_value}"
    return addr.pipe.path or None


def _ms(duration) -> float:
    return duration.seconds * 1000.0 + duration.nanos / 1e6


def _common_fields(common) -> dict:
    """The AccessLogCommon fields every entry has, as AccessRecord keyword arguments."""
    start = common.start_time
    has = common.HasField
    if has("duration"):
        duration_ms = _ms(common.duration)
    elif has("time_to_last_downstream_tx_byte"):
        duration_ms = _ms(common.time_to_last_downstream_tx_byte)
    else:
        duration_ms = None
    fields = {
        "start_time": start.seconds + start.nanos / 1e9,
        "duration_ms": duration_ms,
        "upstream_duration_ms": _ms(common.time_to_last_upstream_rx_byte)
        if has("time_to_last_upstream_rx_byte") else None,
        "route_name": common.route_name or None,
        "upstream_cluster": common.upstream_cluster or None,
        "upstream_failure_reason": common.upstream_transport_failure_reason or None,
        "response_flags": response_flags(common.response_flags) if has("response_flags") else [],
        "attempt_count": common.upstream_request_attempt_count or None,
        "downstream_remote": _address(common.downstream_remote_address)
        if has("downstream_remote_address") else None,
        "downstream_local": _address(common.downstream_local_address)
        if has("downstream_local_address") else None,
        "upstream_host": _address(common.upstream_remote_address)
        if has("upstream_remote_address") else None,
        "upstream_local": _address(common.upstream_local_address)
        if has("upstream_local_address") else None,
        "stream_id": common.stream_id or None,
        "connection_termination_details": common.connection_termination_details or None,
        "access_log_type": _LOG_TYPES.get(common.access_log_type),
    }
    if has("tls_properties"):
        tls = common.tls_properties
        fields["sni"] = tls.tls_sni_hostname or None
        fields["tls_version"] = _TLS_VERSIONS.get(tls.tls_version)
        fields["ja3"] = tls.ja3_fingerprint or None
        if tls.HasField("tls_cipher_suite"):
            fields["tls_cipher"] = tls.tls_cipher_suite.value
    return fields


def http_record(entry, source: LogSource) -> AccessRecord:
    """One HTTPAccessLogEntry as an AccessRecord."""
    fields = _common_fields(entry.common_properties)
    req = entry.request
    resp = entry.response
    headers = req.request_headers
    get = headers.get
    attempt_count = fields.pop("attempt_count")
    if attempt_count is None and "x-envoy-attempt-count" in headers:
        attempt_count = _int_or_none(headers["x-envoy-attempt-count"])
    return AccessRecord(
        node_id=source.node_id, node_cluster=source.node_cluster, log_name=source.log_name,
        protocol="HTTP",
        protocol_version=_HTTP_VERSIONS.get(entry.protocol_version),
        request_id=req.request_id or get("x-request-id"),
        trace_id=get("x-b3-traceid"),
        span_id=get("x-b3-spanid"),
        parent_span_id=get("x-b3-parentspanid"),
        sampled=get("x-b3-sampled"),
        method=_METHODS.get(req.request_method),
        scheme=req.scheme or None,
        authority=req.authority or None,
        path=req.path or None,
        user_agent=req.user_agent or None,
        x_forwarded_for=req.forwarded_for or None,
        response_code=resp.response_code.value if resp.HasField("response_code") else None,
        response_code_details=resp.response_code_details or None,
        request_bytes=req.request_body_bytes,
        response_bytes=resp.response_body_bytes,
        attempt_count=attempt_count,
        **fields,
    )


def tcp_record(entry, source: LogSource) -> AccessRecord:
    """One TCPAccessLogEntry as an AccessRecord (protocol "TCP")."""
    fields = _common_fields(entry.common_properties)
    conn = entry.connection_properties
    return AccessRecord(
        node_id=source.node_id, node_cluster=source.node_cluster, log_name=source.log_name,
        protocol="TCP", request_bytes=conn.received_bytes, response_bytes=conn.sent_bytes, **fields,
    )


def message_records(message, source: LogSource) -> list[AccessRecord]:
    """Every entry of one StreamAccessLogsMessage (it holds either HTTP or TCP entries)."""
    which = message.WhichOneof("log_entries")
    if which == "http_logs":
        return [http_record(e, source) for e in message.http_logs.log_entry]
    if which == "tcp_logs":
        return [tcp_record(e, source) for e in message.tcp_logs.log_entry]
    return []


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
