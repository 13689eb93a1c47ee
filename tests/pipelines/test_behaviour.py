"""One behaviour suite, run twice: embedded (MemoryBus + SQLite) and scale-out (Kafka through a real
Tansu broker + Elasticsearch API through a real osmem server). Both pairs are picked by configuration
alone (pipelines.wiring); each test publishes as the collector does, lets the pipeline index and
alert, and checks what the store's reader and a real webhook receiver see."""

from __future__ import annotations

import asyncio
import time

import pytest
from meshscope.pipelines.alerts.rules import parse_rules
from meshscope.pipelines.bus.topics import TOPIC_OF
from meshscope.pipelines.indexer import Pipeline, read_deadletters
from meshscope.pipelines.store.base import AccessQuery
from meshscope.pipelines.wiring import make_bus, make_store

from meshscope.model import AccessRecord, Span
from meshscope.settings import Settings
from tests.pipelines.traffic import WebhookReceiver, access, wait_for

RULES = parse_rules({"rules": [
    {"name": "5xx-spike", "type": "spike", "filter": {"status_class": 5}, "query_key": "upstream_cluster",
     "timeframe": "2s", "spike_height": 3, "threshold_cur": 10, "threshold_ref": 0, "realert": "1h"},
    {"name": "retry-spike", "type": "spike", "filter": {"retried": True}, "query_key": "upstream_cluster",
     "timeframe": "2s", "spike_height": 3, "threshold_cur": 10, "threshold_ref": 0, "realert": "1h"},
]})
CLUSTERS = ("catalog", "webapp", "reviews")


@pytest.fixture(params=["embedded", pytest.param("scale-out", marks=[
    pytest.mark.kafka, pytest.mark.elasticsearch, pytest.mark.slow])])
def settings(request, data_dir) -> Settings:
    if request.param == "embedded":
        return Settings(data_dir=data_dir)
    broker = request.getfixturevalue("tansu")
    es = request.getfixturevalue("es_settings")
    return es.replace(bus="kafka", kafka_bootstrap=broker.bootstrap)


@pytest.fixture
async def stack(settings):
    """The bus and store named by the settings, started, with a webhook receiver for alerts."""
    with WebhookReceiver() as receiver:
        settings = settings.replace(alert_webhooks=[receiver.url])
        bus, store = make_bus(settings), make_store(settings)
        await store.start()
        await bus.start()
        try:
            yield settings, bus, store, receiver
        finally:
            await bus.stop()
            await store.stop()


async def publish(bus, records) -> None:
    """As the collector does: each record on its kind's topic."""
    by_topic: dict[str, list] = {}
    for r in records:
        by_topic.setdefault(TOPIC_OF[type(r)], []).append(r)
    for topic, batch in by_topic.items():
        await bus.publish(topic, batch)


async def test_records_reach_the_reader(stack):
    settings, bus, store, _ = stack
    now = time.time()
    rid = "6f1c2a3e-9d1b-4c7a-8e2f-0a1b2c3d4e5f"
    trace = "80f198ee56343ba864fe8b2a57d3eff7"
    gateway = AccessRecord(start_time=now, node_id="gw", request_id=rid[:14] + "9" + rid[15:],
                           trace_id=trace, response_code=503, upstream_cluster="webapp", authority="shop",
                           path="/buy", attempt_count=2, response_flags=["URX"])
    sidecar = AccessRecord(start_time=now + 0.01, node_id="webapp-sidecar", request_id=rid,
                           trace_id=trace, response_code=503, upstream_cluster="catalog", authority="catalog",
                           path="/items")
    spans = [Span(trace_id=trace, span_id=f"{i:016x}", name="call", timestamp=int(now * 1e6),
                  duration=100, tags={"guid:x-request-id": rid}) for i in range(2)]
    background = [access(i, t=now - 5 + i / 100) for i in range(150)]
    async with Pipeline(settings, bus, store, rules=RULES):
        await publish(bus, [gateway, sidecar, *spans, *background])
        found = await wait_for(lambda: _complete(store.access_by_request_id(rid), 2), 60, "both hops")
        assert {r.id for r in found} == {gateway.id, sidecar.id}  # matched across Envoy's sampling digit
        assert {s.id for s in await wait_for(lambda: _complete(store.spans_by_trace_id(trace), 2), 30,
                                             "spans")} == {s.id for s in spans}
        await wait_for(lambda: _listed(store, AccessQuery(limit=500), 152), 30, "every access record")
        page = await store.list_access(AccessQuery(status_class=5, upstream_cluster="catalog"))
        assert [r.id for r in page.items] == [sidecar.id]
        aggs = await store.aggregates(now - 10, now + 10, 20, ["upstream_cluster"])
        webapp = next(a for a in aggs if a.group == {"upstream_cluster": "webapp"})
        assert (webapp.count, webapp.count_5xx, webapp.count_retried) == (1, 1, 1)


async def test_spikes_alert_once_for_their_cluster_within_5s_and_resolve(stack):
    settings, bus, store, receiver = stack
    async with Pipeline(settings, bus, store, rules=RULES) as pipeline:
        await bus.publish("access", [access(0, tag="warm-up")])  # wait until the pipeline consumes
        await wait_for(lambda: _true(pipeline.indexer.stats["indexed"]), 30, "the pipeline to consume")
        steady = asyncio.create_task(_steady(bus, seconds=9))
        await asyncio.sleep(3)  # a steady rate first: all 200s, one attempt
        sent = time.monotonic()
        await bus.publish("access", [access(i, cluster="catalog", code=503, tag="5xx") for i in range(30)])
        await wait_for(lambda: _true(receiver.alerts("firing")), 5, "the 5xx alert at the webhook")
        assert receiver.arrived[0] - sent < 5
        await wait_for(lambda: _true(receiver.alerts("resolved")), 10, "the 5xx resolution")
        sent = time.monotonic()
        retries = [access(i, cluster="webapp", attempts=2, tag="retry") for i in range(15)]
        retries.append(access(0, cluster="webapp", flags=("URX",), code=200, tag="urx"))
        await bus.publish("access", retries)
        await wait_for(lambda: _true(len(receiver.alerts("firing")) >= 2), 5, "the retry alert")
        assert receiver.arrived[-1] - sent < 5
        await wait_for(lambda: _true(len(receiver.alerts("resolved")) >= 2), 10, "the retry resolution")
        await asyncio.wait_for(steady, 20)
        await asyncio.sleep(1)  # anything late would show now
        outcome = [(a["labels"]["alertname"], a["labels"]["upstream_cluster"], a["status"])
                   for a in receiver.alerts()]
        assert outcome == [("5xx-spike", "catalog", "firing"), ("5xx-spike", "catalog", "resolved"),
                           ("retry-spike", "webapp", "firing"), ("retry-spike", "webapp", "resolved")]
        assert all(p["version"] == "4" and p["groupKey"] for p in receiver.payloads)
        fired = receiver.alerts("firing")[0]
        assert fired["annotations"]["sample_request_ids"].startswith("5xx-")
    stored = await wait_for(lambda: _complete(store.alerts(), 4), 30, "the stored alerts")
    assert sorted((a.rule, a.group_key, a.state) for a in stored) == [
        ("5xx-spike", "upstream_cluster=catalog", "firing"),
        ("5xx-spike", "upstream_cluster=catalog", "resolved"),
        ("retry-spike", "upstream_cluster=webapp", "firing"),
        ("retry-spike", "upstream_cluster=webapp", "resolved"),
    ]
    assert all(a.sample_request_ids for a in stored)


async def test_refused_record_is_dead_lettered_the_rest_indexed(stack):
    settings, bus, store, _ = stack
    bad = AccessRecord(start_time=time.time(), request_id="bad-1", trace_id=123)  # type: ignore[arg-type]
    good = [access(i) for i in range(20)]
    async with Pipeline(settings, bus, store, rules=RULES) as pipeline:
        await bus.publish("access", good[:10] + [bad] + good[10:])
        await wait_for(lambda: _listed(store, AccessQuery(limit=100), 20), 60, "the good records")
        await wait_for(lambda: _true(pipeline.indexer.stats["deadlettered"] == 1), 10, "the dead letter")
    [entry] = read_deadletters(settings.data_dir / "deadletter", "access")
    assert entry["record"]["request_id"] == "bad-1"


async def _steady(bus, seconds: float, per_second: int = 30) -> None:
    """Healthy traffic spread over the clusters, in 100 ms ticks."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        batch = [access(n + i, cluster=CLUSTERS[(n + i) % 3], tag="ok") for i in range(per_second // 10)]
        n += len(batch)
        await bus.publish("access", batch)
        await asyncio.sleep(0.1)


async def _complete(query, n: int):
    try:
        found = await query
    except Exception:  # noqa: BLE001 - not searchable yet
        return None
    return found if len(found) >= n else None


async def _listed(store, query: AccessQuery, n: int) -> bool:
    items, cursor = [], None
    while True:
        page = await store.list_access(AccessQuery(limit=query.limit, cursor=cursor))
        items += page.items
        cursor = page.next_cursor
        if not cursor:
            return len(items) >= n


async def _true(value) -> bool:
    return bool(value)
