"""The AccessLogService over a real gRPC channel: identifiers per stream, bad input fails only its stream."""

from __future__ import annotations

import asyncio
import socket
import struct

import grpc
import h2.config
import h2.connection
import pytest
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from meshscope.collector.server import Collector
from meshscope.pipelines.bus.memory import MemoryBus

from meshscope.settings import Settings
from tests.collector.als_messages import ALS_METHOD, http_message
from tests.collector.conftest import TopicReader
from tests.conftest import free_port


async def _stream(port: int, messages) -> als_pb2.StreamAccessLogsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = als_pb2_grpc.AccessLogServiceStub(channel)

        async def gen():
            for m in messages:
                yield m

        return await stub.StreamAccessLogs(gen(), timeout=10)


async def _raw_stream(port: int, chunks: list[bytes]) -> grpc.aio.AioRpcError:
    """Send raw message bytes with a generic stream call; return the error the server answered."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_unary(ALS_METHOD)

        async def gen():
            for c in chunks:
                yield c

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(gen(), timeout=10)
        return info.value


async def test_identifier_of_first_message_applies_to_the_whole_stream(running, access_reader):
    collector, _ = running
    await asyncio.gather(
        _stream(collector.als_port,
                [http_message(3, node_id="node-a"), http_message(2, first=False, start=3)]),
        _stream(collector.als_port, [http_message(4, node_id="node-b", start=100)]),
    )
    records = await access_reader.wait_for(9)
    by_node = {}
    for r in records:
        by_node.setdefault(r.node_id, []).append(r.request_id)
    assert sorted(by_node["node-a"]) == [f"req-{i}" for i in range(5)]
    assert sorted(by_node["node-b"]) == [f"req-{i}" for i in range(100, 104)]
    assert len(records) == 9
    assert dict(collector.servicer.arrived) == {"node-a": 5, "node-b": 4}


async def test_malformed_message_fails_its_stream_only(running, access_reader):
    collector, _ = running
    good = http_message(2).SerializeToString()
    # a length-delimited field whose length runs far past the end of the message
    err = await _raw_stream(collector.als_port, [good, b"\x12\xff\xff\xff\x0f\x01\x02"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed StreamAccessLogsMessage" in err.details()
    # the well-formed message before it was kept, and the server still serves new streams
    await _stream(collector.als_port, [http_message(1, node_id="node-c", start=50)])
    records = await access_reader.wait_for(3)
    assert sorted(r.request_id for r in records) == ["req-0", "req-1", "req-50"]


async def test_open_streams_keep_flowing_while_another_fails(running, access_reader):
    collector, _ = running
    resume = asyncio.Event()

    async def long_lived():  # like Envoy's: one stream kept open across the other's failure
        yield http_message(2, node_id="steady", start=0)
        await resume.wait()
        yield http_message(2, first=False, start=2)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.als_port}") as channel:
        steady = asyncio.ensure_future(als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(
            long_lived(), timeout=20))
        await access_reader.wait_for(2)
        err = await _raw_stream(collector.als_port, [b"\x0a\x05\x0a\x03\x0a"])  # truncated nesting
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        resume.set()
        await steady
    records = await access_reader.wait_for(4)
    assert sorted(r.request_id for r in records) == ["req-0", "req-1", "req-2", "req-3"]
    assert {r.node_id for r in records} == {"steady"}


async def test_first_message_without_identifier_is_refused(running, access_reader):
    collector, _ = running
    err = await _raw_stream(collector.als_port, [http_message(2, first=False).SerializeToString()])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "identifier" in err.details()
    await _stream(collector.als_port, [http_message(1)])
    assert [r.request_id for r in await access_reader.wait_for(1)] == ["req-0"]
    await asyncio.sleep(0.2)
    assert len(access_reader.records) == 1


def _open_cut_stream(port: int, whole: bytes, partial: bytes) -> socket.socket:
    """An HTTP/2 gRPC stream that sends one whole message, then the start of the next (whose gRPC
    frame claims more bytes than follow); the caller then drops the connection mid-message."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(conn.data_to_send())
    conn.send_headers(1, [
        (":method", "POST"), (":scheme", "http"), (":path", ALS_METHOD),
        (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"), ("te", "trailers"),
    ])
    conn.send_data(1, b"\x00" + struct.pack(">I", len(whole)) + whole)
    conn.send_data(1, b"\x00" + struct.pack(">I", len(partial) * 2) + partial)
    sock.sendall(conn.data_to_send())
    return sock


async def test_stream_cut_mid_message(running, access_reader):
    collector, _ = running
    whole = http_message(2, node_id="node-cut").SerializeToString()
    partial = http_message(3, first=False, start=2).SerializeToString()
    sock = await asyncio.to_thread(_open_cut_stream, collector.als_port, whole, partial[: len(partial) // 2])
    try:
        records = await access_reader.wait_for(2)  # the whole message was read and published
    finally:
        sock.close()  # cut: the second message never completes
    await asyncio.sleep(0.3)
    # the whole message, nothing of the cut one
    assert sorted(r.request_id for r in records) == ["req-0", "req-1"]
    await _stream(collector.als_port, [http_message(1, node_id="node-d", start=9)])
    records = await access_reader.wait_for(3)
    assert sorted(r.request_id for r in records) == ["req-0", "req-1", "req-9"]


async def test_full_collector_stops_reading_the_stream_until_the_bus_takes_records(data_dir):
    """Bus full and spool full: the stream is not read on (backpressure), nothing is refused or lost;
    once a consumer makes room, the stream completes and every entry arrives."""
    bus = MemoryBus(capacity=40, publish_timeout=0.05)
    settings = Settings(data_dir=data_dir, als_port=free_port(), zipkin_port=free_port(),
                        otlp_grpc_port=0, otlp_http_port=0)
    collector = Collector(settings, bus, max_spool_bytes=40_000, publish_timeout=0.1)
    await collector.start()
    reader = None
    try:
        messages = [http_message(20, first=(i == 0), start=20 * i) for i in range(15)]
        stream = asyncio.ensure_future(_stream(collector.als_port, messages))
        await asyncio.sleep(1.5)
        assert not stream.done(), "the collector kept reading although it could hold no more"
        assert collector.publisher.spool.pending_bytes <= 40_000 + 100_000  # the bound, past it one batch
        reader = TopicReader(bus, "access")
        await asyncio.wait_for(stream, 30)
        records = await reader.wait_for(300, timeout=30)
    finally:
        if reader is not None:
            await reader.close()
        await collector.stop()
    ids = [r.request_id for r in records]
    assert ids == [f"req-{i}" for i in range(300)]  # all of them, in order


async def test_a_proxy_without_node_id_is_named_by_log_name_and_peer_address(running, access_reader):
    collector, _ = running
    await _stream(collector.als_port, [http_message(2, node_id="", start=700)])
    records = await access_reader.wait_for(2)
    assert {r.node_id for r in records} == {"anonymous~127.0.0.1~meshscope"}
    assert collector.servicer.arrived["anonymous~127.0.0.1~meshscope"] == 2


def test_anonymous_node_ids_from_grpc_peers():
    from meshscope.collector.als_server import anonymous_node_id

    from meshscope.model import parse_node_id

    assert anonymous_node_id("ipv4:10.0.0.7:43210", "http_als") == "anonymous~10.0.0.7~http_als"
    assert anonymous_node_id("ipv6:[::1]:5000", "") == "anonymous~::1~unnamed"
    node = parse_node_id(anonymous_node_id("ipv4:10.0.0.7:43210", "http_als"))
    assert (node.role, node.ip, node.name) == ("proxy", "10.0.0.7", "http_als")
