"""Turn `Routes` (the short routes YAML) into an Envoy v3 bootstrap (a dict, ready for JSON/YAML)
with the gRPC access loggers and the Zipkin tracer pointed at the collector."""

from __future__ import annotations

import ipaddress
import json

import yaml
from meshscope.proxy.routes import (
    TLS_VERSIONS,
    KeyLogSpec,
    Listener,
    Route,
    Routes,
    TlsChain,
    UpstreamTls,
    VirtualHost,
)
from meshscope.proxy.telemetry import (
    HCM_TYPE,
    TCP_PROXY_TYPE,
    CollectorTarget,
    add_runtime_layer,
    collector_clusters,
    duration,
    http_access_log,
    request_id_settings,
    socket_address,
    static_cluster,
    tcp_access_log,
    zipkin_tracing,
)

__all__ = ["CollectorTarget", "build_bootstrap", "dump_yaml"]

_TYPE = "type.googleapis.com/"


def build_bootstrap(
    routes: Routes,
    *,
    collector: CollectorTarget | None,
    admin_port: int | None = None,
    admin_address: str = "127.0.0.1",
    node_id: str = "meshscope-proxy",
    node_cluster: str = "meshscope",
    log_name: str = "meshscope",
    sampling: float = 100.0,
    flush_interval: float = 0.1,
    span_flush_interval: float = 0.2,
) -> dict:
    """The Envoy v3 bootstrap for `routes`. With a `collector`, every HTTP connection manager gets
    the HTTP gRPC access logger and the Zipkin tracer and every tcp_proxy the TCP gRPC access
    logger; `collector=None` builds a proxy without telemetry. Access logs are flushed every
    `flush_interval` s, spans every `span_flush_interval` s. `admin_port` defaults to the
    routes file's `admin_port` (0 lets Envoy pick one; `EnvoyProcess` reads it back)."""
    telemetry = _Telemetry(collector, log_name, sampling, flush_interval)
    clusters = []
    for c in routes.clusters:
        cluster = static_cluster(
            c.name,
            [(e.host, e.port) for e in c.endpoints],
            lb_policy=c.lb_policy,
            connect_timeout=c.connect_timeout,
            http2=c.http2,
        )
        if c.tls is not None:
            cluster["transport_socket"] = _upstream_tls(c.tls)
        clusters.append(cluster)
    if collector is not None:
        clusters += collector_clusters(collector)
    bootstrap = {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {
            "address": socket_address(admin_address, routes.admin_port if admin_port is None else admin_port)
        },
        "static_resources": {
            "listeners": [_listener(lst, telemetry) for lst in routes.listeners],
            "clusters": clusters,
        },
    }
    if collector is not None:
        add_runtime_layer(bootstrap, span_flush_interval)
    return bootstrap


def dump_yaml(bootstrap: dict) -> str:
    """The bootstrap as YAML text (what `meshscope proxy config` prints)."""
    # a JSON round trip turns tuples and other oddities into plain YAML types
    return yaml.safe_dump(json.loads(json.dumps(bootstrap)), sort_keys=False)


class _Telemetry:
    """What each HCM and tcp_proxy gets, or nothing when there is no collector."""

    def __init__(
        self, collector: CollectorTarget | None, log_name: str, sampling: float, flush: float
    ) -> None:
        self.enabled = collector is not None
        self.log_name, self.sampling, self.flush = log_name, sampling, flush

    def hcm(self) -> dict:
        if not self.enabled:
            return {}
        return {
            "access_log": [http_access_log(self.log_name, self.flush)],
            "tracing": zipkin_tracing(self.sampling),
        }

    def tcp(self) -> dict:
        return {"access_log": [tcp_access_log(self.log_name + "-tcp", self.flush)]} if self.enabled else {}


def _listener(lst: Listener, telemetry: _Telemetry) -> dict:
    listener: dict = {"name": lst.name, "address": socket_address(lst.address, lst.port)}
    if lst.virtual_hosts:
        listener["filter_chains"] = [{"filters": [_hcm(lst.name, lst.virtual_hosts, telemetry)]}]
        return listener
    # SNI decides the chain, so the ClientHello must be read before a chain is picked
    listener["listener_filters"] = [
        {
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
            },
        }
    ]
    chains = []
    for i, chain in enumerate(lst.tls):
        chains.append(
            {
                "filter_chain_match": {"server_names": list(chain.server_names)},
                "transport_socket": _downstream_tls(chain),
                "filters": [_hcm(f"{lst.name}_{i}", chain.virtual_hosts, telemetry, stat_prefix=lst.name)],
            }
        )
    for chain in lst.passthrough:
        chains.append(
            {
                "filter_chain_match": {"server_names": list(chain.server_names)},
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": TCP_PROXY_TYPE,
                            "stat_prefix": f"{lst.name}_{chain.cluster}",
                            "cluster": chain.cluster,
                            **telemetry.tcp(),
                        },
                    }
                ],
            }
        )
    listener["filter_chains"] = chains
    return listener


def _downstream_tls(chain: TlsChain) -> dict:
    common = _common_tls(chain.cert, chain.key, chain.alpn, chain.tls_max, chain.key_log)
    config: dict = {"@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"}
    if chain.client_ca is not None:  # mutual TLS: the client must present a certificate from this CA
        common["validation_context"] = {"trusted_ca": {"filename": str(chain.client_ca)}}
        config["require_client_certificate"] = True
    config["common_tls_context"] = common
    return {"name": "envoy.transport_sockets.tls", "typed_config": config}


def _upstream_tls(tls: UpstreamTls) -> dict:
    common = _common_tls(tls.cert, tls.key, tls.alpn, tls.tls_max, tls.key_log)
    if tls.ca is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(tls.ca)}}
    config: dict = {"@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "common_tls_context": common}
    if tls.sni:
        config["sni"] = tls.sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": config}


def _common_tls(cert, key, alpn: list[str], tls_max: str | None, key_log: KeyLogSpec | None) -> dict:
    common: dict = {}
    if cert is not None:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
        ]
    if alpn:
        common["alpn_protocols"] = list(alpn)
    if tls_max is not None:
        common["tls_params"] = {"tls_maximum_protocol_version": TLS_VERSIONS[tls_max]}
    if key_log is not None:
        common["key_log"] = _key_log(key_log)
    return common


def _key_log(spec: KeyLogSpec) -> dict:
    """Envoy's TlsKeyLog: Envoy appends NSS key-log lines (secrets!) for matching connections."""
    out: dict = {"path": str(spec.path)}
    for name, cidrs in (("local_address_range", spec.local_address_range),
                        ("remote_address_range", spec.remote_address_range)):
        if cidrs:
            out[name] = [_cidr(c) for c in cidrs]
    return out


def _cidr(text: str) -> dict:
    net = ipaddress.ip_network(text, strict=False)
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


def _hcm(route_name: str, hosts: list[VirtualHost], telemetry: _Telemetry, *, stat_prefix: str = "") -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix or route_name,
            "codec_type": "AUTO",
            **request_id_settings(),
            **telemetry.hcm(),
            "route_config": {"name": route_name, "virtual_hosts": [_virtual_host(vh) for vh in hosts]},
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
                }
            ],
        },
    }


def _virtual_host(vh: VirtualHost) -> dict:
    return {
        "name": vh.name,
        "domains": list(vh.domains),
        # the upstream (and the access log) see which attempt of a retried request this is
        "include_request_attempt_count": True,
        "routes": [_route(r) for r in vh.routes],
    }


def _route(route: Route) -> dict:
    action: dict = {"cluster": route.cluster}
    if route.timeout is not None:
        action["timeout"] = duration(route.timeout)
    if route.retry is not None:
        policy: dict = {"retry_on": route.retry.retry_on, "num_retries": route.retry.num_retries}
        if route.retry.per_try_timeout is not None:
            policy["per_try_timeout"] = duration(route.retry.per_try_timeout)
        action["retry_policy"] = policy
    return {"match": {"prefix": route.prefix}, "route": action}
