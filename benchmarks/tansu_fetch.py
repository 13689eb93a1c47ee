"""Issue 12's "lost" entries on an S3-backed broker, reduced: how fast a consumer reads Tansu 0.6 on S3.

In the chaos runs with ``--broker-storage s3`` the acknowledged entries stayed in the broker; the
pipeline stopped reading them. Tansu 0.6's S3 engine lists the partition's objects and GETs one object
per batch on every fetch, and answers a fetch with about what it read within the fetch's wait
(``fetch_max_wait_ms``). With the 100 ms KafkaBus used, a consumer read a backlog 10-20x slower than
with 500 ms, and on a loaded machine (moto's S3 server is Python) not at all: a fetch never got past the
listing. Small batches (one object each) make it worse.

This writes ``--batches`` batches of ``--records`` records to one partition of a Tansu broker on moto's
S3 server (as the chaos run's storage), then reads them all from the start (for at most ``--seconds``)
with each fetch wait and prints the rates and their ratios, beside what Tansu in memory serves.

    .venv/bin/python benchmarks/tansu_fetch.py [--batches 600] [--records 10] [--seconds 30] [--waits 100,500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.pipelines.kafka_broker import S3Server, TansuBroker  # noqa: E402


async def fill(bootstrap: str, topic: str, batches: int, records: int) -> float:
    """One acknowledged batch (one object in Tansu's S3 engine) per round trip; the produce rate."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    start = time.monotonic()
    try:
        for _ in range(batches):
            futures = [await producer.send(topic, value=b"x" * 200, partition=0) for _ in range(records)]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return batches * records / (time.monotonic() - start)


async def read_rate(bootstrap: str, topic: str, total: int, wait_ms: int, seconds: float) -> float:
    """Records per second a consumer reading ``total`` records from offset 0 gets, fetching with
    ``wait_ms`` (it stops after ``seconds``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=wait_ms)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    n, start = 0, time.monotonic()
    try:
        while n < total and time.monotonic() - start < seconds:
            got = await consumer.getmany(tp, timeout_ms=200)
            n += sum(len(v) for v in got.values())
    finally:
        await consumer.stop()
    return n / (time.monotonic() - start)


async def run(args, work: Path) -> None:
    s3 = S3Server(free_port(), work / "s3.log")
    s3.start()
    try:
        for name, storage in (("S3 (moto)", s3), ("memory", None)):
            broker = TansuBroker(free_port(), work / f"tansu-{name[:2]}.log", s3=storage)
            broker.start()
            try:
                produced = await fill(broker.bootstrap, "t", args.batches, args.records)
                total = args.batches * args.records
                rates = {wait: await read_rate(broker.bootstrap, "t", total, wait, args.seconds)
                         for wait in args.waits}
            finally:
                broker.stop()
            first, *others = args.waits
            reads = ", ".join(f"{rates[w]:,.0f} with {w} ms ({rates[w] / max(rates[first], 1e-9):.1f}x)"
                              for w in others)
            print(f"Tansu on {name}: {args.batches} batches of {args.records} records, produced at "
                  f"{produced:,.0f} records/s; a consumer reads {rates[first]:,.0f} records/s with "
                  f"{first} ms fetch waits, {reads}", flush=True)
    finally:
        s3.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--records", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0, help="give up reading after this long")
    parser.add_argument("--waits", default="100,500", help="fetch waits (ms) to compare, the first the base")
    args = parser.parse_args()
    args.waits = [int(w) for w in args.waits.split(",")]
    with tempfile.TemporaryDirectory(prefix="tansu-fetch-") as work:
        asyncio.run(run(args, Path(work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
