"""The Zipkin v2 receiver over real HTTP: JSON, proto3, gzip; bad input gets 4xx and loses nothing else."""

from __future__ import annotations

import gzip

import httpx
import orjson
from meshscope.collector import zipkin_proto
from meshscope.collector.publisher import Publisher
from meshscope.collector.zipkin_receiver import make_app
from meshscope.pipelines.bus.memory import MemoryBus

TRACE = "463ac35c9f6413ad48485a3953bb6124"


def _json_span(i: int, **extra) -> dict:
    span = {
        "traceId": TRACE, "id": f"{i + 1:016x}", "parentId": "a2fb4a1d1a96d312", "name": "ingress",
        "kind": "SERVER", "timestamp": 1_700_000_000_000_000 + i, "duration": 1500,
        "localEndpoint": {"serviceName": "gw", "ipv4": "10.10.0.6", "port": 8080},
        "remoteEndpoint": {"ipv4": "172.18.0.1", "port": 57536},
        "annotations": [{"timestamp": 1_700_000_000_000_100, "value": "ws"}],
        "tags": {"guid:x-request-id": f"rid-{i}", "http.status_code": "200"},
        "shared": False,
    }
    span.update(extra)
    return span


def _url(collector) -> str:
    return f"http://127.0.0.1:{collector.zipkin_port}/api/v2/spans"


async def test_json_and_gzip_json(running, span_reader):
    collector, _ = running
    async with httpx.AsyncClient() as client:
        r = await client.post(_url(collector), content=orjson.dumps([_json_span(0), _json_span(1)]),
                              headers={"content-type": "application/json"})
        assert r.status_code == 202, r.text
        r = await client.post(_url(collector), content=gzip.compress(orjson.dumps([_json_span(2)])),
                              headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 202, r.text
    spans = await span_reader.wait_for(3)
    assert sorted(s.request_id for s in spans) == ["rid-0", "rid-1", "rid-2"]
    s0 = next(s for s in spans if s.request_id == "rid-0")
    assert (s0.trace_id, s0.span_id, s0.parent_id) == (TRACE, "0000000000000001", "a2fb4a1d1a96d312")
    assert (s0.span_kind, s0.name, s0.duration, s0.service_name) == ("SERVER", "ingress", 1500, "gw")
    assert s0.remote_endpoint == {"ipv4": "172.18.0.1", "port": 57536}
    assert s0.annotations == [{"timestamp": 1_700_000_000_000_100, "value": "ws"}]


async def test_proto3_list_of_spans(running, span_reader):
    collector, _ = running
    message = zipkin_proto.ListOfSpans(spans=[zipkin_proto.Span(
        trace_id=bytes.fromhex(TRACE), id=bytes.fromhex("00000000000000ff"),
        parent_id=bytes.fromhex("a2fb4a1d1a96d312"), kind=zipkin_proto.Span.Kind.Value("CLIENT"),
        name="egress", timestamp=1_700_000_000_000_000, duration=42,
        local_endpoint=zipkin_proto.Endpoint(service_name="gw", ipv4=bytes([10, 10, 0, 6]), port=8080),
        remote_endpoint=zipkin_proto.Endpoint(ipv6=bytes(15) + b"\x01"),
        tags={"guid:x-request-id": "rid-p"},
    )])
    async with httpx.AsyncClient() as client:
        r = await client.post(_url(collector), content=gzip.compress(message.SerializeToString()),
                              headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert r.status_code == 202, r.text
    (span,) = await span_reader.wait_for(1)
    assert (span.trace_id, span.span_id) == (TRACE, "00000000000000ff")
    assert (span.span_kind, span.name) == ("CLIENT", "egress")
    assert span.local_endpoint == {"serviceName": "gw", "ipv4": "10.10.0.6", "port": 8080}
    assert span.remote_endpoint == {"ipv6": "::1"} and span.request_id == "rid-p" and span.duration == 42


async def test_bad_bodies_are_refused_each_alone(running, span_reader):
    collector, _ = running
    bad = [
        (b'[{"traceId": ', "application/json", 400, "malformed JSON"),
        (b'{"traceId": "463ac35c9f6413ad"}', "application/json", 400, "JSON array"),
        (orjson.dumps([_json_span(0), {"id": "0000000000000001"}]), "application/json", 400,
         "traceId is required"),
        (orjson.dumps([_json_span(0, timestamp="yesterday")]), "application/json", 400, "timestamp"),
        (orjson.dumps([_json_span(0, traceId="xyz")]), "application/json", 400, "traceId"),
        (orjson.dumps([_json_span(0, tags={"n": 1})]), "application/json", 400, "tags"),
        (orjson.dumps([_json_span(0, kind="SIDEWAYS")]), "application/json", 400, "kind"),
        (b"\x0a\xff\xff\xff\x0f", "application/x-protobuf", 400, "ListOfSpans"),
        (b"<spans/>", "application/xml", 415, "content type"),
        (b"[" + b" " * (17 * 1024 * 1024) + b"]", "application/json", 413, "limit"),
    ]
    async with httpx.AsyncClient(timeout=30) as client:
        for body, ctype, status, words in bad:
            r = await client.post(_url(collector), content=body, headers={"content-type": ctype})
            assert r.status_code == status, (body[:40], r.text)
            assert words in r.json()["error"], r.text
        # a gzip bomb: small on the wire, past the limit once inflated
        bomb = gzip.compress(b" " * (40 * 1024 * 1024))
        r = await client.post(_url(collector), content=bomb,
                              headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 413 and len(bomb) < 100_000
        r = await client.post(_url(collector), content=b"\x1f\x8bnot gzip",
                              headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["error"]
        # and the receiver still takes good spans; nothing of the refused ones got through
        r = await client.post(_url(collector), content=orjson.dumps([_json_span(9)]))
        assert r.status_code == 202
        metrics = (await client.get(f"http://127.0.0.1:{collector.zipkin_port}/metrics")).text
    spans = await span_reader.settle()
    assert [s.request_id for s in spans] == ["rid-9"]
    assert 'meshscope_collector_rejected_total{protocol="zipkin_json",reason="malformed"} 7.0' in metrics


async def test_full_collector_answers_503(tmp_path):
    """Bus full and spool full: the receiver pushes back instead of holding more."""
    bus = MemoryBus(capacity=1, publish_timeout=0.05)
    publisher = Publisher(bus, tmp_path / "spool", max_spool_bytes=2000, publish_timeout=0.1)
    await publisher.start()
    transport = httpx.ASGITransport(app=make_app(publisher))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            statuses = [
                (await client.post("/api/v2/spans", content=orjson.dumps([_json_span(i)]))).status_code
                for i in range(8)
            ]
    finally:
        await publisher.stop()
    assert statuses[0] == 202 and 503 in statuses
    assert set(statuses) == {202, 503}


async def test_slow_and_idle_senders_are_closed_after_the_read_timeouts(data_dir):
    """Half a request head or a stalled body is closed after its timeout (1 s here) while real senders
    go on; the connections held meanwhile do not stop a real POST."""
    import asyncio
    import socket

    from meshscope.collector.server import Collector

    from meshscope.serving import guarded_http
    from meshscope.settings import Settings
    from tests.conftest import free_port
    from tests.stack.test_slow_clients import _closed_within

    settings = Settings(data_dir=data_dir / "slow", als_port=0, zipkin_port=free_port(), otlp_grpc_port=0,
                        otlp_http_port=0, http_head_timeout_s=1, http_body_timeout_s=1)
    async with Collector(settings, MemoryBus(), **guarded_http(settings)) as collector:
        port = collector.zipkin_port
        heads = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /api/v2/spans HTTP/1.1\r\nHost: x\r\n")  # never finished
            heads.append(s)
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(b"POST /api/v2/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n[{")  # then nothing
        async with httpx.AsyncClient() as client:
            r = await client.post(_url(collector), content=orjson.dumps([_json_span(0)]))
            assert r.status_code == 202
        closed = await asyncio.gather(*(asyncio.to_thread(_closed_within, s, 4) for s in [*heads, body]))
        assert all(closed)
        for s in [*heads, body]:
            s.close()
