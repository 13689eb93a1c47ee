"""The live path with the real bundled Envoy: requests → gRPC access logs and Zipkin spans → collector.

Exactly one HTTP AccessRecord per request (plain, retried 5xx, timed out, unknown host), with the
request ids the upstream saw, the right attempt counts and flags; Envoy reports no dropped logs;
spans carry the same x-request-ids; a TLS passthrough connection gives a TCP record with its SNI.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid

import httpx
import pytest
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.launcher import EnvoyProcess
from meshscope.proxy.loss import account

from meshscope.model import normalize_request_id
from tests.collector.envoy_lab import APP_HOST, lab_bootstrap, lab_routes, listener_port, need_envoy
from tests.conftest import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


@pytest.fixture
async def lab(running, data_dir):
    """(collector, upstream, envoy, routes) with Envoy's telemetry pointed at the running collector."""
    need_envoy()
    collector, _ = running
    async with DemoUpstream(port=free_port()) as upstream:
        routes = lab_routes(upstream.port, data_dir / "certs")
        bootstrap = lab_bootstrap(routes, collector.als_port, collector.zipkin_port, zipkin="json")
        async with EnvoyProcess(bootstrap, concurrency=1) as envoy:
            yield collector, upstream, envoy, routes


async def _request(client: httpx.AsyncClient, port: int, path: str, host: str = APP_HOST) -> tuple[str, int]:
    rid = str(uuid.uuid4())
    r = await client.get(f"http://127.0.0.1:{port}{path}", headers={"host": host, "x-request-id": rid})
    return rid, r.status_code


async def test_one_record_per_request_with_ids_attempts_and_flags(lab, access_reader, span_reader):
    collector, upstream, envoy, routes = lab
    port = listener_port(routes, "ingress")
    async with httpx.AsyncClient(timeout=10) as client:
        # /flaky/2 fails every 2nd call of a key: one call straight to the upstream makes the
        # proxy's first attempt the failing one, so Envoy retries once and succeeds
        for key in ("r1", "r2"):
            await client.get(f"{upstream.url}/flaky/2?key={key}")
        before = set(upstream.seen_request_ids())
        plain = [await _request(client, port, f"/status/200?i={i}") for i in range(5)]
        retried = [await _request(client, port, f"/flaky/2?key={k}") for k in ("r1", "r2")]
        exhausted = [await _request(client, port, f"/flaky/1?key={k}") for k in ("x1", "x2")]
        timed_out = await asyncio.gather(*(_request(client, port, f"/delay/3?i={i}") for i in range(2)))
        no_route = [await _request(client, port, "/status/200", host="nowhere.local") for _ in range(2)]
    sent = plain + retried + exhausted + list(timed_out) + no_route
    assert [code for _, code in sent] == [200] * 5 + [200] * 2 + [503] * 2 + [504] * 2 + [404] * 2

    records = await access_reader.wait_for(len(sent), timeout=15)
    records = await access_reader.settle(quiet=0.5)
    http = [r for r in records if r.protocol == "HTTP"]
    assert len(http) == len(sent) == 13
    by_id = {r.request_id_norm: r for r in http}
    assert set(by_id) == {normalize_request_id(rid) for rid, _ in sent}

    def rec(rid):
        return by_id[normalize_request_id(rid)]

    for rid, _ in plain:
        r = rec(rid)
        assert (r.response_code, r.attempt_count, r.response_flags) == (200, 1, [])
        assert (r.method, r.authority, r.upstream_cluster) == ("GET", APP_HOST, "httpbin")
        assert r.path.startswith("/status/200") and r.downstream_remote.startswith("127.0.0.1:")
        assert r.downstream_local == f"127.0.0.1:{port}" and r.upstream_host == f"127.0.0.1:{upstream.port}"
        assert r.upstream_local.startswith("127.0.0.1:") and r.duration_ms is not None
        assert (r.node_id, r.node_cluster) == ("lab-proxy", "meshscope") and r.response_bytes > 0
        assert r.trace_id and r.span_id and r.sampled == "1"  # logged B3 headers
    for rid, _ in retried:
        assert (rec(rid).response_code, rec(rid).attempt_count, rec(rid).response_flags) == (200, 2, [])
    for rid, _ in exhausted:
        r = rec(rid)
        assert (r.response_code, r.attempt_count) == (503, 4) and "URX" in r.response_flags
    for rid, _ in timed_out:
        assert (rec(rid).response_code, rec(rid).response_flags) == (504, ["UT"])
    for rid, _ in no_route:
        r = rec(rid)
        assert (r.response_code, r.response_flags, r.upstream_cluster) == (404, ["NR"], None)

    # the ids the upstream saw are exactly the records that reached it (each attempt carries the id)
    seen = [normalize_request_id(i) for i in upstream.seen_request_ids() if i not in before]
    reached = {normalize_request_id(rid) for rid, _ in sent if rid not in {r for r, _ in no_route}}
    assert set(seen) == reached
    assert len(seen) == 5 + 2 * 2 + 2 * 4 + 2  # plain, retried twice, four attempts, timed out

    # Envoy's own view: every entry written, none dropped, and the collector's account agrees
    counts = envoy.admin.access_log_counts()
    assert counts == {"logs_written": 13, "logs_dropped": 0}
    arrived = {"lab-proxy": sum(1 for r in records if r.node_id == "lab-proxy")}  # what the bus carried
    (loss,) = await account([envoy.admin_address], arrived)
    assert (loss.node_id, loss.written, loss.dropped, loss.arrived, loss.gap) == ("lab-proxy", 13, 0, 13, 0)

    # spans: Envoy's Zipkin tracer tags each span with the request id it belongs to
    routed = {normalize_request_id(rid) for rid, _ in sent} - {normalize_request_id(r) for r, _ in no_route}
    spans = await span_reader.wait_until(lambda spans: routed <= {s.request_id_norm for s in spans}, 15)
    assert routed <= {s.request_id_norm for s in spans}
    for s in spans:
        r = by_id.get(s.request_id_norm)
        if r is not None and r.trace_id:  # NR requests never got B3 headers to log
            assert s.trace_id == r.trace_id


def _tls_get(port: int, sni: str) -> bytes:
    """An HTTPS GET with the given SNI over a plain loopback connection (self-signed: no verify)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(f"GET /headers HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


async def test_tls_passthrough_yields_a_tcp_record_with_sni(lab, access_reader):
    collector, upstream, envoy, routes = lab
    response = await asyncio.to_thread(_tls_get, listener_port(routes, "passthrough"), "shop.example.com")
    assert response.startswith(b"HTTP/1.1 200")
    records = await access_reader.wait_for(2, timeout=15)
    tcp = [r for r in records if r.protocol == "TCP"]
    assert len(tcp) == 1, records
    (t,) = tcp
    assert t.sni == "shop.example.com" and t.upstream_cluster == "shop-tls"
    assert t.downstream_local == f"127.0.0.1:{listener_port(routes, 'passthrough')}"
    assert t.request_bytes > 0 and t.response_bytes > 0
    assert t.ja3 is not None and len(t.ja3) == 32 and int(t.ja3, 16) >= 0  # MD5 of the ClientHello
    # the gateway behind it terminated TLS: its HTTP record has the SNI and the TLS version
    (h,) = [r for r in records if r.protocol == "HTTP"]
    assert h.sni == "shop.example.com" and h.tls_version in ("TLSv1.2", "TLSv1.3") and h.path == "/headers"


async def test_envoy_proto3_spans(running, data_dir, span_reader):
    """Envoy's Zipkin tracer in HTTP_PROTO mode: an independent proto3 encoder for the receiver."""
    need_envoy()
    collector, _ = running
    async with DemoUpstream(port=free_port()) as upstream:
        routes = lab_routes(upstream.port, data_dir / "certs")
        bootstrap = lab_bootstrap(routes, collector.als_port, collector.zipkin_port, zipkin="proto")
        async with EnvoyProcess(bootstrap) as _envoy, httpx.AsyncClient(timeout=10) as client:
            sent = [await _request(client, listener_port(routes, "ingress"), "/status/200") for _ in range(3)]
            want = {normalize_request_id(rid) for rid, _ in sent}
            spans = await span_reader.wait_until(lambda spans: want <= {s.request_id_norm for s in spans}, 15)
    assert want <= {s.request_id_norm for s in spans}
    assert collector.metrics.received.labels("zipkin_proto")._value.get() >= 3
    assert all(len(s.trace_id) == 32 and len(s.span_id) == 16 for s in spans)
