"""The bundled Envoy at its maximum request rate (wrk on loopback) → collector → bus → SQLite store.

Loses nothing: records stored == requests Envoy handled (downstream_rq_total), and Envoy's
dropped-log counter stays 0.
Two runs: a direct-response route (Envoy alone sets the pace: the hardest case for the collector)
and a route to the Python demo upstream. Prints, per run, wrk's request rate, Envoy's completed
requests, logs written/dropped, the collector's received count and the store's count, and the
ratio stored / requests (must be 1.000).

    .venv/bin/python benchmarks/bench_collector_envoy.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.server import Collector  # noqa: E402
from meshscope.settings import Settings  # noqa: E402
from pipelines.indexer import Pipeline  # noqa: E402
from pipelines.wiring import make_bus, make_store  # noqa: E402
from proxy.demo_upstream import DemoUpstream  # noqa: E402
from proxy.launcher import EnvoyProcess  # noqa: E402
from tests.collector.envoy_lab import APP_HOST, lab_bootstrap, lab_routes, listener_port  # noqa: E402
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


async def one_run(label: str, path: str, args, collector: Collector, store, envoy: EnvoyProcess,
                  port: int, before: dict) -> bool:
    received_before = collector.metrics.received.labels("http")._value.get()
    stored_before = await store.count("access")
    done, rate = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{port}{path}", args.seconds,
                                         args.connections)
    # let Envoy flush its logger buffer and the pipeline catch up, until the store stops growing
    completed = written = dropped = 0
    stored = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        stats = await asyncio.to_thread(envoy.admin.stats)
        # every request Envoy took logs one entry, also those wrk abandoned in flight at its end
        # (downstream_rq_completed leaves those out)
        completed = int(stats.get("http.ingress.downstream_rq_total", 0)) - before["completed"]
        written = int(stats.get("access_logs.grpc_access_log.logs_written", 0)) - before["written"]
        dropped = int(stats.get("access_logs.grpc_access_log.logs_dropped", 0)) - before["dropped"]
        now = await store.count("access") - stored_before
        if now == stored and now >= completed:
            break
        stored = now
    before.update(completed=completed + before["completed"], written=written + before["written"],
                  dropped=dropped + before["dropped"])
    received = int(collector.metrics.received.labels("http")._value.get() - received_before)
    ok = stored == completed and dropped == 0
    print(f"{label:<28} wrk {done:>8,} req at {rate:>9,.0f} req/s | Envoy requests {completed:>8,} "
          f"written {written:>8,} dropped {dropped} | collector received {received:>8,} | "
          f"stored {stored:>8,} | stored/requests {stored / max(completed, 1):.4f} {'OK' if ok else 'LOSS'}")
    return ok


async def main_async(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), als_port=free_port(), zipkin_port=free_port())
        bus, store = make_bus(settings), make_store(settings)
        await bus.start()
        await store.start()
        try:
            async with Collector(settings, bus) as collector, Pipeline(settings, bus, store), \
                    DemoUpstream(port=free_port()) as upstream:
                routes = lab_routes(upstream.port, Path(tmp) / "certs")
                bootstrap = lab_bootstrap(routes, collector.als_port, collector.zipkin_port)
                add_direct_route(bootstrap)
                # at thousands of requests/s, 5 spans per POST (the proxy's setting, for a prompt live
                # view) overflows Envoy's own Zipkin cluster; batch them as a production config would
                batching = {"tracing.zipkin.min_flush_spans": args.spans_per_post}
                bootstrap["layered_runtime"]["layers"].append({"name": "bench", "static_layer": batching})
                async with EnvoyProcess(bootstrap, concurrency=args.concurrency) as envoy:
                    port = listener_port(routes, "ingress")
                    before = {"completed": 0, "written": 0, "dropped": 0}
                    print(f"Envoy --concurrency {args.concurrency}, wrk -t1 -c{args.connections} "
                          f"-d{args.seconds}s, collector + indexer + SQLite in one Python process")
                    ok = await one_run("direct response (Envoy)", "/direct", args, collector, store, envoy,
                                       port, before)
                    ok &= await one_run("demo upstream (Python)", "/status/200", args, collector, store,
                                        envoy, port, before)
                    loss = await collector.loss([envoy.admin_address])
                    print("loss account:", loss[0].to_dict())
                    stats = await asyncio.to_thread(envoy.admin.stats, r"^tracing\.zipkin\.")
                    spans = collector.metrics.received.labels("zipkin_json")._value.get()
                    print(f"spans: Envoy sent {int(stats.get('tracing.zipkin.spans_sent', 0)):,} "
                          f"(reports failed {int(stats.get('tracing.zipkin.reports_failed', 0))}, "
                          f"dropped {int(stats.get('tracing.zipkin.reports_dropped', 0))}), "
                          f"collector received {int(spans):,}")
                    from prometheus_client import generate_latest
                    rejected = [ln for ln in generate_latest(collector.metrics.registry).decode().splitlines()
                                if ln.startswith("meshscope_collector_rejected_total")]
                    print("collector rejected:", rejected or "none")
        finally:
            await store.stop()
            await bus.stop()
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads")
    parser.add_argument("--spans-per-post", type=int, default=500,
                        help="Envoy's tracing.zipkin.min_flush_spans")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("needs wrk on PATH (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
