"""Add meshscope's telemetry to a user's own Envoy v3 bootstrap: the HTTP gRPC access logger and the
Zipkin tracer on every HTTP connection manager, the TCP gRPC access logger on every tcp_proxy
(static listeners), and the collector clusters. Everything else in the config is left as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from meshscope.proxy.telemetry import (
    ALS_CLUSTER,
    HCM_TYPE,
    HTTP_GRPC_LOGGER,
    TCP_GRPC_LOGGER,
    TCP_PROXY_TYPE,
    ZIPKIN_CLUSTER,
    CollectorTarget,
    add_runtime_layer,
    collector_clusters,
    http_access_log,
    socket_address,
    tcp_access_log,
    zipkin_tracing,
)

from meshscope.errors import UserError

_HCM_NAMES = {"envoy.filters.network.http_connection_manager", "envoy.http_connection_manager"}
_TCP_NAMES = {"envoy.filters.network.tcp_proxy", "envoy.tcp_proxy"}


class InjectError(UserError):
    """The user's Envoy config cannot be read or is not a v3 bootstrap."""


@dataclass(slots=True)
class Injection:
    """The rewritten bootstrap and what was changed in it."""

    bootstrap: dict
    http_connection_managers: int = 0
    tcp_proxies: int = 0
    warnings: list[str] = field(default_factory=list)


def load_envoy_config(path: str | Path) -> dict:
    """Read a user's Envoy bootstrap (YAML or JSON) into a dict, with a clear error if it is not one."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InjectError(f"cannot read Envoy config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise InjectError(f"Envoy config {path} is neither YAML nor JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InjectError(f"Envoy config {path}: expected a bootstrap mapping at the top level")
    if is_config_dump(doc):
        raise InjectError(
            f"{path} is an Envoy config_dump (admin /config_dump), not a bootstrap: a sidecar's listeners "
            "come over xDS from istiod, so editing them here logs no app traffic; point the mesh at "
            "meshscope with MeshConfig extensionProviders and a Telemetry resource (deploy/istio/README.md)")
    return doc


def is_config_dump(doc: dict) -> bool:
    """True for what Envoy's admin ``/config_dump`` (or ``istioctl proxy-config all -o json``) prints:
    a ``configs`` list of ``envoy.admin.v3.*ConfigDump`` entries, which a bootstrap never has."""
    configs = doc.get("configs")
    if not isinstance(configs, list):
        return False
    return any(isinstance(c, dict) and "envoy.admin." in str(c.get("@type", "")) for c in configs)


def inject_telemetry(
    bootstrap: dict,
    collector: CollectorTarget,
    *,
    log_name: str = "meshscope",
    sampling: float = 100.0,
    flush_interval: float = 0.1,
    span_flush_interval: float = 0.2,
    node_id: str = "meshscope-proxy",
    node_cluster: str = "meshscope",
    admin_port: int | None = None,
) -> Injection:
    """A copy of `bootstrap` with meshscope's loggers, tracer and collector clusters added.
    Injecting twice replaces the earlier injection instead of doubling it. A missing node id or
    cluster is filled in (the tracer needs a service name); `admin_port` adds an admin listener on
    loopback when the config has none."""
    result = Injection(copy.deepcopy(bootstrap))
    config = result.bootstrap
    static = config.setdefault("static_resources", {})
    if not isinstance(static, dict):
        raise InjectError("static_resources must be a mapping")
    for listener in _as_list(static.get("listeners"), "static_resources.listeners"):
        chains = list(_as_list(listener.get("filter_chains"), "filter_chains"))
        if isinstance(listener.get("default_filter_chain"), dict):
            chains.append(listener["default_filter_chain"])
        for chain in chains:
            for network_filter in _as_list(chain.get("filters"), "filters"):
                _inject_filter(network_filter, result, log_name, sampling, flush_interval)
    if config.get("dynamic_resources", {}).get("lds_config"):
        result.warnings.append("listeners from LDS (dynamic_resources.lds_config) are not changed")
    if result.http_connection_managers + result.tcp_proxies == 0:
        result.warnings.append("no HTTP connection manager or tcp_proxy found in static listeners")
    ours = {ALS_CLUSTER, ZIPKIN_CLUSTER}
    clusters = [
        c for c in _as_list(static.get("clusters"), "static_resources.clusters") if c.get("name") not in ours
    ]
    static["clusters"] = clusters + collector_clusters(collector)
    add_runtime_layer(config, span_flush_interval)
    node = config.setdefault("node", {})
    node.setdefault("id", node_id)
    node.setdefault("cluster", node_cluster)
    if admin_port is not None and not config.get("admin", {}).get("address"):
        config.setdefault("admin", {})["address"] = socket_address("127.0.0.1", admin_port)
    return result


def _inject_filter(
    network_filter: dict, result: Injection, log_name: str, sampling: float, flush: float
) -> None:
    typed = network_filter.get("typed_config")
    if not isinstance(typed, dict):
        return
    name, kind = network_filter.get("name"), typed.get("@type")
    if kind == HCM_TYPE or (kind is None and name in _HCM_NAMES):
        typed["access_log"] = _without_ours(typed.get("access_log"), HTTP_GRPC_LOGGER) + [
            http_access_log(log_name, flush)
        ]
        tracing = typed.get("tracing") if isinstance(typed.get("tracing"), dict) else {}
        ours = zipkin_tracing(sampling)
        # the user's sampling choices win; the provider must be ours to reach the collector
        typed["tracing"] = {**ours, **tracing, "provider": ours["provider"]}
        typed.setdefault("generate_request_id", True)
        for host in (typed.get("route_config") or {}).get("virtual_hosts", []):
            host.setdefault("include_request_attempt_count", True)
        result.http_connection_managers += 1
    elif kind == TCP_PROXY_TYPE or (kind is None and name in _TCP_NAMES):
        typed["access_log"] = _without_ours(typed.get("access_log"), TCP_GRPC_LOGGER) + [
            tcp_access_log(log_name + "-tcp", flush)
        ]
        result.tcp_proxies += 1


def _without_ours(loggers: object, logger_name: str) -> list:
    """The user's access loggers minus a previous meshscope injection of this logger."""

    def ours(entry: dict) -> bool:
        common = entry.get("typed_config", {}).get("common_config", {})
        return (
            entry.get("name") == logger_name
            and common.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name") == ALS_CLUSTER
        )

    return [e for e in _as_list(loggers, "access_log") if not ours(e)]


def _as_list(value: object, where: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InjectError(f"{where} must be a list of mappings")
    return value
