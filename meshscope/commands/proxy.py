"""`meshscope proxy`: print and validate the bundled Envoy's bootstrap, run Envoy, read its stats."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from meshscope.errors import UserError
from meshscope.proxy import EXAMPLES
from meshscope.settings import Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="proxy_command", metavar="ACTION", required=True)
    config = sub.add_parser("config", help="print the generated Envoy bootstrap (YAML) and validate it")
    _source_arguments(config)
    config.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    config.add_argument("--no-validate", action="store_true", help="skip `envoy --mode validate`")
    run = sub.add_parser("run", help="start Envoy, wait for /ready, stop on Ctrl-C or SIGTERM")
    _source_arguments(run)
    run.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    run.add_argument("--log-level", default="warning", help="Envoy log level (default warning)")
    run.add_argument(
        "--demo-upstream",
        action="store_true",
        help="also serve the demo upstream on the settings' demo_upstream_port",
    )
    stats = sub.add_parser("stats", help="print an Envoy's stats from its admin API")
    stats.add_argument("--admin", help="admin address host:port (default: 127.0.0.1:<envoy_admin_port>)")
    stats.add_argument("--filter", help="Envoy stats regex, e.g. 'upstream_rq_retry|grpc_access_log'")
    stats.add_argument("--json", action="store_true", help="print JSON")
    demo = sub.add_parser("demo-upstream", help="serve the httpbin-like demo upstream")
    demo.add_argument("--host", default=None)
    demo.add_argument("--port", type=int, default=None)


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "routes",
        nargs="?",
        help="routes YAML file or example name "
        f"({', '.join(sorted(p.stem for p in EXAMPLES.glob('*.yaml')))}); default: plain",
    )
    parser.add_argument(
        "--envoy-config", help="your own Envoy bootstrap (YAML/JSON) to inject telemetry into"
    )
    parser.add_argument(
        "--collector", help="host:als_port:zipkin_port (default: the settings' host and ports)"
    )
    parser.add_argument("--no-telemetry", action="store_true", help="no access loggers or tracer")
    parser.add_argument("--admin-port", type=int, help="Envoy admin port (default: from the routes file)")
    parser.add_argument(
        "--node-id", default="meshscope-proxy", help="Envoy node id (default meshscope-proxy)"
    )


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.proxy_command == "stats":
        return _stats(args, settings)
    if args.proxy_command == "demo-upstream":
        from meshscope.proxy import run_demo_upstream as demo_main

        demo_main(
            ["--host", args.host or settings.host, "--port", str(args.port or settings.demo_upstream_port)]
        )
        return 0
    bootstrap = build_from_arguments(args, settings)
    if args.proxy_command == "config":
        return _config(args, bootstrap)
    return _run(args, settings, bootstrap)


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(getattr(args, "config", None))
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def build_from_arguments(args: argparse.Namespace, settings: Settings) -> dict:
    """The bootstrap the arguments ask for: from a routes file / example, or a user's Envoy config."""
    from meshscope.proxy import (
        CollectorTarget,
        build_bootstrap,
        inject_telemetry,
        load_envoy_config,
        load_routes,
    )

    if args.no_telemetry:
        collector = None
    elif args.collector:
        try:
            collector = CollectorTarget.parse(args.collector)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    else:
        collector = CollectorTarget(settings.host, settings.als_port, settings.zipkin_port)
    if args.envoy_config:
        if args.routes:
            raise UserError("give either a routes file or --envoy-config, not both")
        bootstrap = load_envoy_config(args.envoy_config)
        if collector is None:
            return bootstrap
        injection = inject_telemetry(
            bootstrap,
            collector,
            node_id=args.node_id,
            admin_port=args.admin_port or settings.envoy_admin_port,
        )
        for warning in injection.warnings:
            print(f"meshscope: warning: {warning}", file=sys.stderr)
        return injection.bootstrap
    variables = {
        "MESHSCOPE_PROXY_PORT": settings.proxy_port,
        "MESHSCOPE_ENVOY_ADMIN_PORT": settings.envoy_admin_port,
        "MESHSCOPE_DEMO_UPSTREAM_PORT": settings.demo_upstream_port,
    }
    routes = load_routes(_routes_path(args.routes), data_dir=settings.data_dir, variables=variables)
    return build_bootstrap(routes, collector=collector, admin_port=args.admin_port, node_id=args.node_id)


def _routes_path(name: str | None) -> Path:
    if name is None:
        return EXAMPLES / "plain.yaml"
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml", ".json"):
        return path
    example = EXAMPLES / f"{name}.yaml"
    if example.exists():
        return example
    raise UserError(f"no routes file or example called {name!r}")


def _config(args: argparse.Namespace, bootstrap: dict) -> int:
    from meshscope.proxy import dump_yaml, validate

    if not args.no_validate:
        validate(bootstrap)
    print(
        json.dumps(bootstrap, indent=2) if args.json else dump_yaml(bootstrap), end="\n" if args.json else ""
    )
    if not args.no_validate:
        print("# envoy --mode validate: OK", file=sys.stderr)
    return 0


def listener_urls(bootstrap: dict) -> list[str]:
    """One URL per static listener (http://, https:// for TLS termination, tls:// for passthrough)."""
    urls = []
    for listener in bootstrap.get("static_resources", {}).get("listeners", []):
        address = listener.get("address", {}).get("socket_address", {})
        chains = listener.get("filter_chains", [])
        if any("transport_socket" in c for c in chains):
            scheme = "https"
        elif any("tcp_proxy" in f.get("name", "") for c in chains for f in c.get("filters", [])):
            scheme = "tls"
        else:
            scheme = "http"
        host = address.get("address", "?")
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        urls.append(
            f"{scheme}://{host}:{address.get('port_value', '?')}  ({listener.get('name', 'unnamed')})"
        )
    return urls


def _run(args: argparse.Namespace, settings: Settings, bootstrap: dict) -> int:
    from meshscope.proxy import DemoUpstream, EnvoyProcess

    stop = threading.Event()
    # SIGTERM ends the run like Ctrl-C does: Envoy is stopped, not orphaned
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    upstream = DemoUpstream(settings.host, settings.demo_upstream_port) if args.demo_upstream else None
    envoy = EnvoyProcess(bootstrap, concurrency=args.concurrency, log_level=args.log_level)
    try:
        if upstream is not None:
            upstream.start()
            print(f"demo upstream: {upstream.url}", flush=True)
        envoy.start()
        print(f"envoy ready (pid {envoy.pid}), admin: {envoy.admin_url}", flush=True)
        for url in listener_urls(bootstrap):
            print(f"listener: {url}", flush=True)
        while not stop.wait(0.5):
            if not envoy.running():
                print(f"meshscope: Envoy exited on its own: {envoy.log_tail()}", file=sys.stderr)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        was_running = envoy.process is not None
        code = envoy.stop()
        envoy.cleanup()
        if upstream is not None:
            upstream.stop()
        signal.signal(signal.SIGTERM, previous)
        if was_running:
            print(f"envoy stopped (exit code {code})", file=sys.stderr, flush=True)


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from meshscope.proxy import AdminClient

    admin = AdminClient(args.admin or f"127.0.0.1:{settings.envoy_admin_port}")
    try:
        stats = admin.stats(filter=args.filter)
    except httpx.HTTPError as exc:
        raise UserError(f"cannot read stats from {admin.base_url}: {exc}") from exc
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        for name in sorted(stats):
            print(f"{name}: {stats[name]}")
    return 0
