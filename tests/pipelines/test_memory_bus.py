"""MemoryBus: consumer groups with committed offsets, redelivery of uncommitted batches, backpressure."""

from __future__ import annotations

import asyncio

import pytest
from meshscope.pipelines.bus.base import BusUnavailable
from meshscope.pipelines.bus.memory import MemoryBus

from tests.pipelines.traffic import access


async def next_batch(bus: MemoryBus, topic: str, group: str, max_batch: int = 1000, timeout: float = 2.0):
    consumer = bus.consume(topic, group, max_batch)
    try:
        return await asyncio.wait_for(anext(consumer), timeout)
    finally:
        await consumer.aclose()


async def test_batches_arrive_in_order_and_respect_max_batch():
    bus = MemoryBus()
    records = [access(i) for i in range(25)]
    await bus.publish("access", records)
    consumer = bus.consume("access", "g", max_batch=10)
    sizes, seen = [], []
    for _ in range(3):
        batch = await anext(consumer)
        sizes.append(len(batch.records))
        seen += batch.records
        await batch.commit()
    await consumer.aclose()
    assert sizes == [10, 10, 5]
    assert [r.id for r in seen] == [r.id for r in records]
    assert bus.lag("access", "g") == 0


async def test_uncommitted_batch_is_redelivered_committed_one_is_not():
    bus = MemoryBus()
    await bus.publish("access", [access(i) for i in range(10)])
    first = await next_batch(bus, "access", "g", max_batch=4)
    again = await next_batch(bus, "access", "g", max_batch=4)  # a consumer that crashed before commit
    assert [r.id for r in again.records] == [r.id for r in first.records]
    await again.commit()
    rest = await next_batch(bus, "access", "g")
    assert [r.request_id for r in rest.records] == [f"r-{i:08d}" for i in range(4, 10)]


async def test_groups_have_their_own_offsets():
    bus = MemoryBus()
    audit = bus.consume("access", "audit")  # joined: records are held until this group commits too
    await bus.publish("access", [access(i) for i in range(5)])
    a = await next_batch(bus, "access", "indexer")
    await a.commit()
    assert bus.lag("access", "indexer") == 0 and bus.lag("access", "audit") == 5
    b = await anext(audit)
    assert len(b.records) == 5  # the other group still gets everything
    await audit.aclose()


async def test_consumer_waits_for_records_published_later():
    bus = MemoryBus()
    consumer = bus.consume("spans", "g")
    pending = asyncio.ensure_future(anext(consumer))
    await asyncio.sleep(0.05)
    assert not pending.done()
    await bus.publish("spans", [access(1)])
    batch = await asyncio.wait_for(pending, 1)
    assert len(batch.records) == 1
    await consumer.aclose()


async def test_full_topic_blocks_publish_until_commit_then_gives_up():
    bus = MemoryBus(capacity=10, publish_timeout=0.3)
    consumer = bus.consume("access", "g", max_batch=10)  # a group has joined: its offset bounds the log
    await bus.publish("access", [access(i) for i in range(10)])
    blocked = asyncio.ensure_future(bus.publish("access", [access(10)]))
    await asyncio.sleep(0.1)
    assert not blocked.done()  # backpressure: the publisher waits
    batch = await anext(consumer)
    await batch.commit()  # room again
    await asyncio.wait_for(blocked, 1)
    await bus.publish("access", [access(i) for i in range(11, 20)])
    with pytest.raises(BusUnavailable, match="full"):
        await bus.publish("access", [access(20)])
    await consumer.aclose()


async def test_reset_replays_records_still_held():
    bus = MemoryBus()
    await bus.publish("access", [access(i) for i in range(3)])
    await bus.publish("access", [access(i) for i in range(3, 6)])
    batch = await next_batch(bus, "access", "g")
    await batch.commit()
    await bus.publish("access", [access(6)])
    assert bus.lag("access", "g") == 1
    bus.reset("access", "g", 0)  # everything committed below offset 6 was dropped already
    replay = await next_batch(bus, "access", "g")
    assert [r.request_id for r in replay.records] == ["r-00000006"]
