"""`meshscope api`: serve the HTTP API and web page (uvicorn) over the configured store."""

from __future__ import annotations

import argparse

from meshscope.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: settings host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: settings api_port, 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from meshscope.api import create_app

    settings = load_settings(args.config)
    if args.host:
        settings = settings.replace(host=args.host)
    if args.port:
        settings = settings.replace(api_port=args.port)
    app = create_app(settings)  # refuses (UserError) to listen beyond loopback without a token
    from meshscope.slow_clients import quiet_disconnects, uvicorn_options

    uvicorn.run(quiet_disconnects(app), host=settings.host, port=settings.api_port, log_level=args.log_level,
                **uvicorn_options(settings))
    return 0
