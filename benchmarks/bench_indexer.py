"""Indexer speed: records/s from the bus into the store, through the whole pipeline (bus consumer,
alert engine with the bundled rules, store writer, commits), measured the same way for both pairs.

1. Embedded: MemoryBus → Indexer → SqliteStore (fresh file), against the 50,000 records/s target,
   and against SqliteStore.write() alone on the same batches (the pipeline's own cost).
2. Scale-out: Kafka (a real Tansu broker on loopback) → Indexer → Elasticsearch API (osmem-server
   behind the test bridge); the consumer group join (Tansu delays the first rebalance ~5 s) is
   reported separately from the indexing time.

Records are published before the pipeline starts, so the figure is the indexer's drain rate.

    .venv/bin/python benchmarks/bench_indexer.py [--records 300000] [--kafka-records 20000]
        [--batch 5000] [--rounds 2] [--no-kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshscope.pipelines.alerts.rules import load_rules  # noqa: E402
from meshscope.pipelines.bus.memory import MemoryBus  # noqa: E402
from meshscope.pipelines.indexer import Pipeline  # noqa: E402
from meshscope.pipelines.store.sqlite import SqliteStore  # noqa: E402
from meshscope.pipelines.wiring import make_bus, make_store  # noqa: E402

from meshscope.model import AccessRecord  # noqa: E402
from meshscope.settings import Settings  # noqa: E402

TARGET = 50_000
CLUSTERS = ("outbound|8080||webapp", "outbound|3000||catalog", "outbound|9000||cart", "outbound|80||ext")


def records(n: int, t0: float, tag: str) -> list[AccessRecord]:
    """Gateway-shaped access records: one request every 100 µs, 2 % 5xx, 1 % retried."""
    return [
        AccessRecord(
            start_time=t0 + i * 1e-4, duration_ms=12.5, log_name="als", node_id="gateway-0",
            node_cluster="istio-ingressgateway", request_id=f"{tag}-{i:012d}-4000-8000-000000000000",
            trace_id=f"{i:032x}", span_id=f"{i:016x}", sampled="1", method="GET", scheme="http",
            authority="shop.example", path=f"/item/{i % 5000}", route_name="default", user_agent="curl/8.5.0",
            x_forwarded_for="172.18.0.1", response_code=503 if i % 50 == 0 else 200,
            attempt_count=2 if i % 100 == 0 else 1, upstream_cluster=CLUSTERS[i % 4],
            upstream_host="10.10.0.9:8080", downstream_remote="172.18.0.1:57536",
            downstream_local="10.10.0.6:8080", upstream_local="10.10.0.6:46612", request_bytes=0,
            response_bytes=1234, upstream_duration_ms=11.0,
        )
        for i in range(n)
    ]


async def drain(settings: Settings, bus, store, data: list[AccessRecord], batch: int) -> tuple[float, float]:
    """Publish everything, start the pipeline, wait until all is indexed. Returns (seconds until
    the first batch was indexed, seconds for all records at the rate measured after it)."""
    for i in range(0, len(data), batch):
        await bus.publish("access", data[i:i + batch])
    pipeline = Pipeline(settings, bus, store, rules=load_rules(), max_batch=batch)
    started = time.perf_counter()
    await pipeline.start()
    stats = pipeline.indexer.stats
    while stats["indexed"] == 0:
        await asyncio.sleep(0.005)
    first, first_count = time.perf_counter(), stats["indexed"]
    while stats["indexed"] < len(data):
        await asyncio.sleep(0.02)  # polling slower than a batch: the benchmark must not steal the GIL
    done = time.perf_counter()
    await pipeline.stop()
    return first - started, (done - first) / max(1, len(data) - first_count) * len(data)


async def store_alone(store, data: list[AccessRecord], batch: int) -> float:
    """records/s of store.write() on the same batches, nothing else running."""
    started = time.perf_counter()
    for i in range(0, len(data), batch):
        await store.write(data[i:i + batch])
    return len(data) / (time.perf_counter() - started)


async def embedded(n: int, batch: int, rounds: int) -> float:
    """Best of `rounds` interleaved runs of the pipeline and of the store alone (fresh files each)."""
    pipeline_rate = alone_rate = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            settings = Settings(data_dir=Path(tmp) / f"indexer-{r}")
            store = SqliteStore(settings)
            await store.start()
            bus = MemoryBus(capacity=n + 1)
            _, seconds = await drain(settings, bus, store, records(n, time.time(), f"e{r}"), batch)
            await store.stop()
            pipeline_rate = max(pipeline_rate, n / seconds)
            alone = SqliteStore(Settings(data_dir=Path(tmp) / f"alone-{r}"))
            await alone.start()
            alone_rate = max(alone_rate, await store_alone(alone, records(n, time.time(), f"s{r}"), batch))
            await alone.stop()
    verdict = "OK" if pipeline_rate >= TARGET else "MISSED"
    print(f"embedded  MemoryBus → Indexer → SQLite: {n:,} records, best of {rounds}: "
          f"{pipeline_rate:,.0f} records/s (target {TARGET:,}: {verdict}, ×{pipeline_rate / TARGET:.2f})")
    print(f"          SqliteStore.write() alone, same batches: {alone_rate:,.0f} records/s; "
          f"pipeline / store alone = {pipeline_rate / alone_rate:.2f}")
    return pipeline_rate


async def scale_out(n: int, batch: int) -> float:
    from tests.conftest import free_port
    from tests.pipelines.kafka_broker import TansuBroker
    from tests.pipelines.search_server import SearchServer

    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker(free_port(), Path(tmp) / "tansu.log")
        broker.start()
        search = SearchServer().start()
        try:
            settings = Settings(data_dir=Path(tmp), bus="kafka", kafka_bootstrap=broker.bootstrap,
                                store="elasticsearch", elasticsearch_url=search.url,
                                elasticsearch_index_prefix="bench-")
            bus, store = make_bus(settings), make_store(settings)
            await bus.start()
            await store.start()
            join, seconds = await drain(settings, bus, store, records(n, time.time(), "k"), batch)
            await bus.stop()
            await store.stop()
            alone = make_store(settings.replace(elasticsearch_index_prefix="alone-"))
            await alone.start()
            alone_rate = await store_alone(alone, records(n, time.time(), "a"), batch)
            await alone.stop()
        finally:
            search.close()
            broker.stop()
    rate = n / seconds
    print(f"scale-out Kafka (Tansu) → Indexer → Elasticsearch API (osmem): {n:,} records, "
          f"{rate:,.0f} records/s (+{join:.1f} s consumer-group join and first batch)")
    print(f"          ElasticsearchStore.write() alone, same batches: {alone_rate:,.0f} records/s; "
          f"pipeline / store alone = {rate / alone_rate:.2f}")
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--kafka-records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2, help="embedded runs (best counts)")
    parser.add_argument("--no-kafka", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the bundled rules fire on the synthetic 5xx: not news
    sqlite_rate = await embedded(args.records, args.batch, args.rounds)
    if not args.no_kafka:
        kafka_rate = await scale_out(args.kafka_records, args.batch)
        print(f"ratio embedded / scale-out on this machine: {sqlite_rate / kafka_rate:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
