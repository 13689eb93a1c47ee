"""Istio's marks on mesh mTLS legs, read without keys: SNI, ALPN, SPIFFE URI SANs, loopback roles."""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding
from meshscope.decoders.istio_mtls import (
    IstioSni,
    inner_protocol,
    is_mesh_alpn,
    label_leg,
    parse_istio_sni,
    parse_spiffe,
    sidecar_loopback_role,
    spiffe_ids,
)

from tests.proxy.spiffe_ca import TestCa


def test_sni_names_direction_port_subset_service():
    s = parse_istio_sni("outbound_.8080_._.catalog.default.svc.cluster.local")
    assert s == IstioSni("outbound", 8080, None, "catalog.default.svc.cluster.local")
    assert (s.service, s.namespace) == ("catalog.default", "default")
    v1 = parse_istio_sni("outbound_.9080_.v1_.reviews.bookinfo.svc.cluster.local")
    assert (v1.port, v1.subset, v1.service) == (9080, "v1", "reviews.bookinfo")
    inbound = parse_istio_sni("inbound_.15443_._.ext.example.com")
    assert (inbound.direction, inbound.service, inbound.namespace) == ("inbound", "ext.example.com", None)


def test_other_names_are_not_istio():
    for sni in (None, "", "shop.example.com", "outbound|8080||catalog.default.svc.cluster.local",
                "outbound_.http_._.x.svc", "sideways_.80_._.x", "outbound_.0_._.x", "outbound_.80_._."):
        assert parse_istio_sni(sni) is None, sni


def test_alpn_marks_mesh_legs():
    assert is_mesh_alpn(["istio-peer-exchange", "istio"])
    assert is_mesh_alpn(["istio-http/1.1", "istio", "http/1.1"]) and is_mesh_alpn("istio-h2")
    assert not is_mesh_alpn(["h2", "http/1.1"]) and not is_mesh_alpn(None)
    assert inner_protocol(["istio-peer-exchange", "istio-h2", "istio"]) == "h2"
    assert inner_protocol(["istio-http/1.0"]) == "http/1.0" and inner_protocol(["istio"]) is None


def test_spiffe_from_certificates(tmp_path):
    ca = TestCa(tmp_path)
    *_, der = ca.issue("webapp", "spiffe://cluster.local/ns/shop/sa/webapp", dns=["webapp.shop"])
    ids = spiffe_ids(der)
    assert [(i.trust_domain, i.namespace, i.service_account) for i in ids] == \
        [("cluster.local", "shop", "webapp")]
    assert spiffe_ids(ca.cert.public_bytes(Encoding.DER)) == []  # no SAN at all
    assert spiffe_ids(b"not a certificate") == []
    odd = parse_spiffe("spiffe://example.org/workload/x")
    assert (odd.trust_domain, odd.namespace) == ("example.org", None)
    assert parse_spiffe("https://example.org/ns/a/sa/b") is None and parse_spiffe("spiffe:///ns/a") is None


def test_label_leg_both_ends(tmp_path):
    ca = TestCa(tmp_path)
    *_, client = ca.issue("webapp", "spiffe://cluster.local/ns/shop/sa/webapp")
    *_, server = ca.issue("catalog", "spiffe://cluster.local/ns/shop/sa/catalog")
    leg = label_leg("outbound_.8080_._.catalog.shop.svc.cluster.local", ["istio-peer-exchange", "istio"],
                    "istio-peer-exchange", [client], [server])
    assert leg.mesh_mtls and leg.destination.service == "catalog.shop"
    assert (leg.client.service_account, leg.server.service_account) == ("webapp", "catalog")
    plain = label_leg("shop.example.com", ["h2", "http/1.1"], "h2", [], [])
    assert not plain.mesh_mtls and plain.destination is None and plain.client is None


def test_loopback_roles():
    assert sidecar_loopback_role("127.0.0.6", 41000, "10.10.0.9", 8080) == "inbound-to-app"
    assert sidecar_loopback_role("10.10.0.6", 41000, "10.10.0.9", 15006) == "inbound-capture"
    assert sidecar_loopback_role("10.10.0.9", 41000, "127.0.0.1", 15001) == "outbound-capture"
    assert sidecar_loopback_role("10.10.0.9", 41000, "10.10.0.8", 3000) is None
