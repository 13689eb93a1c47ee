"""KafkaBus against a real Tansu broker: topics and keys, group commits, broker loss and return."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from meshscope.pipelines.bus.base import BusUnavailable
from meshscope.pipelines.bus.kafka import KafkaBus

from meshscope.model import Span
from tests.pipelines.traffic import access

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def raw_messages(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    """Every message of a topic read straight off the broker (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        messages: list = []
        deadline = time.monotonic() + 20
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                messages += batch
        return messages
    finally:
        await consumer.stop()


async def test_records_keyed_by_request_and_trace_id_on_prefixed_topics(tansu):
    bus = KafkaBus(tansu.bootstrap, topic_prefix="t1.", partitions=3, session_timeout_s=3)
    await bus.start()
    try:
        records = [access(i % 20, t=1_800_000_000 + i) for i in range(100)]  # 20 request ids, 5 each
        spans = [Span(trace_id=f"{i % 4:032x}", span_id=f"{i:016x}", name="get", timestamp=1, duration=1)
                 for i in range(12)]
        await bus.publish("access", records)
        await bus.publish("spans", spans)
        messages = await raw_messages(tansu.bootstrap, "t1.access", 3, 100)
        span_messages = await raw_messages(tansu.bootstrap, "t1.spans", 3, 12)
    finally:
        await bus.stop()
    added = ("@timestamp", "schema_version")  # the wire format's additions (test_kafka_formats.py)
    values = [{k: v for k, v in orjson.loads(m.value).items() if k not in added} for m in messages]
    by_id = {r.id: r.to_dict() for r in records}
    assert len(values) == 100 and all(v == by_id[v["id"]] for v in values)
    partition_of: dict[bytes, set[int]] = {}
    for m in messages:
        partition_of.setdefault(m.key, set()).add(m.partition)
    assert set(partition_of) == {f"r-{i:08d}".encode() for i in range(20)}
    assert all(len(p) == 1 for p in partition_of.values())  # one request stays in one partition, in order
    assert len({p for ps in partition_of.values() for p in ps}) > 1  # and requests spread over partitions
    assert {m.key for m in span_messages} == {f"{i:032x}".encode() for i in range(4)}


async def test_group_gets_uncommitted_batches_again_committed_ones_not(tansu):
    bus = KafkaBus(tansu.bootstrap, topic_prefix="t2.", session_timeout_s=3)
    await bus.start()
    try:
        await bus.publish("access", [access(i) for i in range(30)])
        first = await drain_group(bus, 30, commit=False)  # a consumer that dies before the store acked
        again = await drain_group(bus, 30, commit=True)
        assert sorted(r.id for r in again) == sorted(r.id for r in first)
        assert {r.request_id for r in again} == {f"r-{i:08d}" for i in range(30)}
        await bus.publish("access", [access(100)])
        after = await drain_group(bus, 1, commit=True)
        assert [r.request_id for r in after] == ["r-00000100"]  # only what was never committed
    finally:
        await bus.stop()


async def drain_group(bus: KafkaBus, n: int, commit: bool) -> list:
    """Join the indexer group with a new consumer, take n records, commit them or not, leave."""
    consumer = bus.consume("access", "indexer", max_batch=1000)
    try:
        got: list = []
        while len(got) < n:
            batch = await asyncio.wait_for(anext(consumer), 30)
            got += batch.records
            if commit:
                await batch.commit()
        return got
    finally:
        await consumer.aclose()


async def test_broker_loss_is_bus_unavailable_and_the_bus_reconnects(tansu):
    bus = KafkaBus(tansu.bootstrap, topic_prefix="t3.", request_timeout_s=2, session_timeout_s=3)
    await bus.start()
    try:
        await bus.publish("access", [access(1)])
        tansu.stop()
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await bus.publish("access", [access(2)])
        assert time.monotonic() - started < 10
        tansu.start()  # memory storage: a new, empty broker on the same port
        deadline = time.monotonic() + 30
        while True:
            try:
                await bus.publish("access", [access(3)])
                break
            except BusUnavailable:
                assert time.monotonic() < deadline, "the bus never reconnected"
                await asyncio.sleep(0.5)
        messages = await raw_messages(tansu.bootstrap, "t3.access", 3, 1)
        assert [m.key for m in messages] == [b"r-00000003"]
    finally:
        await bus.stop()


async def test_a_message_that_is_not_a_record_is_skipped_and_counted(tansu):
    from aiokafka import AIOKafkaProducer
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("meshscope_bus_undecodable_total", {"topic": "access"}) or 0
    bus = KafkaBus(tansu.bootstrap, topic_prefix="t4.", partitions=1, session_timeout_s=3)
    await bus.start()
    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("t4.access", b"{not json")
        await bus.publish("access", [access(1)])
        got = await drain_group(bus, 1, commit=True)
    finally:
        await producer.stop()
        await bus.stop()
    assert [r.request_id for r in got] == ["r-00000001"]
    assert REGISTRY.get_sample_value("meshscope_bus_undecodable_total", {"topic": "access"}) == before + 1


async def test_consumers_stop_promptly_while_their_group_rejoins_and_lose_nothing(tansu):
    """A second member joining makes Tansu hold the group's joins until the first rejoins (seconds);
    aiokafka's own stop waited for that (4-8 s here, 10.2 s for a SIGTERMed pipeline). Both stop within
    1.5 s mid-join, and the group then gets exactly what was never committed: nothing lost or repeated."""
    bus = KafkaBus(tansu.bootstrap, topic_prefix="t5.")  # the pipeline's 10 s session
    await bus.start()
    try:
        await bus.publish("access", [access(i) for i in range(50)])
        first = bus.consume("access", "indexer")
        committed: list = []
        while len(committed) < 50:
            batch = await asyncio.wait_for(anext(first), 30)
            committed += batch.records
            await batch.commit()
        await bus.publish("access", [access(i) for i in range(50, 60)])  # fetched or not, never committed

        async def second_member() -> None:
            async for _ in bus.consume("access", "indexer"):
                pass

        joining = asyncio.create_task(second_member())
        await asyncio.sleep(1.5)  # its JoinGroup is held: the first member has not rejoined yet
        stops = []
        for stop in (first.aclose, lambda: _cancelled(joining)):
            started = time.monotonic()
            await asyncio.wait_for(stop(), 30)
            stops.append(time.monotonic() - started)
        assert max(stops) < 1.5, stops
        rest = await drain_group(bus, 10, commit=True)  # a committed record here would be a duplicate
    finally:
        await bus.stop()
    assert sorted(r.request_id for r in committed) == [f"r-{i:08d}" for i in range(50)]
    assert sorted(r.request_id for r in rest) == [f"r-{i:08d}" for i in range(50, 60)]


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
