"""Store speed: SQLite bulk writes, request-id look-ups in a 10,000,000-record SQLite file, and the
same writes and look-ups against the Elasticsearch API (osmem-server on loopback) for comparison.

1. SQLite bulk write: SqliteStore.write() in batches (as the indexer calls it) into a fresh file;
   records/s against the 50,000 records/s target.
2. SQLite look-up: a file holding 10 M access records (5 M requests x 2 hops, each hop with a
   different Envoy sampling digit in x-request-id), built once in big executemany batches with
   the indexes created afterwards and cached under benchmarks/out/; p50/p99 of
   access_by_request_id() over random ids (hits asked with yet another sampling digit, and
   misses) against the 20 ms p99 target.
3. Elasticsearch API (osmem-server, in memory, behind the test bridge): the same write() batches
   and look-ups; ratios SQLite / osmem from this run.

    .venv/bin/python benchmarks/bench_store.py [--write-records 500000] [--lookup-records 10000000]
        [--lookups 2000] [--es-records 20000] [--no-es] [--rebuild]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshscope.pipelines.store.base import Store  # noqa: E402
from meshscope.pipelines.store.sqlite import ACCESS_COLUMNS, TABLES, SqliteStore, _insert, access_row, connect  # noqa: E402

from meshscope.model import AccessRecord  # noqa: E402
from meshscope.settings import Settings  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
WRITE_TARGET = 50_000
LOOKUP_P99_TARGET_MS = 20.0
CLUSTERS = ("outbound|8080||webapp", "outbound|3000||catalog", "outbound|9000||cart", "outbound|80||ext")
GOLDEN = 0x9E3779B97F4A7C15
SCHEMA_VERSION = 2  # of pipelines/store/sqlite.py's tables: a cached look-up file of another is rebuilt


def request_id(n: int, digit: str = "4") -> str:
    """A UUID-shaped id, spread over the key space, unique per n; digit is the version nibble."""
    h = f"{(n * GOLDEN) & (2**64 - 1):016x}"
    return f"{h[:8]}-{h[8:12]}-{digit}{h[12:15]}-a{h[15]}00-{n:012x}"


def record(i: int, t0: float) -> AccessRecord:
    """Record i: hop i % 2 (gateway, sidecar) of request i // 2, one request every 100 µs."""
    n, hop = divmod(i, 2)
    return AccessRecord(
        start_time=t0 + n * 1e-4 + hop * 1e-3, duration_ms=12.5, log_name="als",
        node_id=("gateway-0", "webapp-sidecar")[hop], node_cluster=("istio-ingressgateway", "webapp")[hop],
        request_id=request_id(n, "9b"[hop]),
        trace_id=f"{(n * GOLDEN) & (2**64 - 1):016x}{n:016x}", span_id=f"{n:016x}", sampled="1", method="GET",
        scheme="http", authority="shop.example", path=f"/item/{n % 5000}", route_name="default",
        user_agent="curl/8.5.0", x_forwarded_for="172.18.0.1", response_code=503 if n % 50 == 0 else 200,
        response_flags=["URX"] if n % 500 == 0 else [], attempt_count=1 + (n % 100 == 0),
        upstream_cluster=CLUSTERS[n % 4], upstream_host="10.10.0.9:8080",
        downstream_remote=f"172.18.0.1:{n % 60000}",
        downstream_local="10.10.0.6:8080", upstream_local=f"10.10.0.6:{n % 60000}", request_bytes=0,
        response_bytes=1024, upstream_duration_ms=11.0,
    )


def percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


async def write_rate(store: Store, count: int, batch: int, t0: float) -> float:
    """records/s of store.write(), timing only the writes (records are made before each call)."""
    spent = 0.0
    for start in range(0, count, batch):
        records = [record(i, t0) for i in range(start, min(start + batch, count))]
        began = time.perf_counter()
        await store.write(records)
        spent += time.perf_counter() - began
    return count / spent


async def lookup_latency(store: Store, requests: int, lookups: int) -> tuple[float, float, int]:
    """p50 and p99 (ms) of access_by_request_id over random ids, a fifth of them misses."""
    rng = random.Random(7)
    samples, found = [], 0
    for k in range(lookups):
        n = rng.randrange(requests) if k % 5 else requests + rng.randrange(10**9)  # misses never stored
        rid = request_id(n, rng.choice("4ab"))
        began = time.perf_counter()
        hits = await store.access_by_request_id(rid)
        samples.append((time.perf_counter() - began) * 1000)
        found += len(hits)
    p50, p99 = percentiles(samples)
    return p50, p99, found


def build_lookup_db(path: Path, count: int, make: Callable[[int, float], AccessRecord] = record) -> None:
    """Bulk-load count records (``make(i, t0)``) without indexes (the store creates them at start, much
    faster once than row by row), in one connection with big transactions."""
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    conn = connect(str(tmp))
    conn.execute("PRAGMA synchronous=OFF")  # a scratch file until it is renamed into place
    conn.execute("PRAGMA wal_autocheckpoint=20000")  # no WalCheckpointer runs here
    conn.executescript(TABLES)
    insert = _insert("access", ACCESS_COLUMNS)
    t0, began, batch = 1.7e9, time.perf_counter(), 100_000
    gc.disable()
    try:
        for start in range(0, count, batch):
            rows = [access_row(make(i, t0)) for i in range(start, min(start + batch, count))]
            conn.execute("BEGIN")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
            if (start // batch) % 10 == 9:
                done = start + len(rows)
                print(f"  built {done:,} records, {done / (time.perf_counter() - began):,.0f}/s", flush=True)
    finally:
        gc.enable()
    conn.execute(
        "INSERT INTO node SELECT node_id, max(node_cluster), count(*), min(start_time), max(start_time)"
        " FROM access GROUP BY node_id"
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)
    print(f"  loaded {count:,} rows in {time.perf_counter() - began:.0f} s")


async def bench_sqlite(args: argparse.Namespace) -> dict[str, float]:
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        async with SqliteStore(Settings(data_dir=Path(tmp))) as store:
            res["sqlite_write"] = await write_rate(store, args.write_records, args.batch, time.time())
    print(f"SQLite bulk write: {res['sqlite_write']:,.0f} records/s "
          f"({args.write_records:,} records, batches of {args.batch:,}; target {WRITE_TARGET:,}/s: "
          f"{'met' if res['sqlite_write'] >= WRITE_TARGET else 'NOT met'})")

    db = OUT / f"lookup-{args.lookup_records}-v{SCHEMA_VERSION}.db"
    if args.rebuild or not db.exists():
        print(f"building {db} ({args.lookup_records:,} records) ...", flush=True)
        build_lookup_db(db, args.lookup_records)
    began = time.perf_counter()
    async with SqliteStore(Settings(sqlite_path=db)) as store:  # creates any missing index
        print(f"  opened (indexes ready) in {time.perf_counter() - began:.1f} s")
        stored = await store.count("access")
        p50, p99, found = await lookup_latency(store, stored // 2, args.lookups)
    res["sqlite_p50"], res["sqlite_p99"] = p50, p99
    print(f"SQLite request-id look-up in {stored:,} records: p50 {p50:.3f} ms, p99 {p99:.3f} ms over "
          f"{args.lookups:,} look-ups ({found:,} records found; target p99 < {LOOKUP_P99_TARGET_MS:g} ms: "
          f"{'met' if p99 < LOOKUP_P99_TARGET_MS else 'NOT met'}; file {db.stat().st_size / 2**30:.1f} GiB)")
    return res


async def bench_osmem(args: argparse.Namespace, res: dict[str, float]) -> None:
    from meshscope.pipelines.store.elasticsearch import ElasticsearchStore

    from tests.pipelines.search_server import SearchServer

    server = SearchServer().start()
    try:
        settings = Settings(elasticsearch_url=server.url, elasticsearch_index_prefix="bench-")
        async with ElasticsearchStore(settings) as store:
            rate = await write_rate(store, args.es_records, args.batch, time.time())
            stored = await store.count("access")
            p50, p99, found = await lookup_latency(store, stored // 2, min(args.lookups, 1000))
    finally:
        server.close()
    print(f"osmem (Elasticsearch API) bulk write: {rate:,.0f} records/s ({args.es_records:,} records)")
    print(f"osmem request-id look-up in {stored:,} records: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
          f"({found:,} found)")
    print(f"ratio: SQLite writes {res['sqlite_write'] / rate:.1f}x the records/s of osmem; "
          f"osmem's look-up p99 is {p99 / res['sqlite_p99']:.1f}x SQLite's "
          f"(osmem holding {stored:,} records, SQLite {args.lookup_records:,})")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-records", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--lookup-records", type=int, default=10_000_000)
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--es-records", type=int, default=20_000)
    ap.add_argument("--no-es", action="store_true")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached look-up file")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    # the machine may be shared: say how busy it was, the rates depend on it
    print("load average at start: {:.2f} {:.2f} {:.2f} on {} cores".format(*os.getloadavg(), os.cpu_count()))
    res = await bench_sqlite(args)
    if not args.no_es:
        await bench_osmem(args, res)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except sqlite3.Error as exc:
        sys.exit(f"bench_store: {exc}")
