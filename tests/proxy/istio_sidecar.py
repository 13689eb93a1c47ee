"""Envoy configurations shaped as istiod generates them for a sidecar, small enough to run on loopback:
the inbound listener (``virtualInbound``) whose mTLS filter chain matches ``transport_protocol: tls`` and
Istio's ALPN values and requires a client certificate, its ``inbound|PORT||`` cluster to the app from
127.0.0.6; the outbound listener and an ``outbound|PORT||HOST`` cluster whose ``tlsMode-istio``
transport socket match carries Istio's SNI, ALPN and SPIFFE SAN check. Certificates come the way
istio-agent hands them over, as SDS secrets ``default`` and ``ROOTCA`` (here static ones).

Shapes from Istio's generated configs (``istioctl proxy-config … -o json``; pilot/pkg/networking/core
cluster_tls.go, listener_builder.go): names, matches and TLS contexts as they appear there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TYPE = "type.googleapis.com/"
TLS = "envoy.transport_sockets.tls"
MESH_ALPN = ["istio-peer-exchange", "istio"]  # what an outbound cluster offers (ALPNInMeshWithMxc)
INBOUND_ALPN_MATCH = ["istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}
INBOUND_PASSTHROUGH = "127.0.0.6"


@dataclass
class Pod:
    name: str
    namespace: str
    ip: str
    service_account: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def spiffe(self) -> str:
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.service_account}"


@dataclass
class Outbound:
    """A service the pod calls: ``host`` (``catalog.shop.svc.cluster.local``) on ``port``, served by the
    sidecar at ``endpoint`` whose identity is ``peer_spiffe``."""

    host: str
    port: int
    endpoint: tuple[str, int]
    peer_spiffe: str
    max_requests_per_connection: int | None = None  # a DestinationRule's connectionPool.http

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||{self.host}"

    @property
    def sni(self) -> str:
        return f"outbound_.{self.port}_._.{self.host}"


def sidecar_bootstrap(pod: Pod, cert: Path, key: Path, ca: Path, *, inbound: tuple[int, int] | None = None,
                      outbound: Outbound | None = None, outbound_port: int = 15001) -> dict:
    """A sidecar's configuration: ``inbound`` (listener port, app port) on the pod's address, and an
    outbound listener on ``outbound_port`` routing the service's names to its cluster."""
    listeners, clusters = [], []
    if inbound is not None:
        port, app_port = inbound
        listeners.append(_virtual_inbound(pod, port))
        clusters.append(_cluster(f"inbound|{port}||", [(pod.ip, app_port)], upstream_bind_config={
            "source_address": {"address": INBOUND_PASSTHROUGH, "port_value": 0}}))
    if outbound is not None:
        listeners.append(_outbound_listener(pod, outbound, outbound_port))
        clusters.append(_outbound_cluster(outbound, pod.ip))
    return {
        "node": {"id": f"sidecar~{pod.ip}~{pod.name}.{pod.namespace}~{pod.namespace}.svc.cluster.local",
                 "cluster": f"{pod.name}.{pod.namespace}"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
            "secrets": [
                {"name": "default", "tls_certificate": {"certificate_chain": {"filename": str(cert)},
                                                        "private_key": {"filename": str(key)}}},
                {"name": "ROOTCA", "validation_context": {"trusted_ca": {"filename": str(ca)}}},
            ],
        },
    }


def _common_tls(alpn: list[str], peer_san: dict) -> dict:
    return {"tls_params": dict(TLS_PARAMS), "alpn_protocols": list(alpn),
            "tls_certificate_sds_secret_configs": [{"name": "default"}],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": peer_san}]},
                "validation_context_sds_secret_config": {"name": "ROOTCA"}}}


def _hcm(stat_prefix: str, cluster: str, domains: list[str], **extra) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": [{
            "name": cluster, "domains": domains, "routes": [{"match": {"prefix": "/"},
                                                             "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": TYPE + "envoy.extensions.filters.http.router.v3.Router"}}],
        **extra}}


def _virtual_inbound(pod: Pod, port: int) -> dict:
    hcm = _hcm("inbound_0.0.0.0_8080", f"inbound|{port}||", ["*"],
               forward_client_cert_details="APPEND_FORWARD",
               set_current_client_cert_details={"subject": True, "dns": True, "uri": True})
    return {
        "name": "virtualInbound",
        "address": {"socket_address": {"address": pod.ip, "port_value": port}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": TYPE + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [{
            "name": f"{pod.ip}_{port}",
            "filter_chain_match": {"transport_protocol": "tls", "application_protocols": INBOUND_ALPN_MATCH},
            "transport_socket": {"name": TLS, "typed_config": {
                "@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": _common_tls(["h2", "http/1.1"], {"prefix": "spiffe://cluster.local/"}),
                "require_client_certificate": True}},
            "filters": [hcm]}],
    }


def _outbound_listener(pod: Pod, out: Outbound, port: int) -> dict:
    name, ns = out.host.split(".")[:2]
    domains = [out.host, f"{out.host}:{out.port}", f"{name}.{ns}", f"{name}.{ns}:{out.port}", name,
               f"{name}:{out.port}"]
    return {"name": f"0.0.0.0_{out.port}",
            "address": {"socket_address": {"address": pod.ip, "port_value": port}},
            "filter_chains": [{"filters": [_hcm(f"outbound_0.0.0.0_{out.port}", out.cluster, domains)]}]}


def _outbound_cluster(out: Outbound, source: str) -> dict:
    tls = {"@type": TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
           "common_tls_context": _common_tls(MESH_ALPN, {"exact": out.peer_spiffe}), "sni": out.sni}
    extra: dict = {"transport_socket_matches": [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
         "transport_socket": {"name": TLS, "typed_config": tls}},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": {"@type": TYPE + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}},
    ], "upstream_bind_config": {"source_address": {"address": source, "port_value": 0}}}  # the pod's address
    if out.max_requests_per_connection:
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        extra["typed_extension_protocol_options"] = {options: {
            "@type": TYPE + options,
            "common_http_protocol_options": {"max_requests_per_connection": out.max_requests_per_connection},
            "explicit_http_config": {"http_protocol_options": {}}}}
    return _cluster(out.cluster, [out.endpoint], endpoint_metadata={
        "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}, **extra)


def _cluster(name: str, endpoints: list[tuple[str, int]], endpoint_metadata: dict | None = None,
             **extra) -> dict:
    lb = [{"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}},
           **({"metadata": endpoint_metadata} if endpoint_metadata else {})} for ip, port in endpoints]
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]}, **extra}
