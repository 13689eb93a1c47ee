"""OTLP intake: the OpenTelemetry Python SDK's exporters (gRPC and HTTP) as real clients, OTLP/JSON and
gzip, and bad input — malformed protobuf and JSON, unknown attribute types, unreadable log records."""

from __future__ import annotations

import asyncio
import gzip
import time

import grpc
import httpx
import orjson
import pytest
from google.rpc import status_pb2
from meshscope.collector.otlp_receiver import LOGS_SERVICE, TRACE_SERVICE
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from tests.collector.test_access_log_lines import ISTIO_LINE, JSON_LINE, RID

TRACE_ID = 0x463AC35C9F6413AD48485A3953BB6124
JSON_CT = {"content-type": "application/json"}
PROTOBUF_CT = {"content-type": "application/x-protobuf"}


def sdk_tracer(exporter):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def sdk_spans(exporter, rid: str) -> None:
    """One SERVER span with HTTP semantic-convention attributes and a child CLIENT span, exported."""
    from opentelemetry.trace import SpanKind, StatusCode

    provider = sdk_tracer(exporter)
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={
        "http.request.method": "GET", "url.path": "/cart", "http.response.status_code": 503,
        "http.request.header.x-request-id": [rid], "sampled.ratio": 0.5, "retry": True,
    }) as span:
        span.add_event("retry")
        span.set_status(StatusCode.ERROR, "upstream reset")
        with tracer.start_as_current_span("inventory", kind=SpanKind.CLIENT,
                                          attributes={"guid:x-request-id": rid}):
            pass
    provider.shutdown()


def sdk_logs(exporter, bodies: list[str]) -> None:
    """Log records with the given bodies and Envoy-style resource attributes, exported."""
    from opentelemetry._logs import LogRecord as ApiLogRecord
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({
        "node_name": "sidecar~10.244.0.12~productpage-v1-abc.bookinfo~bookinfo.svc.cluster.local",
        "cluster_name": "productpage.bookinfo", "log_name": "otel_envoy_accesslog"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("envoy")
    for body in bodies:
        attributes = {"x-envoy-attempt-count": "2", "upstream_cluster": "outbound|9080||x"}
        logger.emit(ApiLogRecord(timestamp=time.time_ns(), body=body, attributes=attributes))
    provider.shutdown()


def _check_sdk_records(spans, logs, rid: str) -> None:
    server = next(s for s in spans if s.span_kind == "SERVER")
    client = next(s for s in spans if s.span_kind == "CLIENT")
    assert server.request_id == client.request_id == rid
    assert server.tags["http.method"] == "GET" and server.tags["http.status_code"] == "503"
    assert server.tags["error"] == "upstream reset" and server.tags["retry"] == "true"
    assert server.annotations[0]["value"] == "retry"
    assert client.parent_id == server.span_id and server.service_name == "checkout"
    assert server.duration is not None and server.timestamp > 1_600_000_000_000_000
    (text, js) = sorted(logs, key=lambda r: r.path, reverse=True)  # /productpage, /j
    assert text.request_id == RID and text.response_code == 503 and text.response_flags == ["UF", "URX"]
    assert text.attempt_count == 2 and text.upstream_cluster == "outbound|9080||x"  # attributes win
    assert text.node_id.startswith("sidecar~10.244.0.12~productpage-v1-abc")
    assert (text.node_cluster, text.log_name) == ("productpage.bookinfo", "otel_envoy_accesslog")
    assert js.path == "/j" and js.response_code == 404


async def test_sdk_grpc_exporters(running, access_reader, span_reader):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    collector, _ = running
    endpoint = f"http://127.0.0.1:{collector.otlp_grpc.port}"
    rid = "0b6e2f2a-1c4d-4e5f-8a9b-000000000001"
    await asyncio.to_thread(sdk_spans, OTLPSpanExporter(endpoint=endpoint, insecure=True), rid)
    await asyncio.to_thread(sdk_logs, OTLPLogExporter(endpoint=endpoint, insecure=True),
                            [ISTIO_LINE.strip(), JSON_LINE.strip()])
    spans = await span_reader.wait_for(2)
    logs = await access_reader.wait_for(2)
    _check_sdk_records(spans, logs, rid)
    assert collector.metrics.published.labels("otlp_logs")._value.get() == 2
    assert collector.otlp.arrived[logs[0].node_id] == 2


async def test_sdk_http_exporters_protobuf_and_gzip(running, access_reader, span_reader):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    collector, _ = running
    base = f"http://127.0.0.1:{collector.otlp_http.port}"
    rid = "0b6e2f2a-1c4d-4e5f-8a9b-000000000002"
    await asyncio.to_thread(sdk_spans, OTLPSpanExporter(endpoint=f"{base}/v1/traces",
                                                        compression=Compression.Gzip), rid)
    await asyncio.to_thread(sdk_logs, OTLPLogExporter(endpoint=f"{base}/v1/logs"),
                            [ISTIO_LINE.strip(), JSON_LINE.strip()])
    _check_sdk_records(await span_reader.wait_for(2), await access_reader.wait_for(2), rid)


T0 = int(time.time()) - 3600  # within the collector's intake window (30 days behind at most)


def otlp_json_logs(body: object, attributes: list | None = None,
                   time_ns: int = T0 * 10**9 + 123000000) -> dict:
    return {"resourceLogs": [{
        "resource": {"attributes": [{"key": "node_name", "value": {"stringValue": "gw-1"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": str(time_ns), "body": body, "attributes": attributes or [],
            "traceId": "463ac35c9f6413ad48485a3953bb6124", "spanId": "48485a3953bb6124",
        }]}],
    }]}


async def test_otlp_json_logs_and_traces_gzip(running, access_reader, span_reader):
    collector, _ = running
    base = f"http://127.0.0.1:{collector.otlp_http.port}"
    doc = otlp_json_logs({"stringValue": "not an access-log line"}, [
        {"key": "http.request.method", "value": {"stringValue": "POST"}},
        {"key": "url.path", "value": {"stringValue": "/pay"}},
        {"key": "http.response.status_code", "value": {"intValue": "201"}},
        {"key": "x-request-id", "value": {"stringValue": "json-rid"}},
        {"key": "response_flags", "value": {"arrayValue": {"values": [{"stringValue": "DC"}]}}},
        {"key": "peer", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}}},
        {"key": "raw", "value": {"bytesValue": "AAEC"}},
    ])
    traces = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": f"{TRACE_ID:032x}", "spanId": "00f067aa0ba902b7", "name": "ingress", "kind": 2,
            "startTimeUnixNano": str(T0 * 10**9), "endTimeUnixNano": str(T0 * 10**9 + 250000000),
            "attributes": [{"key": "guid:x-request-id", "value": {"stringValue": "json-rid"}},
                           {"key": "http.status_code", "value": {"stringValue": "201"}}],
        }]}],
    }]}
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.post("/v1/logs", content=gzip.compress(orjson.dumps(doc)),
                         headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 200 and r.json() == {}
        r = await c.post("/v1/traces", content=orjson.dumps(traces), headers=JSON_CT)
        assert r.status_code == 200
    (rec,) = await access_reader.wait_for(1)
    assert (rec.method, rec.path, rec.response_code, rec.request_id) == ("POST", "/pay", 201, "json-rid")
    assert rec.response_flags == ["DC"] and rec.node_id == "gw-1"
    assert rec.start_time == pytest.approx(T0 + 0.123)
    assert rec.trace_id == "463ac35c9f6413ad48485a3953bb6124"
    (span,) = await span_reader.wait_for(1)
    assert span.trace_id == f"{TRACE_ID:032x}" and span.span_kind == "SERVER" and span.duration == 250_000
    assert span.request_id == "json-rid" and span.service_name == "gw"


async def test_bad_otlp_input_gets_clear_errors(running, access_reader):
    collector, _ = running
    base = f"http://127.0.0.1:{collector.otlp_http.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.post("/v1/logs", content=b"\x0a\xff\xff\xff\x0f\x01",
                         headers=PROTOBUF_CT)
        assert r.status_code == 400
        status = status_pb2.Status.FromString(r.content)
        assert status.code == 3 and "malformed ExportLogsServiceRequest" in status.message
        r = await c.post("/v1/traces", content=b"{not json", headers=JSON_CT)
        assert r.status_code == 400 and "malformed OTLP/JSON" in r.json()["message"]
        r = await c.post("/v1/traces", content=b'{"resourceSpans": 5}', headers=JSON_CT)
        assert r.status_code == 400 and "ExportTraceServiceRequest" in r.json()["message"]
        bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]}
        r = await c.post("/v1/traces", content=orjson.dumps(bad_id), headers=JSON_CT)
        assert r.status_code == 400 and "not hex" in r.json()["message"]
        short_id = {"traceId": "0102", "spanId": "0102030405060708"}
        short = {"resourceSpans": [{"scopeSpans": [{"spans": [short_id]}]}]}
        r = await c.post("/v1/traces", content=orjson.dumps(short), headers=JSON_CT)
        assert r.status_code == 400 and "16 bytes" in r.json()["message"]
        r = await c.post("/v1/logs", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = await c.post("/v1/logs", content=b"\x1f\x8b\x08garbage",
                         headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["message"]
        # one unreadable record (no time, a body that is no access-log line): partial success, rest kept
        doc = otlp_json_logs({"stringValue": "garbage"}, time_ns=0)
        good = otlp_json_logs({"stringValue": ISTIO_LINE.strip()})["resourceLogs"][0]["scopeLogs"][0]
        doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"] += good["logRecords"]
        r = await c.post("/v1/logs", content=orjson.dumps(doc), headers=JSON_CT)
        assert r.status_code == 200
        assert r.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    (rec,) = await access_reader.wait_for(1)
    assert rec.request_id == RID
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.otlp_grpc.port}") as channel:
        for service, raw in ((LOGS_SERVICE, b"\x0a\x05\x0a\x03\x0a"), (TRACE_SERVICE, b"\xff\xff")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(f"/{service}/Export")(raw, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed" in info.value.details()
        # a request with a kvlist body is read as Istio's JSON keys
        request = logs_service_pb2.ExportLogsServiceRequest()
        log = request.resource_logs.add().scope_logs.add().log_records.add()
        log.time_unix_nano = T0 * 10**9
        for key, value in (("method", "GET"), ("path", "/kv"), ("request_id", "kv-rid")):
            log.body.kvlist_value.values.add(key=key, value=common_pb2.AnyValue(string_value=value))
        raw = await channel.unary_unary(f"/{LOGS_SERVICE}/Export")(request.SerializeToString(), timeout=10)
        response = logs_service_pb2.ExportLogsServiceResponse.FromString(raw)
        assert response.partial_success.rejected_log_records == 0
    records = await access_reader.wait_for(2)
    assert records[-1].path == "/kv" and records[-1].request_id == "kv-rid"
    rejected = collector.metrics.rejected
    assert rejected.labels("otlp_logs", "malformed")._value.get() >= 2
    assert rejected.labels("otlp_logs", "unreadable")._value.get() == 1


def _log_request(body: str, attributes: dict[str, str], nanos: int = 1_714_564_800_000_000_000):
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="node_name", value=common_pb2.AnyValue(string_value="sidecar~1~a.b~b"))
    log = rl.scope_logs.add().log_records.add()
    log.time_unix_nano = nanos
    log.body.string_value = body
    for key, value in attributes.items():
        log.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
    return request, log


@pytest.mark.parametrize("attributes", [
    {},
    {"x-envoy-attempt-count": "3", "x-b3-traceid": "463ac35c9f6413ad"},
    {"x-request-id": "other-id", "http.request.method": "POST"},  # attributes that change the id
    {"START_TIME": "2024-05-01T12:30:00.000Z", "DOWNSTREAM_REMOTE_ADDRESS": "10.9.9.9:1"},
])
def test_line_bodies_take_the_fast_path_and_agree_with_the_field_path(attributes):
    """A body that is a whole line is built straight from the line and the attributes set on the record;
    it must equal what merging fields first gives, id included (so re-sends dedupe as before)."""
    from meshscope.collector.access_log_lines import Origin
    from meshscope.collector.otlp_records import LogConverter

    converter = LogConverter()
    for line in (ISTIO_LINE, ISTIO_LINE.replace('"GET /productpage HTTP/1.1"', '"- - -"')):
        request, log = _log_request(line.rstrip(), attributes)
        (fast,) = converter.records(request)
        slow = converter._record_from_fields(log, Origin("sidecar~1~a.b~b"), "")
        assert fast == slow and fast.id == fast.compute_id()
    assert converter.skipped == 0


async def test_otlp_http_closes_slow_clients(data_dir):
    """The OTLP/HTTP receiver gets the API's read timeouts (``guarded_http``): half a request head, or a
    body that stops arriving, loses its connection instead of holding it forever."""
    from meshscope.collector.server import Collector
    from meshscope.pipelines.bus.memory import MemoryBus

    from meshscope.serving import guarded_http
    from meshscope.settings import Settings
    from tests.conftest import free_port

    settings = Settings(data_dir=data_dir, als_port=free_port(), zipkin_port=free_port(), otlp_grpc_port=0,
                        otlp_http_port=0, http_head_timeout_s=1, http_body_timeout_s=1)
    async with Collector(settings, MemoryBus(), **guarded_http(settings)) as collector:
        port = collector.otlp_http.port
        for sent in (b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n",  # half a head
                     b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 1000\r\n\r\n0123456789"):  # a body that stalls
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            await writer.drain()
            started = time.monotonic()
            got = await asyncio.wait_for(reader.read(), 10)  # EOF once the server closes
            assert 0.8 < time.monotonic() - started < 4 and b"200" not in got
            writer.close()
        # a prompt client is served as before
        body = logs_service_pb2.ExportLogsServiceRequest().SerializeToString()
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{port}/v1/logs", content=body, headers=PROTOBUF_CT)
        assert answer.status_code == 200


def _envoy_resource_logs(request, node_name: str) -> object:
    """A resource as Envoy's OpenTelemetry access logger fills it (node_name empty without a node id)."""
    rl = request.resource_logs.add()
    for key, value in (("log_name", "otel_envoy_accesslog"), ("zone_name", ""), ("cluster_name", ""),
                       ("node_name", node_name)):
        rl.resource.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
    return rl.scope_logs.add().log_records.add()


async def test_a_proxy_without_node_id_is_named_by_log_name_and_peer_address(running, access_reader):
    """As on the access-log service: ``anonymous~PEER_IP~LOG_NAME`` over OTLP/gRPC and OTLP/HTTP, so
    /api/proxies and the trace view show such a proxy by its log name and address."""
    from meshscope.model import parse_node_id

    collector, _ = running
    request = logs_service_pb2.ExportLogsServiceRequest()
    log = _envoy_resource_logs(request, node_name="")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(T0))  # inside the intake window
    log.body.string_value = ISTIO_LINE.strip().replace("2024-05-01T12:00:00.123Z", stamp)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.otlp_grpc.port}") as channel:
        await channel.unary_unary(f"/{LOGS_SERVICE}/Export")(request.SerializeToString(), timeout=10)
    log.body.string_value = log.body.string_value.replace(RID, "rid-over-http")
    async with httpx.AsyncClient() as client:
        r = await client.post(f"http://127.0.0.1:{collector.otlp_http.port}/v1/logs",
                              content=request.SerializeToString(), headers=PROTOBUF_CT)
        assert r.status_code == 200
    records = await access_reader.wait_for(2)
    anonymous = "anonymous~127.0.0.1~otel_envoy_accesslog"
    assert [(r.request_id, r.node_id) for r in records] == [(RID, anonymous), ("rid-over-http", anonymous)]
    assert all(r.id == r.compute_id() and not r.notes for r in records)  # the id follows the new name
    assert collector.otlp.arrived[anonymous] == 2
    node = parse_node_id(anonymous)
    assert (node.ip, node.name) == ("127.0.0.1", "otel_envoy_accesslog")


async def test_an_attribute_of_a_type_not_known_yet_is_skipped(running, access_reader):
    """An AnyValue carrying a field this collector's OTLP definitions do not have (a newer OTLP's type)
    is skipped; the record and its other attributes are kept."""
    collector, _ = running
    request = logs_service_pb2.ExportLogsServiceRequest()
    log = _envoy_resource_logs(request, node_name="gw-2")
    log.body.string_value = ISTIO_LINE.strip()
    log.attributes.add(key="future", value=common_pb2.AnyValue.FromString(b"\x98\x06\x01"))  # field 99
    log.attributes.add(key="x-envoy-attempt-count", value=common_pb2.AnyValue(string_value="3"))
    assert log.attributes[0].value.WhichOneof("value") is None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.otlp_grpc.port}") as channel:
        raw = await channel.unary_unary(f"/{LOGS_SERVICE}/Export")(request.SerializeToString(), timeout=10)
    response = logs_service_pb2.ExportLogsServiceResponse.FromString(raw)
    assert response.partial_success.rejected_log_records == 0
    (record,) = await access_reader.wait_for(1)
    assert (record.node_id, record.request_id, record.attempt_count) == ("gw-2", RID, 3)
