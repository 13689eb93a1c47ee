"""Envoy writing TLS key logs from the routes YAML (``key_log`` on a TLS listener and on upstream TLS),
checked with `envoy --mode validate` and with real traffic: curl through the TLS gateway (HTTP/1.1 and
h2), and two Envoys as Istio-style sidecars (mutual TLS, Istio SNI and ALPN, SPIFFE certificates from
a test CA) captured with real tcpdump and decrypted by meshscope.decoders with Envoy's key logs —
every byte equal to tshark's with the same key log."""

from __future__ import annotations

import httpx
import pytest
from meshscope.decoders.istio_mtls import label_leg
from meshscope.decoders.tls_keylog import KeyLog
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.launcher import EnvoyProcess, validate
from meshscope.proxy.routes import RoutesError, parse_routes

from tests.conftest import free_port, need_binary, need_root
from tests.decoders.tls_lab import curl, tcpdump_lo, tls_connections, tshark_follow_tls
from tests.proxy.conftest import example, silent_collector
from tests.proxy.spiffe_ca import TestCa

SNI = "outbound_.8080_._.catalog.shop.svc.cluster.local"


def _gateway_yaml(key_log) -> dict:
    return {"listeners": [{"name": "gw", "port": 15443, "tls": [{
        "server_names": ["shop.example.com"], "self_signed": True, "key_log": key_log,
        "virtual_hosts": [{"routes": [{"cluster": "shop"}]}]}]}],
        "clusters": [{"name": "shop", "endpoints": ["127.0.0.1:8080"]}]}


def test_key_log_forms_and_errors(tmp_path):
    r = parse_routes(_gateway_yaml("gw.keys"), cert_dir=tmp_path / "certs")
    spec = r.listeners[0].tls[0].key_log
    assert spec.path == tmp_path / "keys" / "gw.keys" and (tmp_path / "keys").is_dir()
    r = parse_routes(_gateway_yaml({"path": str(tmp_path / "abs.keys"), "local_address_range": ["10.0.0.0/8"],
                                    "remote_address_range": ["192.168.1.7", "fd00::/8"]}),
                     cert_dir=tmp_path / "certs")
    spec = r.listeners[0].tls[0].key_log
    assert spec.path == tmp_path / "abs.keys" and spec.remote_address_range == ["192.168.1.7", "fd00::/8"]
    ctx = build_bootstrap(r, collector=None)["static_resources"]["listeners"][0]["filter_chains"][0][
        "transport_socket"]["typed_config"]["common_tls_context"]
    assert ctx["key_log"] == {
        "path": str(tmp_path / "abs.keys"),
        "local_address_range": [{"address_prefix": "10.0.0.0", "prefix_len": 8}],
        "remote_address_range": [{"address_prefix": "192.168.1.7", "prefix_len": 32},
                                 {"address_prefix": "fd00::", "prefix_len": 8}]}
    with pytest.raises(RoutesError, match=r"tls\[0\]\.key_log\.remote_address_range\[0\]: expected a CIDR"):
        parse_routes(_gateway_yaml({"path": "k", "remote_address_range": ["10.0.0.300/8"]}),
                     cert_dir=tmp_path / "certs")
    with pytest.raises(RoutesError, match="key_log: unknown key"):
        parse_routes(_gateway_yaml({"path": "k", "ranges": []}), cert_dir=tmp_path / "certs")
    doc = _gateway_yaml(None)
    doc["listeners"][0]["tls"][0]["self_signed"] = False
    (tmp_path / "x.pem").write_text("not read here")
    doc["listeners"][0]["tls"][0]["cert"] = doc["listeners"][0]["tls"][0]["key"] = str(tmp_path / "x.pem")
    doc["listeners"][0]["tls"][0]["key_log"] = "relative.keys"
    with pytest.raises(RoutesError, match="relative key-log path needs a data dir"):
        parse_routes(doc)


def _sidecars(tmp_path, ca: TestCa, upstream_port: int, tls_max: str):
    """(client sidecar routes, server sidecar routes): app → A (plain HTTP) ⇒ mTLS ⇒ B → upstream."""
    wcrt, wkey, _ = ca.issue("webapp", "spiffe://cluster.local/ns/shop/sa/webapp")
    ccrt, ckey, _ = ca.issue("catalog", "spiffe://cluster.local/ns/shop/sa/catalog")
    a_port, b_port = free_port(), free_port()
    server = parse_routes({"admin_port": 0, "listeners": [{
        "name": "inbound", "address": "127.0.0.1", "port": b_port, "tls": [{
            "server_names": [SNI], "cert": str(ccrt), "key": str(ckey), "client_ca": str(ca.ca_file),
            "alpn": ["istio-peer-exchange", "istio-http/1.1", "istio"], "key_log": "inbound.keys",
            "virtual_hosts": [{"routes": [{"cluster": "app"}]}]}]}],
        "clusters": [{"name": "app", "endpoints": [f"127.0.0.1:{upstream_port}"]}]},
        cert_dir=tmp_path / "b" / "certs")
    client = parse_routes({"admin_port": 0, "listeners": [{
        "name": "outbound", "address": "127.0.0.1", "port": a_port,
        "virtual_hosts": [{"routes": [{"cluster": "catalog"}]}]}],
        "clusters": [{"name": "catalog", "endpoints": [f"127.0.0.1:{b_port}"], "tls": {
            "sni": SNI, "alpn": ["istio-http/1.1", "istio"], "cert": str(wcrt), "key": str(wkey),
            "ca": str(ca.ca_file), "tls_max": tls_max, "key_log": "outbound.keys"}}]},
        cert_dir=tmp_path / "a" / "certs")
    return client, server


@pytest.mark.envoy
def test_generated_configs_pass_envoy_validate(tmp_path, data_dir):
    ca = TestCa(tmp_path / "ca")
    for routes in (*_sidecars(tmp_path, ca, 18080, "1.3"), example("sni-gateway", data_dir, 18080)):
        validate(build_bootstrap(routes, collector=silent_collector()))
    r = parse_routes(_gateway_yaml({"path": "k.keys", "local_address_range": ["127.0.0.0/8"],
                                    "remote_address_range": ["::1/128"]}), cert_dir=tmp_path / "certs")
    validate(build_bootstrap(r, collector=None))


@pytest.mark.envoy
@pytest.mark.root
@pytest.mark.tshark
@pytest.mark.slow
def test_gateway_key_log_decrypts_curl_h1_and_h2(upstream, data_dir, tmp_path):
    need_root()
    for tool in ("tcpdump", "curl", "tshark"):
        need_binary(tool)
    routes = example("sni-gateway", data_dir, upstream.port)
    port = routes.listeners[0].port
    envoy_keys = routes.listeners[0].tls[0].key_log.path
    assert envoy_keys == data_dir / "keys" / "sni-gateway.keys"
    curl_keys, pcap = tmp_path / "curl.keys", tmp_path / "gw.pcap"
    with EnvoyProcess(build_bootstrap(routes, collector=silent_collector(), admin_port=0)):
        with tcpdump_lo(pcap, [port]):
            for version in ("--http1.1", "--http2"):
                body = curl(f"https://shop.example.com:{port}/headers", curl_keys, version,
                            "-H", "x-request-id: 6f1c7a4e-0000-4000-8000-00000000000" + version[-1],
                            port=port)
                assert b"6f1c7a4e" in body
    envoy_log, curl_log = KeyLog.from_files([envoy_keys]), KeyLog.from_files([curl_keys])
    conns = tls_connections(pcap, envoy_log, {port})
    assert len(conns) == 2 and len(envoy_log) >= 2
    h1, h2 = conns
    for c in conns:  # curl's key log says the same as Envoy's, secret for secret
        cr = c.session.client_random
        assert curl_log.tls13_secrets(cr) == envoy_log.tls13_secrets(cr) != {}
        r = c.session.report
        assert (r.version, r.decryption, r.sni) == ("TLS 1.3", "decrypted", "shop.example.com")
    assert h1.session.report.alpn == "http/1.1" and h2.session.report.alpn == "h2"
    assert h1.to_server.bytes.startswith(b"GET /headers HTTP/1.1\r\n")
    assert b"x-request-id: 6f1c7a4e-0000-4000-8000-000000000001" in h1.to_server.bytes
    assert b"HTTP/1.1 200 OK" in h1.to_client.bytes and b"6f1c7a4e" in h1.to_client.bytes
    assert h2.to_server.bytes.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    theirs = tshark_follow_tls(pcap, envoy_keys, 2, port)
    for c in conns:
        assert (c.to_server.bytes, c.to_client.bytes) == theirs[c.client[1]]


@pytest.mark.envoy
@pytest.mark.root
@pytest.mark.tshark
@pytest.mark.slow
@pytest.mark.parametrize("tls_max", ["1.2", "1.3"])
def test_istio_style_sidecars_mtls(upstream, tmp_path, tls_max):
    need_root()
    for tool in ("tcpdump", "tshark"):
        need_binary(tool)
    ca = TestCa(tmp_path / "ca")
    client, server = _sidecars(tmp_path, ca, upstream.port, tls_max)
    a_port, b_port = client.listeners[0].port, server.listeners[0].port
    a_keys, b_keys = client.clusters[0].tls.key_log.path, server.listeners[0].tls[0].key_log.path
    pcap = tmp_path / "mtls.pcap"
    rid = "0b5e8a1c-1111-4222-8333-444455556666"  # Envoy rewrites its 15th character (sampling)
    with EnvoyProcess(build_bootstrap(server, collector=silent_collector())), \
            EnvoyProcess(build_bootstrap(client, collector=silent_collector())):
        with tcpdump_lo(pcap, [b_port]):
            resp = httpx.get(f"http://127.0.0.1:{a_port}/headers", headers={"x-request-id": rid}, timeout=10)
    assert resp.status_code == 200, resp.text
    a_log, b_log = KeyLog.from_files([a_keys]), KeyLog.from_files([b_keys])
    conns = tls_connections(pcap, b_log, {b_port})
    assert len(conns) >= 1
    c = conns[0]
    r = c.session.report
    assert r.version == f"TLS {tls_max}" and r.decryption == "decrypted" and r.failed_records == 0
    cr = c.session.client_random
    both_ends = [(log.master_secret(cr), log.tls13_secrets(cr)) for log in (a_log, b_log)]
    assert both_ends[0] == both_ends[1] and any(both_ends[0])
    leg = label_leg(r.sni, r.alpn_offered, r.alpn, r.client_certificates, r.server_certificates)
    assert leg.mesh_mtls and leg.inner_protocol == "http/1.1" and r.alpn == "istio-http/1.1"
    dest = leg.destination
    assert (dest.service, dest.port, dest.subset) == ("catalog.shop", 8080, None)
    assert leg.client.uri == "spiffe://cluster.local/ns/shop/sa/webapp"
    assert leg.server.uri == "spiffe://cluster.local/ns/shop/sa/catalog"
    assert c.to_server.bytes.startswith(b"GET /headers HTTP/1.1\r\n")
    assert rid[:14].encode() in c.to_server.bytes
    assert b"HTTP/1.1 200 OK" in c.to_client.bytes
    assert tshark_follow_tls(pcap, b_keys, 1, b_port)[c.client[1]] == (c.to_server.bytes, c.to_client.bytes)
    # without keys: TLS 1.2 still shows both identities in the clear, TLS 1.3 hides them
    blind = tls_connections(pcap, None, {b_port})[0].session.report
    blind_leg = label_leg(blind.sni, blind.alpn_offered, blind.alpn, blind.client_certificates,
                          blind.server_certificates)
    assert blind_leg.mesh_mtls and blind_leg.destination.service == "catalog.shop"
    assert (blind_leg.client is not None, blind_leg.server is not None) == ((tls_max == "1.2"),) * 2
