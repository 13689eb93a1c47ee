"""Faults on the scale-out path: the broker dies mid-stream and returns; a partition is replayed.

Every record must end up in the store exactly once: the publisher keeps what the bus did not
acknowledge, the indexer commits only what the store acknowledged, and record ids deduplicate.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from meshscope.pipelines.alerts.rules import parse_rules
from meshscope.pipelines.bus.kafka import KafkaBus
from meshscope.pipelines.indexer import GROUP, Pipeline
from meshscope.pipelines.store.base import AccessQuery, StoreUnavailable
from meshscope.pipelines.wiring import make_store

from meshscope.settings import Settings
from tests.pipelines.traffic import access, publish_stream, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NO_RULES = parse_rules({"rules": []})


async def stored_ids(store) -> set[str]:
    """Every access record id in the store, read page by page through the reader interface."""
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.list_access(AccessQuery(limit=1000, cursor=cursor))
        ids += [r.id for r in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(ids) == len(set(ids)), "a record was stored twice"
    return set(ids)


@pytest.mark.elasticsearch
async def test_broker_then_search_server_lost_mid_stream_every_record_once(durable_tansu, es_settings,
                                                                          search_server):
    settings = es_settings.replace(bus="kafka", kafka_bootstrap=durable_tansu.bootstrap)
    store = make_store(settings)
    await store.start()
    bus = KafkaBus(durable_tansu.bootstrap, request_timeout_s=2, session_timeout_s=3)
    await bus.start()
    pipeline = Pipeline(settings, bus, store, rules=NO_RULES, max_batch=500)
    await pipeline.start()
    records = [access(i) for i in range(4000)]
    try:
        stream = asyncio.ensure_future(publish_stream(bus, records, per_second=250))
        await wait_for(lambda: _indexed_at_least(pipeline, 300), 30, "indexing to start")
        assert not stream.done()
        durable_tansu.stop()  # mid-stream: the publisher is still sending
        await asyncio.sleep(6)  # longer than the publish timeout: the publisher must hold and resend
        durable_tansu.start()
        indexed = pipeline.indexer.stats["indexed"]
        await wait_for(lambda: _indexed_at_least(pipeline, indexed + 300), 60, "indexing to resume")
        assert not stream.done()
        search_server.pause()  # now the store: connections refused while the stream goes on
        await asyncio.sleep(4)
        search_server.resume()
        failures = await asyncio.wait_for(stream, 90)
        assert failures > 0, "the broker outage was not noticed by the publisher"
        want = {r.id for r in records}
        await wait_for(lambda: _has_all(store, want), 90, "every record in the store")
        assert await stored_ids(store) == want
    finally:
        await pipeline.stop()
        await bus.stop()
        await store.stop()


async def test_replayed_partitions_are_not_duplicated(tansu, data_dir):
    settings = Settings(data_dir=data_dir)
    store = make_store(settings)
    await store.start()
    bus = KafkaBus(tansu.bootstrap, partitions=3, session_timeout_s=3)
    await bus.start()
    records = [access(i) for i in range(600)]
    try:
        await bus.publish("access", records)
        async with Pipeline(settings, bus, store, rules=NO_RULES) as pipeline:
            await wait_for(lambda: _indexed_at_least(pipeline, 600), 60, "first pass")
        await _reset_offsets(tansu.bootstrap, bus.topic_name("access"), 3)
        async with Pipeline(settings, bus, store, rules=NO_RULES) as pipeline:
            await wait_for(lambda: _indexed_at_least(pipeline, 600), 60, "the replay")  # consumed again
        assert await stored_ids(store) == {r.id for r in records}
    finally:
        await bus.stop()
        await store.stop()


async def _reset_offsets(bootstrap: str, topic: str, partitions: int) -> None:
    """What an operator's `--reset-offsets --to-earliest` does: the indexer group starts over.
    (Joins the group first: Tansu accepts commits only from a member.)"""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False,
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    await consumer.start()
    try:
        while len(consumer.assignment()) < partitions:
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({TopicPartition(topic, p): 0 for p in range(partitions)})
    finally:
        await consumer.stop()


async def _indexed_at_least(pipeline: Pipeline, n: int) -> bool:
    return pipeline.indexer.stats["indexed"] >= n


async def _has_all(store, want: set[str]) -> bool:
    try:
        return len(await stored_ids(store)) >= len(want)
    except StoreUnavailable:
        return False
