"""Envoy access-log entries → AccessRecords: every field, flags as Envoy's short strings."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from meshscope.collector.access_entries import RESPONSE_FLAGS, LogSource, message_records, response_flags

from tests.collector.als_messages import http_message

SOURCE = LogSource("node-a", "gw", "meshscope")


def test_http_entry_fields():
    m = http_message(1, start=7)
    e = m.http_logs.log_entry[0]
    c = e.common_properties
    c.response_flags.upstream_retry_limit_exceeded = True
    c.response_flags.upstream_request_timeout = True
    c.upstream_request_attempt_count = 4
    c.upstream_transport_failure_reason = "delayed connect error: 111"
    c.tls_properties.tls_sni_hostname = "shop.example.com"
    c.tls_properties.tls_version = accesslog_pb2.TLSProperties.TLSv1_3
    c.tls_properties.ja3_fingerprint = "771,4865-4866,0-11,29,0"
    c.tls_properties.tls_cipher_suite.value = 0x1301
    e.request.request_headers["x-b3-parentspanid"] = "00000000000000aa"
    e.response.response_code.value = 504

    (rec,) = message_records(m, SOURCE)
    assert (rec.node_id, rec.node_cluster, rec.log_name) == ("node-a", "gw", "meshscope")
    assert rec.protocol == "HTTP"
    assert rec.request_id == "req-7"
    assert rec.trace_id == f"{7:032x}" and rec.span_id == f"{7:016x}"
    assert rec.parent_span_id == "00000000000000aa" and rec.sampled == "1"
    assert (rec.method, rec.scheme, rec.path) == ("GET", "http", "/items/7")
    assert rec.authority == "shop.example.com"
    assert rec.route_name == "default" and rec.user_agent == "curl/8.5.0"
    assert rec.x_forwarded_for == "172.18.0.1" and rec.protocol_version == "HTTP/1.1"
    assert rec.response_code == 504 and rec.response_code_details == "via_upstream"
    assert rec.response_flags == ["UT", "URX"] and rec.attempt_count == 4 and rec.retried
    assert rec.upstream_cluster == "webapp" and rec.upstream_host == "10.10.0.9:8080"
    assert rec.upstream_failure_reason == "delayed connect error: 111"
    assert rec.downstream_remote == f"172.18.0.1:{40007}" and rec.downstream_local == "10.10.0.6:8080"
    assert rec.upstream_local == "10.10.0.6:46612"
    assert (rec.sni, rec.tls_version, rec.tls_cipher) == ("shop.example.com", "TLSv1.3", 0x1301)
    assert rec.ja3 == "771,4865-4866,0-11,29,0"
    assert rec.start_time == 1_700_000_007.25
    assert rec.duration_ms == 4.5 and rec.upstream_duration_ms == 3.0
    assert (rec.request_bytes, rec.response_bytes) == (0, 512)


def test_every_response_flag_has_a_short_name():
    flags = accesslog_pb2.ResponseFlags()
    bools = [f.name for f in flags.DESCRIPTOR.fields if f.type == f.TYPE_BOOL]
    assert set(bools) == set(RESPONSE_FLAGS), "a new Envoy flag needs its short string"
    for name in bools:
        setattr(flags, name, True)
    flags.unauthorized_details.reason = flags.unauthorized_details.EXTERNAL_SERVICE
    out = response_flags(flags)
    assert len(out) == len(bools) + 1 and "UAEX" in out and len(set(out)) == len(out)
    assert response_flags(accesslog_pb2.ResponseFlags(no_route_found=True)) == ["NR"]


def test_tcp_entry_and_ipv6_address():
    from envoy.service.accesslog.v3 import als_pb2

    m = als_pb2.StreamAccessLogsMessage()
    e = m.tcp_logs.log_entry.add()
    c = e.common_properties
    c.start_time.seconds = 1_700_000_000
    c.downstream_remote_address.socket_address.address = "::1"
    c.downstream_remote_address.socket_address.port_value = 5555
    c.tls_properties.tls_sni_hostname = "catalog.example.com"
    c.upstream_cluster = "catalog-tls"
    e.connection_properties.received_bytes = 517
    e.connection_properties.sent_bytes = 4096
    (rec,) = message_records(m, SOURCE)
    assert rec.protocol == "TCP" and rec.sni == "catalog.example.com"
    assert rec.downstream_remote == "[::1]:5555" and rec.upstream_cluster == "catalog-tls"
    assert (rec.request_bytes, rec.response_bytes) == (517, 4096)
    assert rec.method is None and rec.response_flags == []


def test_records_of_one_entry_have_the_same_id_twice():
    a = message_records(http_message(3), SOURCE)
    b = message_records(http_message(3), SOURCE)
    assert [r.id for r in a] == [r.id for r in b] and len({r.id for r in a}) == 3


def test_periodic_entries_get_ids_of_their_own():
    from envoy.data.accesslog.v3 import accesslog_pb2 as a

    final = http_message(1)
    periodic = http_message(1)
    c = periodic.http_logs.log_entry[0].common_properties
    c.intermediate_log_entry = True
    c.access_log_type = a.DownstreamPeriodic
    c.duration.nanos = 1_000_000
    final.http_logs.log_entry[0].common_properties.access_log_type = a.DownstreamEnd
    (f,) = message_records(final, SOURCE)
    (p,) = message_records(periodic, SOURCE)
    assert (f.access_log_type, p.access_log_type) == ("DownstreamEnd", "DownstreamPeriodic")
    assert f.id != p.id
    # the final entry keeps the id it had before Envoy started saying its type
    untyped = message_records(http_message(1), SOURCE)[0]
    assert untyped.access_log_type is None and untyped.id == f.id
