"""The client certificate on the collector's HTTP receivers: with mTLS, OTLP/HTTP and Zipkin records name
the sender's certificate as OTLP/gRPC does (``mtls:<name>``). The OpenTelemetry SDK's exporters present
an Istio-style workload certificate (empty subject, SPIFFE URI SAN) from a test CA over real TLS."""

from __future__ import annotations

import asyncio
import ssl

import grpc
import httpx
from cryptography import x509
from meshscope.collector.server import Collector
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.proxy.certs import self_signed_pair

from meshscope.serving import guarded_http
from meshscope.settings import Settings
from meshscope.slow_clients import GuardedH11
from tests.collector.conftest import TopicReader
from tests.collector.test_access_log_lines import ISTIO_LINE, RID
from tests.collector.test_otlp import sdk_logs, sdk_spans
from tests.conftest import free_port
from tests.proxy.spiffe_ca import TestCa

SPIFFE = "spiffe://cluster.local/ns/bookinfo/sa/productpage"
JSON = "application/json"
SPAN = b'[{"traceId": "463ac35c9f6413ad", "id": "463ac35c9f6413ad", "kind": "SERVER"}]'


async def test_http_receivers_name_the_client_certificate_as_grpc_does(data_dir, tmp_path, monkeypatch):
    # requests (the SDK's HTTP exporter) lets these variables override the exporter's own CA file
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = TestCa(tmp_path / "ca")
    server_cert, server_key, _ = ca.issue("collector", "spiffe://cluster.local/ns/meshscope/sa/collector",
                                          dns=["localhost"])
    client_cert, client_key, _ = ca.issue("productpage", SPIFFE)
    settings = Settings(data_dir=data_dir, als_port=free_port(), zipkin_port=free_port(), otlp_grpc_port=0,
                        otlp_http_port=0, collector_tls_cert=server_cert, collector_tls_key=server_key,
                        collector_client_ca=ca.ca_file)
    bus = MemoryBus()
    async with Collector(settings, bus, **guarded_http(settings)) as collector:
        # the certificate hook keeps the read timeouts of the protocol it extends
        assert issubclass(collector.otlp_http.options["http"], GuardedH11)
        access, spans = TopicReader(bus, "access"), TopicReader(bus, "spans")
        try:
            await _send_with_sdk(collector, server_cert, client_cert, client_key, ca.ca_file)
            ctx = ssl.create_default_context(cafile=str(ca.ca_file))
            ctx.load_cert_chain(client_cert, client_key)
            async with httpx.AsyncClient(verify=ctx, timeout=10) as client:  # two requests, one connection
                zipkin = f"https://localhost:{collector.zipkin_port}/api/v2/spans"
                for _ in range(2):
                    answer = await client.post(zipkin, content=SPAN, headers={"content-type": JSON})
                    assert answer.status_code == 202
            records = await access.wait_for(2)
            got = await spans.wait_for(6)
        finally:
            await access.close()
            await spans.close()
    # a log record over OTLP/gRPC and one over OTLP/HTTP: both name the same certificate
    assert {r.request_id: r.node_auth for r in records} == {"rid-grpc": f"mtls:{SPIFFE}",
                                                            "rid-http": f"mtls:{SPIFFE}"}
    # two SDK spans over each OTLP transport, two Zipkin posts on one connection: all named
    assert len(got) == 6 and {s.tags["meshscope.auth"] for s in got} == {f"mtls:{SPIFFE}"}
    assert {s.request_id for s in got} == {"rid-grpc", "rid-http", None}


async def _send_with_sdk(collector, server_cert, client_cert, client_key, ca_file) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    creds = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes(),
                                         private_key=client_key.read_bytes(),
                                         certificate_chain=client_cert.read_bytes())
    grpc_endpoint = f"localhost:{collector.otlp_grpc.port}"
    files = {"certificate_file": str(ca_file), "client_key_file": str(client_key),
             "client_certificate_file": str(client_cert)}
    http = f"https://localhost:{collector.otlp_http.port}"
    line = ISTIO_LINE.strip()
    await asyncio.to_thread(sdk_logs, GrpcLogs(endpoint=grpc_endpoint, credentials=creds),
                            [line.replace(RID, "rid-grpc")])
    await asyncio.to_thread(sdk_logs, HttpLogs(endpoint=f"{http}/v1/logs", **files),
                            [line.replace(RID, "rid-http")])
    await asyncio.to_thread(sdk_spans, GrpcSpans(endpoint=grpc_endpoint, credentials=creds), "rid-grpc")
    await asyncio.to_thread(sdk_spans, HttpSpans(endpoint=f"{http}/v1/traces", **files), "rid-http")


async def test_the_scope_carries_the_asgi_tls_extension(tmp_path):
    """Any app behind ``uvicorn_options`` sees the ASGI TLS extension: the certificate and its subject in
    RFC 4514 form, as ``cryptography`` writes it; a plain-TLS listener (no client CA) adds nothing."""
    from meshscope.collector.access_control import ReceiverAccess
    from meshscope.collector.otlp_receiver import HttpListener
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):
        tls = request.scope.get("extensions", {}).get("tls")
        return JSONResponse(tls and {k: tls[k] for k in ("client_cert_name", "client_cert_chain",
                                                           "tls_version")})

    app = Starlette(routes=[Route("/", echo)])
    server_cert, server_key = self_signed_pair(tmp_path / "server", ["localhost"])
    client_cert, client_key = self_signed_pair(tmp_path / "client", ["gateway.lab", "gw.lab"])
    ctx = ssl.create_default_context(cafile=str(server_cert))
    ctx.load_cert_chain(client_cert, client_key)
    expected = x509.load_pem_x509_certificate(client_cert.read_bytes())
    for client_ca, want in ((client_cert, True), (None, False)):
        access = ReceiverAccess(cert=server_cert, key=server_key, client_ca=client_ca)
        listener = HttpListener(app, "127.0.0.1", 0, "echo", options=access.uvicorn_options())
        port = await listener.start()
        try:
            async with httpx.AsyncClient(verify=ctx, timeout=10) as client:
                body = (await client.get(f"https://localhost:{port}/")).json()
        finally:
            await listener.stop()
        if not want:
            assert body is None
            continue
        assert body["client_cert_name"] == expected.subject.rfc4514_string()
        assert body["client_cert_name"] == "O=meshscope test only,CN=gateway.lab"
        (pem,) = body["client_cert_chain"]
        assert x509.load_pem_x509_certificate(pem.encode()) == expected
        assert body["tls_version"] in (0x0303, 0x0304)
