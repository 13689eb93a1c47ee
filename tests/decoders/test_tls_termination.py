"""TLS-terminating gateway without keys: client TLS connections linked to the upstream requests they
caused, always marked inferred, with evidence and confidence; equal rivals shown as ambiguous."""

from __future__ import annotations

from meshscope.decoders.tls_termination import infer_terminations

from tests.decoders.made_exchanges import conn, http, tls

GW = "10.10.0.6"


def _upstream(t: float, client_ip: str, host: str = "secure.lab", **extra):
    headers = {"x-forwarded-for": client_ip, "x-forwarded-proto": "https", "x-request-id": f"r{t}", **extra}
    return http(conn(f"{GW}:46612", "10.10.0.9:8080", isn=5, t=t - 0.001), t, host=host, headers=headers)


def test_one_client_one_gateway_is_linked_with_its_evidence():
    hello = tls(conn("172.18.0.1:57536", f"{GW}:8443", isn=1, t=10.0), 10.0, "secure.lab")
    up = _upstream(10.02, "172.18.0.1")
    [link] = infer_terminations([hello], [up])
    assert link.tls is hello and link.upstream is up and link.inferred and not link.ambiguous
    assert set(link.evidence) == {"sni = authority", "x-forwarded-for ends with the client",
                                  "x-forwarded-proto: https", "leaves the gateway's address",
                                  "the only TLS connection open then"}
    assert link.confidence > 0.8
    s = link.summary()
    assert s["inferred"] is True and s["evidence"] == link.evidence and "candidates" not in s


def test_two_clients_told_apart_by_forwarded_for():
    a = tls(conn("172.18.0.1:50001", f"{GW}:8443", isn=1, t=10.0), 10.0, "secure.lab")
    b = tls(conn("172.18.0.7:50002", f"{GW}:8443", isn=2, t=10.001), 10.001, "secure.lab")
    ua, ub = _upstream(10.05, "172.18.0.1"), _upstream(10.06, "172.18.0.7")
    links = {id(x.upstream): x for x in infer_terminations([a, b], [ua, ub])}
    assert links[id(ua)].tls is a and links[id(ub)].tls is b
    assert not links[id(ua)].ambiguous and links[id(ua)].confidence < 0.95  # not "the only one"


def test_same_client_two_connections_is_ambiguous():
    a = tls(conn("172.18.0.1:50001", f"{GW}:8443", isn=1, t=10.0), 10.0, "secure.lab")
    b = tls(conn("172.18.0.1:50002", f"{GW}:8443", isn=2, t=10.001), 10.001, "secure.lab")
    [link] = infer_terminations([a, b], [_upstream(10.05, "172.18.0.1")])
    assert link.ambiguous and link.tls is None
    assert {c[0].conn.sport for c in link.candidates} == {50001, 50002}
    s = link.summary()
    assert s["ambiguous"] and len(s["candidates"]) == 2 and s["inferred"]


def test_sni_tells_apart_what_addresses_cannot():
    a = tls(conn("172.18.0.1:50001", f"{GW}:8443", isn=1, t=10.0), 10.0, "shop.lab")
    b = tls(conn("172.18.0.1:50002", f"{GW}:8443", isn=2, t=10.001), 10.001, "catalog.lab")
    [link] = infer_terminations([a, b], [_upstream(10.05, "172.18.0.1", host="catalog.lab:8443")])
    assert link.tls is b and "sni = authority" in link.evidence and not link.ambiguous


def test_no_link_without_evidence_or_outside_the_window():
    hello = tls(conn("172.18.0.1:57536", f"{GW}:8443", isn=1, t=10.0), 10.0, "secure.lab")
    plain = http(conn("10.10.0.9:4000", "10.10.0.8:3000", isn=9, t=10.0), 10.01)  # no forwarding headers
    early = _upstream(9.0, "172.18.0.1")  # before the handshake
    stranger = _upstream(10.2, "192.0.2.1", host="other.lab")  # timing alone is not evidence
    assert infer_terminations([hello], [plain, early, stranger]) == []


def test_sequential_connections_the_fresh_one_wins_with_less_confidence():
    old = tls(conn("172.18.0.1:50001", f"{GW}:8443", isn=1, t=10.0), 10.0, "secure.lab")
    new = tls(conn("172.18.0.1:50002", f"{GW}:8443", isn=2, t=12.0), 12.0, "secure.lab")
    [link] = infer_terminations([old, new], [_upstream(12.01, "172.18.0.1")])
    assert link.tls is new and not link.ambiguous
    assert "first request right after its handshake" in link.evidence
    assert [c[0] for c in link.candidates] == [new, old]  # the other stays visible as a candidate


def test_istio_sidecar_inbound_loopback_leg_joins_the_mtls_leg():
    """The pod's eth0 capture shows the peer sidecar's mTLS connection (Istio SNI); its loopback capture
    shows the sidecar's plaintext request to the app, from 127.0.0.6."""
    sni = "outbound_.8080_._.catalog.shop.svc.cluster.local"
    mtls = tls(conn("10.10.0.6:40000", "10.10.0.9:8080", isn=1, t=10.0, capture="pod-eth0.pcap"), 10.0, sni,
               alpn=["istio-peer-exchange", "istio"])
    other = tls(conn("10.10.0.7:40001", "10.10.0.8:8080", isn=2, t=10.0, capture="pod-eth0.pcap"), 10.0,
                "outbound_.8080_._.inventory.shop.svc.cluster.local")
    inbound = http(conn("127.0.0.6:41000", "10.10.0.9:8080", isn=3, t=10.01, capture="pod-lo.pcap",
                        interface="lo"), 10.011, host="catalog.shop:8080")
    [link] = infer_terminations([mtls, other], [inbound])
    assert link.tls is mtls and link.inferred and not link.ambiguous
    assert {"istio sni names the authority's service",
            "sidecar inbound: 127.0.0.6 to where the mTLS leg arrived"} <= set(link.evidence)
    assert link.confidence <= 1.0
