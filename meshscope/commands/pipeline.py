"""`meshscope pipeline`: run the indexer (bus → store) and the alert engine until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from meshscope.errors import UserError
from meshscope.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", help="alert rules YAML (default: settings.alert_rules, else bundled)")
    parser.add_argument("--check-rules", action="store_true", help="validate the alert rules and exit")
    parser.add_argument("--role", choices=("all", "index", "alert"), default="all",
                        help="all (default); or split: many `index` workers plus one `alert` worker")
    parser.add_argument("--group", help="bus consumer group (default: by role)")
    parser.add_argument("--batch", type=int, default=5000, help="records per store write (default 5000)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus metrics on this port of settings.host (default: off)")


def run(args: argparse.Namespace) -> int:
    from meshscope.pipelines import load_rules

    settings = load_settings(args.config)
    if args.rules:
        settings = settings.replace(alert_rules=args.rules)
    rules = load_rules(settings.alert_rules)
    if args.check_rules:
        print(f"{len(rules)} rule(s) OK: {', '.join(r.name for r in rules)}")
        return 0
    if settings.bus == "memory":
        raise UserError("the in-process bus only exists inside `meshscope up`; "
                        "run `meshscope pipeline` with bus: kafka (MESHSCOPE_BUS=kafka)")
    if args.batch < 1:
        raise UserError("--batch must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr=settings.host)
        except OSError as exc:
            raise UserError(f"cannot serve metrics on {settings.host}:{args.metrics_port}: {exc}") from exc
    return asyncio.run(_serve(settings, rules, args.role, args.group, args.batch))


async def _serve(settings, rules, role: str, group: str | None, batch: int) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until a pipeline task dies (exit 1)."""
    from meshscope.pipelines import BusUnavailable, Pipeline, StoreUnavailable, make_bus, make_store

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log = logging.getLogger("meshscope.pipeline")
    bus, store = make_bus(settings), make_store(settings)
    while True:
        try:
            await store.start()
            break
        except StoreUnavailable as exc:
            if settings.store != "elasticsearch":
                raise UserError(f"store unavailable: {exc}") from exc
            # a search cluster that is slow or down at start is waited for, as the broker is: exiting
            # would leave what the bus holds unindexed until someone restarts the pipeline
            log.warning("store not reachable yet, waiting for it: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
            if stop.is_set():
                await store.stop()
                return 0
    try:
        await bus.start()
    except BusUnavailable as exc:  # the consumers wait for the broker; say so and go on
        log.warning("bus not reachable yet, waiting for it: %s", exc)
    pipeline = Pipeline(settings, bus, store, rules=rules, group=group, max_batch=batch, role=role)
    try:
        await pipeline.start()
        log.info("%s: %s → %s with %d alert rule(s)", {"all": "indexing and alerting", "index": "indexing",
                 "alert": "alerting"}[role], settings.bus, settings.store, len(pipeline.engine.rules))
        stopping = asyncio.ensure_future(stop.wait())
        crash = asyncio.ensure_future(pipeline.crashed())
        await asyncio.wait([stopping, crash], return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopping, crash):
            waiter.cancel()
        if crash.done() and not crash.cancelled():
            log.error("pipeline stopped on an error: %r", crash.result())
            return 1
        return 0
    finally:
        # each part's stop timed: a stop that waits (a consumer group still joining) shows where
        took = []
        for name, part in (("pipeline", pipeline), ("bus", bus), ("store", store)):
            t0 = loop.time()
            await part.stop()
            took.append(f"{name} {loop.time() - t0:.1f} s")
        log.info("stopped: %s", ", ".join(took))
