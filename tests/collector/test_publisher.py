"""The publisher and its disk spool: bus down → spooled → bus back → replayed in order, none lost or doubled.

"Bus down" here is the real in-process bus refusing: a MemoryBus whose topic is full and nobody
consumes times out with BusUnavailable, exactly what a stalled bus does; starting a consumer is
the bus coming back.
"""

from __future__ import annotations

import asyncio

import pytest
from meshscope.collector.access_entries import LogSource, message_records
from meshscope.collector.publisher import Backpressure, Publisher
from meshscope.collector.spool import Spool, SpoolFull
from meshscope.pipelines.bus.memory import MemoryBus

from tests.collector.als_messages import http_message
from tests.collector.conftest import TopicReader

SOURCE = LogSource("node-a", "gw", "meshscope")


def _batch(start: int, n: int = 10):
    return message_records(http_message(n, start=start), SOURCE)


async def test_bus_down_spools_then_replays_in_order(tmp_path):
    bus = MemoryBus(capacity=10, publish_timeout=0.05)
    publisher = Publisher(bus, tmp_path / "spool", publish_timeout=0.2, retry_interval=0.05)
    await publisher.start()
    try:
        for i in range(0, 100, 10):  # the first batch fills the topic; the rest must wait on disk
            await publisher.submit("access", _batch(i), "http")
        assert publisher.degraded and publisher.spool.pending_bytes > 0
        assert publisher.metrics.spooled.labels("http")._value.get() == 90
        reader = TopicReader(bus, "access")  # the bus comes back: a consumer makes room
        try:
            records = await reader.wait_for(100)
            assert await publisher.drain(5)
            await asyncio.sleep(0.2)
            ids = [r.request_id for r in reader.records]
        finally:
            await reader.close()
    finally:
        await publisher.stop()
    assert ids == [f"req-{i}" for i in range(100)]  # in order, none lost, none twice
    assert len(records) == 100
    assert not list((tmp_path / "spool").glob("seg-*.log"))  # replayed segments are removed


async def test_records_go_to_the_spool_while_it_holds_older_ones(tmp_path):
    """Order across an outage: once something is spooled, later records queue behind it."""
    bus = MemoryBus(capacity=10, publish_timeout=0.05)
    publisher = Publisher(bus, tmp_path / "spool", publish_timeout=0.2, retry_interval=0.05)
    await publisher.start()
    reader = None
    try:
        await publisher.submit("access", _batch(0), "http")
        await publisher.submit("access", _batch(10), "http")  # spooled
        reader = TopicReader(bus, "access")
        await publisher.submit("access", _batch(20), "http")  # behind req-10.., whether replayed yet or not
        await reader.wait_for(30)
        await publisher.drain(5)
        assert [r.request_id for r in reader.records] == [f"req-{i}" for i in range(30)]
    finally:
        if reader:
            await reader.close()
        await publisher.stop()


async def test_spool_survives_a_restart(tmp_path):
    """Records spooled by one run are replayed by the next, and a torn last line is ignored."""
    down = MemoryBus(capacity=10, publish_timeout=0.05)
    first = Publisher(down, tmp_path / "spool", publish_timeout=0.2, retry_interval=0.05)
    await first.start()
    for i in range(0, 40, 10):
        await first.submit("access", _batch(i), "http")
    await first.stop()
    (segment,) = sorted((tmp_path / "spool").glob("seg-*.log"))
    with open(segment, "ab") as f:
        f.write(b'access\t{"start_time": 1')  # a crash mid-write

    bus = MemoryBus()
    reader = TopicReader(bus, "access")
    second = Publisher(bus, tmp_path / "spool", retry_interval=0.05)
    assert second.degraded
    await second.start()
    try:
        await reader.wait_for(30)
        assert await second.drain(5)  # the torn tail is dropped, not waited on forever
        assert not second.degraded and not list((tmp_path / "spool").glob("seg-*"))
        await asyncio.sleep(0.3)
        assert [r.request_id for r in reader.records] == [f"req-{i}" for i in range(10, 40)]
    finally:
        await reader.close()
        await second.stop()


async def test_backpressure_bounds_memory_and_disk(tmp_path):
    bus = MemoryBus(capacity=10, publish_timeout=0.05)
    publisher = Publisher(bus, tmp_path / "spool", max_spool_bytes=30_000, publish_timeout=0.1,
                          retry_interval=0.05)
    await publisher.start()
    try:
        await publisher.submit("access", _batch(0), "http")
        with pytest.raises(Backpressure):
            for i in range(10, 2000, 10):
                await publisher.submit("access", _batch(i), "http", wait=False)
        assert publisher.spool.pending_bytes <= 30_000
        # a waiting submit blocks (the gRPC stream is not read) until the bus takes records again
        blocked = asyncio.create_task(publisher.submit("access", _batch(5000), "http"))
        await asyncio.sleep(0.3)
        assert not blocked.done()
        reader = TopicReader(bus, "access")
        await asyncio.wait_for(blocked, 10)
        await publisher.drain(10)
        await reader.settle(quiet=0.3)
        await reader.close()
        ids = [r.request_id for r in reader.records]
        assert ids[-10:] == [f"req-{i}" for i in range(5000, 5010)] and len(ids) == len(set(ids))
    finally:
        await publisher.stop()


def test_spool_full_refuses_the_batch(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    spool.append("access", _batch(0, 1))  # one batch alone always fits, else it could never go
    held = spool.pending_bytes
    with pytest.raises(SpoolFull):
        spool.append("access", _batch(1, 1))
    assert spool.pending_bytes == held


def test_damaged_spool_lines_are_skipped_not_replayed_forever(tmp_path):
    spool = Spool(tmp_path)
    spool.append("access", _batch(0, 2))
    with open(spool.segments()[0], "ab") as f:
        f.write(b"access\t{not json}\n" + b"nosuchtopic\t{}\n")
    spool.append("access", _batch(2, 2))
    replayed = []
    while (batch := spool.read()) is not None:
        replayed += [r.request_id for r in batch.records]
        spool.commit(batch)
    assert replayed == ["req-0", "req-1", "req-2", "req-3"]
    assert spool.skipped == 2 and not spool
