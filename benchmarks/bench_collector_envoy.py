"""The bundled Envoy at its maximum request rate (wrk on loopback) → collector → bus (→ SQLite store).

Loses nothing: access records == requests Envoy handled (downstream_rq_total), and Envoy's
dropped-log counter stays 0. Two routes: a direct response (Envoy alone sets the pace: the hardest
case for the collector) and the Python demo upstream. Two sinks, each its own run:

- ``bus``: the collector and an in-process bus drained by a counting consumer (the collector's job);
- ``store``: the whole embedded stack — collector, indexer with alert engine and SQLite — in one
  Python process, as ``meshscope up`` runs it.

Every request is traced; Envoy posts its spans as proto3 by default (``--zipkin json`` is the proxy's
default encoding, which Envoy serialises so slowly that it, not the collector, caps the request rate
near 2,500/s here). Prints per run and route: wrk's rate, Envoy's requests, logs written/dropped,
the collector's received count, the sink's count and the ratio count / requests (1.0000 = nothing lost).

    .venv/bin/python benchmarks/bench_collector_envoy.py [--seconds 10] [--sinks bus,store]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshscope.collector.server import Collector  # noqa: E402
from meshscope.pipelines.indexer import Pipeline  # noqa: E402
from meshscope.pipelines.wiring import make_bus, make_store  # noqa: E402
from meshscope.proxy.demo_upstream import DemoUpstream  # noqa: E402
from meshscope.proxy.launcher import EnvoyProcess  # noqa: E402
from meshscope.proxy.loss import account  # noqa: E402

from meshscope.settings import Settings  # noqa: E402
from tests.collector.envoy_lab import (  # noqa: E402
    APP_HOST,
    lab_bootstrap,
    lab_routes,
    listener_port,
    set_everywhere,
)
from tests.conftest import free_port  # noqa: E402


def add_direct_route(bootstrap: dict) -> None:
    """Put a direct-response route (/direct → 200 "ok") first in every virtual host for APP_HOST."""
    def walk(node: object) -> None:
        if isinstance(node, dict):
            if APP_HOST in node.get("domains", []) and isinstance(node.get("routes"), list):
                direct = {"status": 200, "body": {"inline_string": "ok"}}
                node["routes"].insert(0, {"match": {"prefix": "/direct"}, "direct_response": direct})
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(bootstrap)


def run_wrk(url: str, seconds: int, connections: int) -> tuple[int, float]:
    """(requests completed, requests/s) as wrk reports them."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"Host: {APP_HOST}", url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    done = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return done, rate


class BusCounter:
    """The `bus` sink: counts access records consumed (and committed) from the in-process bus."""

    def __init__(self, bus) -> None:
        self.n = 0
        self._task = asyncio.create_task(self._run(bus))

    async def _run(self, bus) -> None:
        async for batch in bus.consume("access", "bench"):
            self.n += len(batch.records)
            await batch.commit()

    async def count(self) -> int:
        return self.n

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class StoreCounter:
    """The `store` sink: the indexer (with its alert engine) writing to SQLite; counts stored records."""

    def __init__(self, settings: Settings, bus, store) -> None:
        self.store = store
        self.pipeline = Pipeline(settings, bus, store)

    async def count(self) -> int:
        return await self.store.count("access")

    async def close(self) -> None:
        await self.pipeline.stop()


class MessageRecorder:
    """Keeps the raw StreamAccessLogsMessages the collector's access-log service reads, as Envoy sent
    them (what bench_collector.py replays). It wraps the stream handed to the unchanged servicer:
    one list append per message, nothing per entry."""

    def __init__(self, collector: Collector) -> None:
        self.messages: list[bytes] = []
        servicer = collector.servicer
        handle = servicer.stream_access_logs

        async def recorded(requests, context):
            async def tee():
                async for raw in requests:
                    self.messages.append(raw)
                    yield raw
            return await handle(tee(), context)

        servicer.stream_access_logs = recorded  # before start(): handler() registers this one


@dataclass
class Stage:
    """One wrk run as the collector's process saw it."""

    ok: bool
    rate: float  # wrk's requests/s
    received: int  # access entries the collector received
    cpu: float  # CPU-seconds of this whole Python process (collector, bus, sink) over the stage
    messages: list[bytes] = field(default_factory=list)  # what Envoy sent in it (when recorded)


async def measure(label: str, path: str, args, collector: Collector, sink, envoy: EnvoyProcess,
                  port: int, before: dict) -> Stage:
    """One wrk run on `path`; wait until the sink stops growing; print and check the counts."""
    received_before = collector.metrics.received.labels("http")._value.get()
    sunk_before = await sink.count()
    cpu0 = time.process_time()
    done, rate = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{port}{path}", args.seconds,
                                         args.connections)
    requests = written = dropped = 0
    sunk = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)  # Envoy flushes its logger buffer; the sink catches up
        stats = await asyncio.to_thread(envoy.admin.stats)
        # every request Envoy took logs one entry, also those wrk abandoned in flight at its end
        # (downstream_rq_completed leaves those out)
        requests = int(stats.get("http.ingress.downstream_rq_total", 0)) - before["requests"]
        written = int(stats.get("access_logs.grpc_access_log.logs_written", 0)) - before["written"]
        dropped = int(stats.get("access_logs.grpc_access_log.logs_dropped", 0)) - before["dropped"]
        now = await sink.count() - sunk_before
        if now == sunk and now >= written:
            break
        sunk = now
    before.update(requests=before["requests"] + requests, written=before["written"] + written,
                  dropped=before["dropped"] + dropped)
    cpu = time.process_time() - cpu0
    received = int(collector.metrics.received.labels("http")._value.get() - received_before)
    ok = sunk == requests and dropped == 0
    print(f"  {label:<24} wrk {done:>8,} req at {rate:>7,.0f} req/s | Envoy requests {requests:>8,} "
          f"written {written:>8,} dropped {dropped:>4} | collector received {received:>8,} | "
          f"{args.sink} {sunk:>8,} | {args.sink}/requests {sunk / max(requests, 1):.4f} "
          f"{'OK' if ok else 'LOSS'}")
    return Stage(ok, rate, received, cpu)


async def run_sink(args, record: bool = False) -> tuple[bool, Stage]:
    """Both routes through one sink: (nothing lost, the direct-response stage: Envoy's rate, and with
    `record` the messages Envoy sent in it)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), als_port=free_port(), zipkin_port=free_port(),
                        otlp_grpc_port=0, otlp_http_port=0)
        bus = make_bus(settings)
        store = make_store(settings) if args.sink == "store" else None
        await bus.start()
        if store is not None:
            await store.start()
        try:
            collector = Collector(settings, bus)
            recorder = MessageRecorder(collector) if record else None
            async with collector, DemoUpstream(port=free_port()) as upstream:
                sink = BusCounter(bus) if store is None else StoreCounter(settings, bus, store)
                if isinstance(sink, StoreCounter):
                    await sink.pipeline.start()
                routes = lab_routes(upstream.port, Path(tmp) / "certs")
                bootstrap = lab_bootstrap(routes, collector.als_port, collector.zipkin_port,
                                          zipkin=args.zipkin)
                add_direct_route(bootstrap)
                if args.trace_percent < 100:
                    set_everywhere(bootstrap, "random_sampling", {"value": args.trace_percent})
                # at thousands of requests/s, 5 spans per POST (the proxy's setting, for a prompt live
                # view) overflows Envoy's own Zipkin cluster; batch them as a production config would
                batching = {"tracing.zipkin.min_flush_spans": args.spans_per_post}
                bootstrap["layered_runtime"]["layers"].append({"name": "bench", "static_layer": batching})
                try:
                    async with EnvoyProcess(bootstrap, concurrency=args.concurrency) as envoy:
                        port = listener_port(routes, "ingress")
                        before = {"requests": 0, "written": 0, "dropped": 0}
                        direct = await measure("direct response (Envoy)", "/direct", args, collector,
                                               sink, envoy, port, before)
                        if recorder is not None:
                            direct.messages = recorder.messages[:]
                        ok = direct.ok & (await measure("demo upstream (Python)", "/status/200", args,
                                                        collector, sink, envoy, port, before)).ok
                        (loss,) = await account([envoy.admin_address], collector.servicer.arrived)
                        stats = await asyncio.to_thread(envoy.admin.stats, r"^tracing\.zipkin\.")
                finally:
                    await sink.close()
                spans = collector.metrics.received.labels(f"zipkin_{args.zipkin}")._value.get()
                print(f"  loss account: written {loss.written:,} dropped {loss.dropped} arrived "
                      f"{loss.arrived:,} gap {loss.gap} | spans: Envoy sent "
                      f"{int(stats.get('tracing.zipkin.spans_sent', 0)):,} (reports failed "
                      f"{int(stats.get('tracing.zipkin.reports_failed', 0))}, dropped "
                      f"{int(stats.get('tracing.zipkin.reports_dropped', 0))}), collector received "
                      f"{int(spans):,} | collector spooled "
                      f"{int(collector.metrics.spooled.labels('http')._value.get()):,}")
        finally:
            if store is not None:
                await store.stop()
            await bus.stop()
    return ok, direct


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """How Envoy is driven (shared with bench_collector.py, which runs the bus sink for its ratio)."""
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads")
    parser.add_argument("--trace-percent", type=float, default=100.0,
                        help="share of requests Envoy traces (spans load the collector and the store too)")
    parser.add_argument("--zipkin", choices=["proto", "json"], default="proto",
                        help="how Envoy posts spans (its JSON encoding is slow: it caps the request rate)")
    parser.add_argument("--spans-per-post", type=int, default=500,
                        help="Envoy's tracing.zipkin.min_flush_spans")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--sinks", default="bus,store", help="comma-separated: bus, store")
    add_arguments(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("needs wrk on PATH (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    ok = True
    for sink in [s.strip() for s in args.sinks.split(",") if s.strip()]:
        args.sink = sink
        print(f"sink {sink}: Envoy --concurrency {args.concurrency}, wrk -t1 -c{args.connections} "
              f"-d{args.seconds}s, {args.trace_percent:g}% traced (Zipkin {args.zipkin}), all in one Python "
              f"process but Envoy and wrk")
        ok &= asyncio.run(run_sink(args))[0]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
