"""The Istio guide, run: the access-log and tracing stanzas Istio generates for the providers in
deploy/istio/meshconfig.yaml, in a real Envoy 1.40 that sends to a running collector.

The stanzas follow Istio's own expected output, with the values of our meshconfig.yaml:
- istio/istio ``pilot/pkg/model/telemetry_logging_test.go`` (``grpcHTTPout``, ``grpcTCPOut``,
  ``otelAtrributeCfg``, ``stdout``): ``HttpGrpcAccessLogConfig``/``TcpGrpcAccessLogConfig`` with
  ``common_config`` (log name, ``envoy_grpc`` to the cluster ``outbound|PORT||SERVICE`` with the service
  as authority, ``transport_api_version: V3``) and the additional headers; ``OpenTelemetryAccessLogConfig``
  with Istio's text format as the body, the labels as attributes and the peer filter-state objects;
  ``FileAccessLog`` with Istio's text format (``/dev/stdout`` in a pod; a file here).
- istio/istio ``pilot/pkg/networking/core/tracing_test.go`` (``fakeZipkinProvider``,
  ``fakeOpenTelemetryGrpcProvider``): ``ZipkinConfig`` (``/api/v2/spans``, ``HTTP_JSON``, 128-bit trace
  ids, no shared span context) and ``OpenTelemetryConfig`` with an ``envoy_grpc`` service.
Names: ``envoy.access_loggers.http_grpc``, ``envoy.tcp_grpc_access_log``,
``envoy.access_loggers.open_telemetry`` (``telemetry_logging.go`` constants), ``envoy.tracers.*``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from meshscope.collector.access_log_lines import ISTIO_TEXT_FORMAT, ImportReport, LineParser, parse_lines
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.launcher import EnvoyProcess, validate

from meshscope.model import normalize_request_id
from tests.collector.envoy_lab import need_envoy
from tests.conftest import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

MESHCONFIG = Path(__file__).resolve().parents[2] / "deploy" / "istio" / "meshconfig.yaml"
NODE_ID = "sidecar~127.0.0.1~productpage-v1-6b7f6f8d5c-x2k9p.bookinfo~bookinfo.svc.cluster.local"
WASM_STATE = ["upstream_peer", "downstream_peer"]  # envoyWasmStateToLog (telemetry_logging.go)
N = 6
T = "type.googleapis.com/"


def providers() -> dict[str, dict]:
    doc = yaml.safe_load(MESHCONFIG.read_text())
    return {p["name"]: p for p in doc["spec"]["meshConfig"]["extensionProviders"]}


def cluster_of(p: dict) -> tuple[str, str]:
    """Istio's cluster name and authority for a provider's service and port."""
    return f"outbound|{p['port']}||{p['service']}", p["service"]


def grpc_service(p: dict) -> dict:
    name, authority = cluster_of(p)
    return {"envoy_grpc": {"cluster_name": name, "authority": authority}}


def access_logs(ps: dict[str, dict], file_path: Path) -> list[dict]:
    http, otel = ps["meshscope-http-als"]["envoyHttpAls"], ps["meshscope-otel-als"]["envoyOtelAls"]
    labels = otel.get("logFormat", {}).get("labels", {})
    return [
        {"name": "envoy.access_loggers.http_grpc", "typed_config": {
            "@type": T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {"log_name": http["logName"], "grpc_service": grpc_service(http),
                              "transport_api_version": "V3"},
            "additional_request_headers_to_log": http["additionalRequestHeadersToLog"]}},
        {"name": "envoy.access_loggers.open_telemetry", "typed_config": {
            "@type": T + "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
            "common_config": {"log_name": otel.get("logName", "otel_envoy_accesslog"),
                              "grpc_service": grpc_service(otel), "transport_api_version": "V3",
                              "filter_state_objects_to_log": WASM_STATE},
            "body": {"string_value": ISTIO_TEXT_FORMAT},
            "attributes": {"values": [{"key": k, "value": {"string_value": v}} for k, v in labels.items()]}}},
        {"name": "envoy.access_loggers.file", "typed_config": {
            "@type": T + "envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": str(file_path),
            "log_format": {"text_format_source": {"inline_string": ISTIO_TEXT_FORMAT}}}},
    ]


def tracing(ps: dict[str, dict], which: str) -> dict:
    if which == "zipkin":
        p = ps["meshscope-zipkin"]["zipkin"]
        name, authority = cluster_of(p)
        provider = {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": T + "envoy.config.trace.v3.ZipkinConfig", "collector_cluster": name,
            "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON",
            "collector_hostname": authority, "trace_id_128bit": True, "shared_span_context": False}}
    else:
        p = ps["meshscope-otel-tracing"]["opentelemetry"]
        provider = {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": T + "envoy.config.trace.v3.OpenTelemetryConfig", "grpc_service": grpc_service(p),
            "service_name": "productpage.bookinfo"}}
    return {"provider": provider, "random_sampling": {"value": 100}, "client_sampling": {"value": 100},
            "overall_sampling": {"value": 100}}


def hcm_listener(name: str, port: int, ps: dict, trace: str, file_path: Path) -> dict:
    hcm = {
        "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name, "preserve_external_request_id": True, "generate_request_id": True,
        "tracing": tracing(ps, trace), "access_log": access_logs(ps, file_path),
        "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
            {"match": {"prefix": "/status"}, "route": {"cluster": "app"}}]}]},  # anything else: 404 NR
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def tcp_listener(port: int, ps: dict) -> dict:
    tcp = ps["meshscope-tcp-als"]["envoyTcpAls"]
    proxy = {"@type": T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "tcp",
             "cluster": "app", "access_log": [{"name": "envoy.tcp_grpc_access_log", "typed_config": {
                 "@type": T + "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig",
                 "common_config": {"log_name": tcp["logName"], "grpc_service": grpc_service(tcp),
                                   "transport_api_version": "V3"}}}]}
    return {"name": "tcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                            "typed_config": proxy}]}]}


def static_cluster(name: str, port: int, http2: bool) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    if http2:
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {options: {
            "@type": T + options, "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def bootstrap(ps: dict, collector, app_port: int, ports: dict, file_path: Path) -> dict:
    to_collector = {18000: collector.als_port, 9411: collector.zipkin_port, 4317: collector.otlp_grpc.port}
    clusters = [static_cluster("app", app_port, http2=False)]
    for key in ("meshscope-http-als", "meshscope-otel-als", "meshscope-zipkin"):
        (p,) = [v for k, v in ps[key].items() if k != "name"]
        clusters.append(static_cluster(cluster_of(p)[0], to_collector[p["port"]], http2=p["port"] != 9411))
    return {
        "node": {"id": NODE_ID, "cluster": "productpage.bookinfo"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [
            hcm_listener("zipkin-traced", ports["zipkin"], ps, "zipkin", file_path),
            hcm_listener("otel-traced", ports["otel"], ps, "otel", file_path),
            tcp_listener(ports["tcp"], ps),
        ], "clusters": clusters},
        "layered_runtime": {"layers": [{"name": "flush", "static_layer": {
            "tracing.zipkin.min_flush_spans": 1, "tracing.zipkin.flush_interval_ms": 200,
            "tracing.opentelemetry.min_flush_spans": 1, "tracing.opentelemetry.flush_interval_ms": 200}}]},
    }


async def test_istio_generated_stanzas_deliver_every_request(running, access_reader, span_reader, tmp_path):
    need_envoy()
    collector, _ = running
    ps = providers()
    ports = {"zipkin": free_port(), "otel": free_port(), "tcp": free_port()}
    file_log = tmp_path / "istio-proxy.log"
    with DemoUpstream(port=free_port()) as app:
        config = bootstrap(ps, collector, app.port, ports, file_log)
        await asyncio.to_thread(validate, config)  # envoy --mode validate
        sent: dict[str, tuple[str, int]] = {}  # request id → (listener, expected code)
        async with EnvoyProcess(config, log_level="error"):
            async with httpx.AsyncClient(timeout=10) as client:
                for i in range(N):
                    for listener in ("zipkin", "otel"):
                        rid = str(uuid.uuid4())
                        path, code = (("/status/200", 200), ("/status/503", 503), ("/nowhere", 404))[i % 3]
                        r = await client.get(f"http://127.0.0.1:{ports[listener]}{path}",
                                             headers={"x-request-id": rid, "x-envoy-attempt-count": "1"})
                        assert r.status_code == code
                        sent[normalize_request_id(rid)] = (listener, code)
                reader, writer = await asyncio.open_connection("127.0.0.1", ports["tcp"])
                writer.write(b"GET /status/204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await reader.read()).startswith(b"HTTP/1.1 204")
                writer.close()

            def complete(records) -> bool:
                names = [r.log_name for r in records]
                return (names.count("meshscope-http-als") >= 2 * N
                        and names.count("otel_envoy_accesslog") >= 2 * N and "meshscope-tcp-als" in names)

            records = await access_reader.wait_until(complete, timeout=30)
            traced = [rid for rid, (_, code) in sent.items() if code != 404]  # NR: Envoy answers, no span
            spans = await span_reader.wait_until(
                lambda spans: {s.request_id_norm for s in spans} >= set(traced), timeout=30)
    by_log: dict[str, dict] = {}
    for r in records:
        by_log.setdefault(r.log_name, {})[r.request_id_norm] = r
    als, otel = by_log["meshscope-http-als"], by_log["otel_envoy_accesslog"]
    assert set(als) == set(otel) == set(sent), "every request once per logger"
    for rid, (_, code) in sent.items():
        for record in (als[rid], otel[rid]):
            assert record.response_code == code
            assert record.response_flags == (["NR"] if code == 404 else [])
            assert record.node_id == NODE_ID and record.node_cluster == "productpage.bookinfo"
        assert otel[rid].attempt_count == 1 and otel[rid].upstream_cluster == als[rid].upstream_cluster
        assert als[rid].attempt_count == 1  # the additional header reached the entry
    zipkin_rids = [rid for rid in traced if sent[rid][0] == "zipkin"]
    assert all(als[rid].trace_id for rid in zipkin_rids)  # B3 ids via additional_request_headers_to_log
    by_rid: dict[str, list] = {}
    for s in spans:
        by_rid.setdefault(s.request_id_norm, []).append(s)
    for rid in traced:
        kinds = {s.span_kind for s in by_rid[rid]}
        assert "SERVER" in kinds or "CLIENT" in kinds
        assert any(s.tags.get("http.status_code") == str(sent[rid][1]) for s in by_rid[rid])
    otel_span = next(s for rid in traced if sent[rid][0] == "otel" for s in by_rid[rid])
    assert otel_span.service_name == "productpage.bookinfo" and len(otel_span.trace_id) == 32
    (tcp,) = by_log["meshscope-tcp-als"].values()
    assert tcp.protocol == "TCP" and tcp.request_bytes > 0
    # the file log the same Envoy wrote in Istio's text format imports to the same requests
    report = ImportReport()
    lines = file_log.read_text().splitlines()
    imported = [r for batch in parse_lines(lines, LineParser(), report) for r in batch]
    assert report.failed == 0 and report.by_format == {"istio": 2 * N}
    from_file = {r.request_id_norm: r for r in imported}
    assert set(from_file) == set(sent)
    for rid, r in from_file.items():
        assert (r.response_code, r.response_flags) == (als[rid].response_code, als[rid].response_flags)
        assert r.upstream_cluster == als[rid].upstream_cluster and r.path == als[rid].path
