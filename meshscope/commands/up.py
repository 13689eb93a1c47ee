"""`meshscope up`: the whole stack on loopback in one process group, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from meshscope.errors import UserError
from meshscope.settings import Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traffic", action="store_true",
                        help="drive demo traffic through the proxy and upload the sample capture")
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="scale-out: use this Kafka cluster as the bus")
    parser.add_argument("--elasticsearch", metavar="URL",
                        help="scale-out: use this Elasticsearch as the store")
    parser.add_argument("--data-dir",
                        help="where the embedded store, spool and uploads live (default ./data)")
    parser.add_argument("--no-proxy", action="store_true",
                        help="do not start the bundled Envoy and demo upstream")
    parser.add_argument("--repair", action="store_true",
                        help="the SQLite store failed its integrity check: keep it aside, copy what is "
                        "readable into a fresh one, then start")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop by itself after this long (default: run until stopped)")


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        settings = load_settings(args.config)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    changes: dict[str, object] = {}
    if args.kafka:
        changes.update(bus="kafka", kafka_bootstrap=args.kafka)
    if args.elasticsearch:
        changes.update(store="elasticsearch", elasticsearch_url=args.elasticsearch)
    if args.data_dir:
        from pathlib import Path

        changes["data_dir"] = Path(args.data_dir)
    return settings.replace(**changes) if changes else settings


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per demo request is noise
    settings = settings_from(args)
    if args.repair and settings.store == "sqlite" and settings.db_path.exists():
        from meshscope.pipelines import repair_sqlite

        print(f"meshscope: {repair_sqlite(settings.db_path)}", flush=True)
    return asyncio.run(_up(settings, args))


async def _up(settings: Settings, args: argparse.Namespace) -> int:
    from meshscope.serving import settle_heap
    from meshscope.stack import Stack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = Stack(settings, with_proxy=not args.no_proxy)
    try:
        await stack.start()
    except OSError as exc:
        raise UserError(f"cannot start the stack: {exc}") from exc
    demo: asyncio.Task | None = None
    try:
        _print_urls(stack, with_proxy=not args.no_proxy)
        if args.traffic and not args.no_proxy:
            await _first_traffic(stack)
            demo = asyncio.create_task(_bursts(stack), name="demo-bursts")
        print("meshscope is up; Ctrl-C stops it.", flush=True)
        settle_heap()
        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except TimeoutError:
            pass
    finally:
        if demo is not None:
            demo.cancel()
        print("meshscope: stopping …", file=sys.stderr, flush=True)
        await stack.stop()
        print("meshscope: stopped", file=sys.stderr, flush=True)
    return 0


def _print_urls(stack, *, with_proxy: bool) -> None:
    u = stack.urls
    lines = [f"web page and API   {u.api}/", f"API docs           {u.api}/docs",
             f"Zipkin receiver    {u.zipkin}", f"access-log gRPC    {u.access_log_grpc}"]
    if with_proxy:
        lines += [f"proxy (Envoy)      {u.proxy}", f"Envoy admin        {u.envoy_admin}",
                  f"demo upstream      {u.demo_upstream}"]
    print("\n".join(lines), flush=True)


async def _first_traffic(stack) -> None:
    """Traced requests, retries and timeouts at once, and the sample capture upload."""
    from meshscope.demo_traffic import drive, upload_sample

    report = await drive(stack.urls.proxy)
    print(f"demo traffic: {report.summary()}", flush=True)
    for scenario, rid in report.request_ids.items():
        print(f"  {scenario:10s} meshscope trace {rid}   {stack.urls.api}/api/traces/{rid}", flush=True)
    token = stack.settings.api_token
    upload = await upload_sample(stack.urls.api, {"Authorization": f"Bearer {token}"} if token else None)
    if upload:
        print(f"sample capture: {stack.urls.api}/api/pcaps/{upload}/graph.svg", flush=True)


async def _bursts(stack) -> None:
    """A steady trickle while the spike rules watch their reference window (ElastAlert's rule: no
    spike against a window nobody watched), then a 5xx burst and a retry burst."""
    from meshscope.demo_traffic import BURSTS, drive, trickle
    from meshscope.pipelines import load_rules

    spikes = [r.timeframe for r in load_rules(stack.settings.alert_rules) if r.type == "spike"]
    wait = max(spikes, default=0.0) + 2.0
    print(f"demo traffic: a steady trickle for {wait:.0f} s (the alert rules' reference window), "
          "then a 5xx burst and a retry burst", flush=True)
    await trickle(stack.urls.proxy, wait)
    report = await drive(stack.urls.proxy, BURSTS)
    print(f"demo bursts sent: {report.summary()}; alerts fire within seconds: meshscope alerts, "
          f"{stack.urls.api}/api/alerts", flush=True)
