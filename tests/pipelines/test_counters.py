"""The pipeline's per-cluster traffic counters: in-process, each cluster's 5xx and retried series at 0
from the first request seen, so a first burst is an increase Prometheus sees."""

from __future__ import annotations

import asyncio

from meshscope.pipelines import Pipeline
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.pipelines.store.sqlite import SqliteStore
from prometheus_client import REGISTRY

from meshscope.settings import Settings
from tests.pipelines.traffic import access, wait_for


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_series_exist_at_zero_before_the_first_burst(tmp_path):
    settings = Settings(data_dir=tmp_path)
    bus = MemoryBus()
    async with SqliteStore(settings) as store, Pipeline(settings, bus, store, tick=0.05) as pipeline:
        # rules and topics known at start: their series exist before anything happened
        assert value("meshscope_alerts_total", rule="upstream-5xx-spike", state="firing") is not None
        assert value("meshscope_indexer_deadlettered_total", topic="access") is not None
        assert value("meshscope_responses_5xx_total", upstream_cluster="counted-a") is None

        await bus.publish("access", [access(i, cluster="counted-a", tag="ca") for i in range(4)])
        await wait_for(lambda: _indexed(pipeline, 4), 10, "the 2xx requests")
        assert value("meshscope_requests_total", upstream_cluster="counted-a") == 4
        assert value("meshscope_responses_5xx_total", upstream_cluster="counted-a") == 0.0
        assert value("meshscope_requests_retried_total", upstream_cluster="counted-a") == 0.0

        burst = [access(i, cluster="counted-a", code=503, tag="cb") for i in range(7)]
        burst += [access(i, cluster="counted-a", attempts=2, tag="cr") for i in range(3)]
        burst += [access(i, cluster="counted-b", code=500, tag="cc") for i in range(2)]
        await bus.publish("access", burst)
        await wait_for(lambda: _indexed(pipeline, 16), 10, "the burst")
        assert value("meshscope_requests_total", upstream_cluster="counted-a") == 14
        assert value("meshscope_responses_5xx_total", upstream_cluster="counted-a") == 7
        assert value("meshscope_requests_retried_total", upstream_cluster="counted-a") == 3
        assert value("meshscope_responses_5xx_total", upstream_cluster="counted-b") == 2
        assert value("meshscope_requests_retried_total", upstream_cluster="counted-b") == 0.0
        assert value("meshscope_indexer_records_total", topic="access") >= 16

        # clusters known from the proxy's configuration exist before their first request
        pipeline.expect_clusters(["counted-c"])
        assert value("meshscope_responses_5xx_total", upstream_cluster="counted-c") == 0.0
        assert value("meshscope_requests_total", upstream_cluster="counted-c") == 0.0


async def _indexed(pipeline, n: int) -> bool:
    await asyncio.sleep(0)
    return pipeline.indexer.stats["indexed"] >= n
