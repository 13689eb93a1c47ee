"""Access-log import throughput: Envoy access-log lines → AccessRecords (collector/access_log_lines.py).

1. Lines in Istio's default text format (distinct request ids, times and peers), one core, no I/O:
   the rate against the 100,000 lines/s target.
2. The same mix with Istio JSON lines and ``kubectl logs --prefix`` prefixes, read from a gzip file.
3. The peer measured in the same run: the collector's gRPC access-log path (protobuf entries →
   AccessRecords, ``access_entries.message_records``) on as many entries — the same records from the
   format Envoy sends over gRPC, so the ratio says what a text line costs against a protobuf entry.
4. The import as ``POST /api/logs`` runs it under ``meshscope up``: lines → records → the collector's
   publisher (intake, ``history``) → the in-process bus with its write-ahead log (fsync'ed), drained
   by a consumer: what the API acknowledges (the pipeline stores them after).
5. ``--gigabyte``: a 1 GB log streamed from a generator through ``read_lines``: the rate and the
   process's peak RSS (bounded memory: it must not grow with the file).

Rates are lines per CPU-second of this process (``time.process_time``), best of ``--repeat`` runs: they
hold on a busy machine better than wall rates (given too, for the bus path).

    .venv/bin/python benchmarks/bench_log_import.py [--lines 300000] [--repeat 3] [--gigabyte]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
from envoy.service.accesslog.v3 import als_pb2  # noqa: E402
from meshscope.collector.access_entries import LogSource, message_records  # noqa: E402
from meshscope.collector.access_log_lines import (  # noqa: E402
    ISTIO_JSON_FORMAT,
    ImportReport,
    LineParser,
    parse_lines,
    read_lines,
)

from meshscope.serving import settle_heap  # noqa: E402
from tests.collector.als_messages import http_message  # noqa: E402

TARGET = 100_000


def istio_line(i: int, day: str = "2024-05-01", hour: int = 12) -> str:
    rid = f"a8a0f1d2-{i % 65536:04x}-4567-8abc-{i:012x}"
    when = f"{day}T{hour:02d}:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
    return (f'[{when}] "GET /productpage/{i % 97} HTTP/1.1" 200 - via_upstream - "-" 0 5293 35 34 '
            '"10.0.0.1" "curl/8.0" '
            f'"{rid}" "productpage:9080" "10.244.0.12:9080" inbound|9080|| 127.0.0.6:51237 '
            f"10.244.0.12:9080 10.244.{i % 200}.{i % 250}:{30000 + i % 30000} "
            "outbound_.9080_._.productpage.default.svc.cluster.local default\n")


def json_line(i: int) -> str:
    doc = {k: None for k in ISTIO_JSON_FORMAT}
    doc.update(start_time=f"2024-05-01T13:00:{i // 1000 % 60:02d}.{i % 1000:03d}Z", method="GET", path="/j",
               protocol="HTTP/1.1", response_code=200, response_flags="-", bytes_received=0, bytes_sent=10,
               duration=3, request_id=f"b{i:035d}", authority="reviews:9080",
               downstream_remote_address=f"10.1.0.{i % 250}:{20000 + i % 40000}")
    return orjson.dumps(doc).decode() + "\n"


def parse_rate(lines: list[str]) -> tuple[float, ImportReport]:
    report = ImportReport()
    t = time.process_time()
    n = sum(len(b) for b in parse_lines(lines, LineParser(), report))
    return n / (time.process_time() - t), report


def file_rate(path: Path) -> tuple[float, ImportReport]:
    report = ImportReport()
    t = time.process_time()
    with path.open("rb") as f:
        n = sum(len(b) for b in parse_lines(read_lines(f), LineParser(), report))
    return n / (time.process_time() - t), report


async def bus_import_rate(lines: list[str]) -> tuple[float, float]:
    """(lines per CPU-second, per wall second): parsed, published with ``history`` to a MemoryBus with
    its write-ahead log in 5,000-record batches (as ``POST /api/logs``), consumed and committed."""
    from meshscope.collector.publisher import Publisher
    from meshscope.pipelines.bus.memory import MemoryBus

    with tempfile.TemporaryDirectory() as tmp:
        bus = MemoryBus(capacity=1_000_000, wal_dir=Path(tmp) / "bus")
        await bus.start()
        publisher = Publisher(bus, Path(tmp) / "spool", max_inflight=1_000_000)
        await publisher.start()
        consumed = 0

        async def consume() -> None:
            nonlocal consumed
            async for batch in bus.consume("access", "bench"):
                consumed += len(batch.records)
                await batch.commit()

        reader = asyncio.create_task(consume())
        report = ImportReport()
        t, c = time.perf_counter(), time.process_time()
        for batch in parse_lines(lines, LineParser(), report):
            await publisher.submit("access", batch, "log_import", history=True)
        while consumed < report.records:
            await asyncio.sleep(0.001)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        reader.cancel()
        await publisher.stop()
        await bus.stop()
    assert report.failed == 0 and report.records == len(lines)
    return len(lines) / cpu, len(lines) / wall


def als_rate(entries: int) -> float:
    messages = [http_message(100, node_id="bench", start=i).SerializeToString()
                for i in range(0, entries, 100)]
    source = LogSource("bench", "bench", "bench")
    t = time.process_time()
    n = 0
    for raw in messages:
        n += len(message_records(als_pb2.StreamAccessLogsMessage.FromString(raw), source))
    return n / (time.process_time() - t)


def gigabyte_run(size: int = 1024**3) -> tuple[float, int, int]:
    """Stream `size` bytes of Istio lines: (lines/s, lines, peak RSS growth in kB)."""
    block = "".join(istio_line(i) for i in range(2000)).encode()

    class Stream(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:
            k = min(self.left, len(buf), len(block))
            if k <= 0:
                return 0
            buf[:k] = block[:k]
            self.left -= k
            return k

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = ImportReport()
    t = time.perf_counter()
    lines = read_lines(io.BufferedReader(Stream(), 1 << 16))
    n = sum(len(b) for b in parse_lines(lines, LineParser(), report))
    took = time.perf_counter() - t
    return n / took, n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gigabyte", action="store_true", help="also stream a 1 GB log (bounded memory)")
    args = ap.parse_args()
    settle_heap()  # as `meshscope up` and `meshscope collector` run, for every figure below
    lines = [istio_line(i) for i in range(args.lines)]
    parse_rate(lines[:5000])  # warm caches
    text_rate, report = max((parse_rate(lines) for _ in range(args.repeat)), key=lambda r: r[0])
    assert report.failed == 0 and report.records == args.lines, report.errors[:3]
    now = time.gmtime(time.time() - 7200)  # inside the alert engine's view or not, intake keeps old times
    recent = [istio_line(i, time.strftime("%Y-%m-%d", now), now.tm_hour) for i in range(args.lines)]
    bus_cpu, bus_wall = max((asyncio.run(bus_import_rate(recent)) for _ in range(args.repeat)),
                            key=lambda r: r[0])
    mixed = [("[pod/productpage-v1-abc/istio-proxy] " + line) if i % 3 == 0 else
             json_line(i) if i % 3 == 1 else line for i, line in enumerate(lines)]
    with tempfile.TemporaryDirectory() as tmp:
        gz = Path(tmp) / "access.log.gz"
        gz.write_bytes(gzip.compress("".join(mixed).encode(), compresslevel=6))
        gz_rate, gz_report = max((file_rate(gz) for _ in range(args.repeat)), key=lambda r: r[0])
    assert gz_report.failed == 0, gz_report.errors[:3]
    peer = max(als_rate(args.lines) for _ in range(args.repeat))
    print(f"Istio text lines → AccessRecords:           {text_rate:>10,.0f} lines/CPU-s  "
          f"(target {TARGET:,}: {text_rate / TARGET:.2f}x; {1e6 / text_rate:.1f} µs/line)")
    print(f"mixed text/JSON/kubectl-prefixed, gzip file: {gz_rate:>10,.0f} lines/CPU-s  "
          f"{dict(gz_report.by_format)}")
    print(f"import → publisher → bus + WAL (acked):      {bus_cpu:>10,.0f} lines/CPU-s  "
          f"(target {TARGET:,}: {bus_cpu / TARGET:.2f}x); wall {bus_wall:,.0f}/s")
    print(f"peer, gRPC ALS protobuf entries → records:   {peer:>10,.0f} entries/CPU-s")
    print(f"ratio text line / protobuf entry:            {text_rate / peer:.2f}x; "
          f"acknowledged import / protobuf entry {bus_cpu / peer:.2f}x; load {os.getloadavg()[0]:.2f}")
    if args.gigabyte:
        rate, n, grown = gigabyte_run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"1 GB streamed: {n:,} lines at {rate:,.0f} lines/s; peak RSS grew by {grown / 1024:.1f} MB "
              f"(process peak {peak:.0f} MB, set by the in-memory phases above)")


if __name__ == "__main__":
    main()
