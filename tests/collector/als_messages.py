"""Build StreamAccessLogsMessages the way Envoy fills them (for tests that need exact corner cases)."""

from __future__ import annotations

from envoy.service.accesslog.v3 import als_pb2

ALS_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


def _addr(address, host: str, port: int) -> None:
    address.socket_address.address = host
    address.socket_address.port_value = port


def identify(message, node_id: str = "node-a", cluster: str = "gw", log_name: str = "meshscope") -> None:
    message.identifier.node.id = node_id
    message.identifier.node.cluster = cluster
    message.identifier.log_name = log_name


def http_message(n: int, *, first: bool = True, node_id: str = "node-a",
                 start: int = 0) -> als_pb2.StreamAccessLogsMessage:
    """n HTTP entries with request ids ``req-<start+i>``; the identifier only when ``first``."""
    m = als_pb2.StreamAccessLogsMessage()
    if first:
        identify(m, node_id)
    for i in range(start, start + n):
        e = m.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.seconds = 1_700_000_000 + i
        c.start_time.nanos = 250_000_000
        _addr(c.downstream_remote_address, "172.18.0.1", 40000 + i % 20000)
        _addr(c.downstream_local_address, "10.10.0.6", 8080)
        _addr(c.upstream_remote_address, "10.10.0.9", 8080)
        _addr(c.upstream_local_address, "10.10.0.6", 46612)
        c.time_to_last_upstream_rx_byte.nanos = 3_000_000
        c.time_to_last_downstream_tx_byte.nanos = 4_500_000
        c.upstream_cluster = "webapp"
        c.route_name = "default"
        c.upstream_request_attempt_count = 1
        c.response_flags.SetInParent()
        e.protocol_version = e.HTTP11
        r = e.request
        r.request_method = 1  # GET
        r.scheme = "http"
        r.authority = "shop.example.com"
        r.path = f"/items/{i}"
        r.user_agent = "curl/8.5.0"
        r.forwarded_for = "172.18.0.1"
        r.request_id = f"req-{i}"
        r.request_body_bytes = 0
        r.request_headers["x-b3-traceid"] = f"{i:032x}"
        r.request_headers["x-b3-spanid"] = f"{i:016x}"
        r.request_headers["x-b3-sampled"] = "1"
        e.response.response_code.value = 200
        e.response.response_code_details = "via_upstream"
        e.response.response_body_bytes = 512
    return m
