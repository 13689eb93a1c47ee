"""Issue 12's scale-out "loss" over a broker that keeps its data (Tansu 0.6 on S3, moto): `meshscope
collector` acknowledges many small access-log messages (each its own Kafka batch, so its own S3 object)
while no pipeline runs, then `meshscope pipeline` starts and must store every acknowledged entry soon.

Nothing was lost in the chaos runs: the pipeline read the broker too slowly to ever catch up. Tansu's
S3 engine lists the partition and reads one object per batch on every fetch, and answers a fetch with
about what it read within the fetch's wait: with the 100 ms KafkaBus used, a backlog was read 10-20x
slower than with 500 ms, and not at all on a loaded machine (benchmarks/tansu_fetch.py). With 100 ms
this test stored 340 of the 3,000 entries in its 30 s (load 4; with 2000 ms, the README's advice for
Tansu on S3, all of them in a few seconds)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2_grpc
from meshscope.pipelines import make_store

from meshscope.settings import Settings
from tests.collector.als_messages import http_message
from tests.conftest import free_port, listening, stop_process
from tests.pipelines.conftest import durable_tansu  # noqa: F401 - fixture
from tests.stack.test_up import MESHSCOPE, _wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES, PER_MESSAGE = 600, 5  # 3,000 entries, each message its own stream: 600 batch objects


def _env(settings: Settings) -> dict[str, str]:
    names = ("data_dir", "bus", "kafka_bootstrap", "kafka_topic_prefix", "kafka_partitions",
             "kafka_fetch_wait_ms", "als_port", "zipkin_port", "otlp_grpc_port", "otlp_http_port")
    return {**os.environ, **{f"MESHSCOPE_{n.upper()}": str(getattr(settings, n)) for n in names}}


async def _send(port: int, count: int) -> None:
    """``count`` one-message streams, one after the other, as a proxy flushing small buffers would:
    each stream's OK acknowledges its entries, and each is its own small Kafka batch per partition."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = als_pb2_grpc.AccessLogServiceStub(channel)
        for m in range(count):
            message = http_message(PER_MESSAGE, start=m * PER_MESSAGE)

            async def one(message=message):
                yield message

            await stub.StreamAccessLogs(one(), timeout=60)


def _stored(settings: Settings) -> int:
    async def count() -> int:
        store = make_store(settings)
        await store.start()
        try:
            return await store.count("access")
        finally:
            await store.stop()

    return asyncio.run(count())


def test_pipeline_reads_a_backlog_of_small_batches_on_an_s3_broker(tmp_path, durable_tansu):  # noqa: F811
    settings = Settings(data_dir=tmp_path / "data", bus="kafka", kafka_bootstrap=durable_tansu.bootstrap,
                        kafka_topic_prefix=f"s3load{uuid.uuid4().hex[:8]}.", kafka_partitions=1,
                        kafka_fetch_wait_ms=2000,
                        als_port=free_port(), zipkin_port=free_port(), otlp_grpc_port=0, otlp_http_port=0)
    env = _env(settings)
    logs = {name: tmp_path / f"{name}.log" for name in ("collector", "pipeline-1")}

    def start(command: str, log: str) -> subprocess.Popen:
        return subprocess.Popen([*MESHSCOPE, command], env=env, stdout=logs[log].open("w"),
                                stderr=subprocess.STDOUT)

    collector = start("collector", "collector")
    pipeline = None
    try:
        _wait_for(lambda: listening(settings.als_port), 30, "the collector to listen")
        asyncio.run(_send(settings.als_port, MESSAGES))  # acknowledged: on the broker, no pipeline yet
        pipeline = start("pipeline", "pipeline-1")  # a pipeline back after an outage: a backlog to read
        started = time.monotonic()
        total = MESSAGES * PER_MESSAGE
        try:
            # group join ~5 s, then seconds of reading (with 100 ms fetch waits minutes)
            _wait_for(lambda: _stored(settings) >= total, 30, f"all {total} acknowledged entries stored")
        except AssertionError:
            raise AssertionError(f"{_stored(settings)} of {total} acknowledged entries stored "
                                 f"{time.monotonic() - started:.0f} s after the pipeline started; its log: "
                                 f"{logs['pipeline-1'].read_text()[-1500:]}") from None
        assert _stored(settings) == total  # and nothing twice
    finally:
        if pipeline is not None:
            stop_process(pipeline)
        stop_process(collector)

