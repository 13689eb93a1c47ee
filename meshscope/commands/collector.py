"""`meshscope collector`: receive Envoy gRPC access logs and Zipkin spans, publish them to the bus."""

from __future__ import annotations

import asyncio
import logging
import signal

from meshscope.errors import UserError
from meshscope.settings import load_settings


def add_arguments(parser) -> None:
    parser.add_argument("--host", help="address to listen on (settings.host)")
    parser.add_argument("--als-port", type=int, help="gRPC AccessLogService port (settings.als_port)")
    parser.add_argument("--zipkin-port", type=int, help="Zipkin v2 receiver, /healthz, /metrics port")
    parser.add_argument("--otlp-grpc-port", type=int, help="OTLP/gRPC port (settings.otlp_grpc_port)")
    parser.add_argument("--otlp-http-port", type=int, help="OTLP/HTTP port (settings.otlp_http_port)")
    parser.add_argument("--data-dir", help="where the disk spool lives (settings.data_dir)")


async def _serve(settings) -> None:
    from meshscope.collector import Collector
    from meshscope.pipelines import make_bus
    from meshscope.serving import guarded_http, settle_heap

    bus = make_bus(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bus.start()
    try:
        collector = Collector(settings, bus, **guarded_http(settings))
        try:
            await collector.start()
        except OSError as exc:
            raise UserError(str(exc)) from exc
        print(f"meshscope collector: access logs on {settings.host}:{collector.als_port}, "
              f"spans on http://{settings.host}:{collector.zipkin_port}/api/v2/spans, OTLP on "
              f"{settings.host}:{collector.otlp_grpc.port} (gRPC) and :{collector.otlp_http.port} (HTTP)",
              flush=True)
        settle_heap()
        await stop.wait()
        await collector.stop()
    finally:
        await bus.stop()


def run(args) -> int:
    try:
        settings = load_settings(args.config)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    changes = {k: v for k, v in (("host", args.host), ("als_port", args.als_port),
                                 ("zipkin_port", args.zipkin_port), ("otlp_grpc_port", args.otlp_grpc_port),
                                 ("otlp_http_port", args.otlp_http_port)) if v is not None}
    if args.data_dir:
        from pathlib import Path
        changes["data_dir"] = Path(args.data_dir)
    settings = settings.replace(**changes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings))
    return 0
