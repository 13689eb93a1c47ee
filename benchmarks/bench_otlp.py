"""OTLP log intake: ExportLogsServiceRequest bytes → AccessRecords → the in-process bus, one core.

Each request carries 100 log records the way Envoy's OpenTelemetry access logger (Istio's
``envoyOtelAls``) sends them: Istio's text format as the body, two attributes, the proxy in the
resource. Measured in the same run:
1. conversion alone: protobuf parse + AccessRecords (``OtlpReceiver``'s converter);
2. into the bus: ``OtlpReceiver.take_logs`` (conversion + ``Publisher.submit`` to a ``MemoryBus``
   drained by a consumer), the path the OTLP/gRPC and OTLP/HTTP handlers run;
3. the peer: the gRPC access-log path (ALS protobuf entries → AccessRecords) on as many entries, and
   ``json_format.MessageToDict`` on the same OTLP requests (what a naive receiver would do).
Target: 50,000 records/s per core for (2).

    .venv/bin/python benchmarks/bench_otlp.py [--records 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import json_format  # noqa: E402
from meshscope.collector.otlp_receiver import OtlpReceiver  # noqa: E402
from meshscope.collector.otlp_records import ExportLogsServiceRequest, LogConverter  # noqa: E402
from meshscope.collector.publisher import Publisher  # noqa: E402
from meshscope.pipelines.bus.memory import MemoryBus  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402

from benchmarks.bench_log_import import als_rate, istio_line  # noqa: E402

TARGET = 50_000
PER_REQUEST = 100


def requests(total: int) -> list[bytes]:
    out = []
    for start in range(0, total, PER_REQUEST):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        node = "sidecar~10.244.0.12~productpage-v1-abc.bookinfo~bookinfo.svc.cluster.local"
        for key, value in (("node_name", node),
                           ("cluster_name", "productpage.bookinfo"), ("log_name", "otel_envoy_accesslog")):
            rl.resource.attributes.add(key=key, value=common_pb2.AnyValue(string_value=value))
        logs = rl.scope_logs.add().log_records
        for i in range(start, min(total, start + PER_REQUEST)):
            log = logs.add()
            log.time_unix_nano = 1_714_564_800_000_000_000 + i * 1000
            log.body.string_value = istio_line(i).rstrip("\n")
            log.attributes.add(key="x-envoy-attempt-count", value=common_pb2.AnyValue(string_value="1"))
            log.attributes.add(key="x-b3-traceid", value=common_pb2.AnyValue(string_value=f"{i:016x}"))
        out.append(request.SerializeToString())
    return out


def conversion_rate(raw: list[bytes]) -> float:
    converter = LogConverter()
    t = time.perf_counter()
    n = sum(len(converter.records(ExportLogsServiceRequest.FromString(b))) for b in raw)
    assert converter.skipped == 0, converter.last_error
    return n / (time.perf_counter() - t)


async def bus_rate(raw: list[bytes], expected: int) -> float:
    bus = MemoryBus()
    await bus.start()
    consumed = 0

    async def consume() -> None:
        nonlocal consumed
        async for batch in bus.consume("access", "bench"):
            consumed += len(batch.records)
            await batch.commit()

    with tempfile.TemporaryDirectory() as tmp:
        publisher = Publisher(bus, Path(tmp) / "spool", max_inflight=1_000_000)
        await publisher.start()
        receiver = OtlpReceiver(publisher)
        reader = asyncio.create_task(consume())
        t = time.perf_counter()
        for b in raw:
            await receiver.take_logs(ExportLogsServiceRequest.FromString(b))
        while consumed < expected:
            await asyncio.sleep(0.001)
        took = time.perf_counter() - t
        reader.cancel()
        await publisher.stop()
    await bus.stop()
    return expected / took


def message_to_dict_rate(raw: list[bytes]) -> float:
    t = time.perf_counter()
    n = 0
    for b in raw[: max(1, len(raw) // 10)]:
        doc = json_format.MessageToDict(ExportLogsServiceRequest.FromString(b))
        n += len(doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"])
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    raw = requests(args.records)
    conversion_rate(raw[:20])  # warm caches
    conv = conversion_rate(raw)
    into_bus = asyncio.run(bus_rate(raw, args.records))
    als = als_rate(args.records)
    naive = message_to_dict_rate(raw)
    print(f"OTLP logs → AccessRecords (conversion):     {conv:>10,.0f} records/s")
    print(f"OTLP logs → in-process bus (take_logs):     {into_bus:>10,.0f} records/s  "
          f"(target {TARGET:,}/core: {into_bus / TARGET:.2f}x)")
    print(f"peer, gRPC ALS entries → AccessRecords:     {als:>10,.0f} entries/s  "
          f"(OTLP conversion / ALS: {conv / als:.2f}x)")
    print(f"reference, json_format.MessageToDict:       {naive:>10,.0f} records/s  "
          f"(OTLP conversion / MessageToDict: {conv / naive:.2f}x)")


if __name__ == "__main__":
    main()
