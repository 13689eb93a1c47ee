"""The indexer on the embedded pair (MemoryBus → SqliteStore): store outages are waited out with
backoff while the bus pushes back on the publisher; refused records go to the dead-letter file."""

from __future__ import annotations

import asyncio

from meshscope.pipelines.alerts.rules import parse_rules
from meshscope.pipelines.bus.base import BusUnavailable
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.pipelines.indexer import Indexer, Pipeline, read_deadletters
from meshscope.pipelines.store.sqlite import SqliteStore
from prometheus_client import REGISTRY

from meshscope.model import AccessRecord
from meshscope.settings import Settings
from tests.pipelines.traffic import access, wait_for

NO_RULES = parse_rules({"rules": []})


def metric(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


async def test_store_outage_backpressure_and_recovery(data_dir):
    store = SqliteStore(Settings(data_dir=data_dir))
    await store.start()
    bus = MemoryBus(capacity=300, publish_timeout=0.5)
    indexer = Indexer(bus, store, data_dir / "deadletter", max_batch=100, max_backoff=0.2)
    task = asyncio.create_task(indexer.run())
    failures_before = metric("meshscope_indexer_store_failures_total", "access")
    try:
        await bus.publish("access", [access(i) for i in range(100)])
        await wait_for(lambda: _stored(store, 100), 10, "the first records")
        # stored, then committed: until the commit they still take room in the bus
        await wait_for(lambda: _true(bus.lag("access", "meshscope-indexer") == 0), 10, "their commit")
        await store.stop()  # the store goes away: writes raise StoreUnavailable
        await bus.publish("access", [access(i) for i in range(100, 400)])  # held by the indexer + bus
        try:
            await bus.publish("access", [access(i) for i in range(400, 500)])
            raise AssertionError("the bus accepted more than it can hold while the store is down")
        except BusUnavailable:
            pass  # backpressure reached the publisher, who keeps these records
        await asyncio.sleep(0.5)
        assert indexer.stats["store_failures"] >= 2  # retried with backoff, not given up
        await store.start()
        await _resend(bus, [access(i) for i in range(400, 500)], 20)  # the publisher's resend
        await wait_for(lambda: _stored(store, 500), 20, "every record after the outage")
    finally:
        task.cancel()
    assert await store.count("access") == 500
    assert metric("meshscope_indexer_store_failures_total", "access") > failures_before
    assert bus.lag("access", "meshscope-indexer") == 0
    await store.stop()


async def test_refused_records_are_dead_lettered_and_the_rest_stored(data_dir):
    settings = Settings(data_dir=data_dir)
    store = SqliteStore(settings)
    await store.start()
    bus = MemoryBus()
    bad = AccessRecord(start_time=1_800_000_000.0, request_id="bad-1", trace_id=123)  # type: ignore[arg-type]
    dead_before = metric("meshscope_indexer_deadlettered_total", "access")
    async with Pipeline(settings, bus, store, rules=NO_RULES) as pipeline:
        batch = [access(i) for i in range(50)] + [bad] + [access(i) for i in range(50, 99)]
        await bus.publish("access", batch)
        await wait_for(lambda: _stored(store, 99), 10, "the good records")
        await wait_for(lambda: _true(pipeline.indexer.stats["deadlettered"] == 1), 5, "the dead letter")
        await bus.publish("access", [access(200)])  # still indexing after the refusal
        await wait_for(lambda: _stored(store, 100), 10, "a record after the refusal")
    [entry] = read_deadletters(data_dir / "deadletter", "access")
    assert entry["record"]["request_id"] == "bad-1" and entry["kind"] == "access" and entry["error"]
    assert AccessRecord.from_dict(entry["record"]).id == bad.id  # replayable as it was
    assert metric("meshscope_indexer_deadlettered_total", "access") == dead_before + 1
    assert await store.access_by_request_id("bad-1") == []
    await store.stop()


async def _stored(store: SqliteStore, n: int) -> bool:
    try:
        return await store.count("access") >= n
    except Exception:  # noqa: BLE001 - the store is being restarted by the test
        return False


async def _true(value: bool) -> bool:
    return value


async def _resend(bus: MemoryBus, records: list, seconds: float) -> None:
    """Publish as the collector's publisher does after a refusal: again until the bus has room (the
    indexer frees it once its backoff ends and the held batches are written), bounded in time."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await bus.publish("access", records)
        except BusUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise


async def test_split_roles_index_once_and_alert_once(data_dir):
    """Two index workers share the indexer group; one alert worker sees every record in its own."""
    settings = Settings(data_dir=data_dir)
    store = SqliteStore(settings)
    await store.start()
    bus = MemoryBus()
    rules = parse_rules({"rules": [{"name": "5xx", "type": "threshold", "threshold": 20, "timeframe": "10s",
                                    "filter": {"status_class": 5}, "realert": "1h"}]})
    workers = [Pipeline(settings, bus, store, role="index"), Pipeline(settings, bus, store, role="index"),
               Pipeline(settings, bus, store, role="alert", rules=rules)]
    for w in workers:
        await w.start()
    try:
        await bus.publish("access", [access(i, code=503) for i in range(25)])
        await wait_for(lambda: _stored(store, 25), 10, "the records")
        await wait_for(lambda: _true(workers[2].outbox.handled), 5, "the alert")
    finally:
        for w in workers:
            await w.stop()
    alerting = workers[2].indexer.stats
    assert alerting["observed"] == 25 and alerting["indexed"] == 1  # it stored its alert, no records
    assert [(a.rule, a.state, a.observed) for a in await store.alerts()] == [("5xx", "firing", 25)]
    assert await store.count("access") == 25
    await store.stop()
