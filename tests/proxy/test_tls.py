"""TLS by SNI: the gateway picks certificate and routes from the ClientHello; the passthrough
gateway forwards the TLS bytes to a cluster chosen by SNI, untouched."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.launcher import EnvoyProcess
from meshscope.proxy.routes import Endpoint

from tests.proxy.conftest import example, silent_collector
from tests.proxy.telemetry_sink import TelemetrySink

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
NAMES = ("shop.example.com", "catalog.example.com")


def served_certificate(port: int, server_name: str) -> bytes:
    """The DER certificate the server presents for this SNI."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True)


def https_get(port: int, server_name: str, cert_file, path: str = "/headers") -> httpx.Response:
    """GET over TLS with this SNI, trusting only `cert_file` and checking the name against it."""
    context = ssl.create_default_context(cafile=str(cert_file))
    with httpx.Client(verify=context, timeout=5) as client:
        return client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"host": server_name},
            extensions={"sni_hostname": server_name},
        )


def pem_to_der(path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


@pytest.fixture
def gateway(upstream, data_dir):
    routes = example("sni-gateway", data_dir, upstream.port)
    with EnvoyProcess(build_bootstrap(routes, collector=silent_collector(), admin_port=0)) as envoy:
        yield envoy, routes


def test_gateway_serves_each_name_its_own_certificate_and_routes(gateway):
    envoy, routes = gateway
    port = routes.listeners[0].port
    certs = {name: chain.cert for chain in routes.listeners[0].tls for name in chain.server_names}
    assert pem_to_der(certs[NAMES[0]]) != pem_to_der(certs[NAMES[1]])
    for name in NAMES:
        assert served_certificate(port, name) == pem_to_der(certs[name])
    assert https_get(port, NAMES[0], certs[NAMES[0]]).status_code == 200
    for _ in range(2):
        assert https_get(port, NAMES[1], certs[NAMES[1]]).status_code == 200
    stats = envoy.admin.stats()
    assert (stats["cluster.shop.upstream_rq_total"], stats["cluster.catalog.upstream_rq_total"]) == (1, 2)
    # the other name's certificate does not verify for this name
    with pytest.raises(httpx.ConnectError):
        https_get(port, NAMES[0], certs[NAMES[1]])


def test_gateway_refuses_an_unknown_name(gateway):
    _, routes = gateway
    with pytest.raises((ssl.SSLError, ConnectionError)):
        served_certificate(routes.listeners[0].port, "unknown.example.com")


def test_passthrough_routes_by_sni_without_terminating(gateway, data_dir):
    envoy_gw, gw_routes = gateway
    gw_port = gw_routes.listeners[0].port
    certs = {name: chain.cert for chain in gw_routes.listeners[0].tls for name in chain.server_names}
    with TelemetrySink() as sink:
        routes = example("sni-passthrough", data_dir, gw_port)
        routes.cluster("catalog-tls").endpoints = [Endpoint("127.0.0.1", gw_port)]
        port = routes.listeners[0].port
        with EnvoyProcess(build_bootstrap(routes, collector=sink.target, admin_port=0)) as envoy:
            # the certificate seen through the passthrough is the gateway's: TLS was not terminated
            assert served_certificate(port, NAMES[1]) == pem_to_der(certs[NAMES[1]])
            assert https_get(port, NAMES[0], certs[NAMES[0]]).status_code == 200
            with pytest.raises((ssl.SSLError, ConnectionError)):
                served_certificate(port, "unknown.example.com")
            sink.wait_for(lambda: len(sink.tcp_entries()) >= 2)
            stats = envoy.admin.stats()
        assert stats["cluster.shop-tls.upstream_cx_total"] == 1
        assert stats["cluster.catalog-tls.upstream_cx_total"] == 1
        snis = sorted(e.common_properties.tls_properties.tls_sni_hostname for e in sink.tcp_entries())
        assert snis == sorted(NAMES)
    assert envoy_gw.admin.stats()["cluster.shop.upstream_rq_total"] == 1
