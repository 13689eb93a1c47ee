"""Real captures from the UDP lab (tests/decoders/udp_lab.py): a pod whose resolver has a Kubernetes
search path looks names up (NXDOMAIN for the expansions, one slow answer, one name that does not
exist), then curl sends its requests — directly, and through an HTTP CONNECT proxy to a TLS server
and to a plain HTTP server; aioquic makes QUIC v1 and v2 handshakes (one with a ClientHello over
several Initial packets). Each finding is compared with tshark's reading of the same capture, and
the three backends must agree."""

from __future__ import annotations

import subprocess

import pytest
from meshscope.decoders import analyze, diagram_text, flow_diagram, get_backend

from tests.conftest import need_binary, need_root
from tests.decoders.lab import Lab
from tests.decoders.udp_lab import SVC, UdpLab

pytestmark = [pytest.mark.root, pytest.mark.tshark, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def lab_capture(tmp_path_factory):
    need_root()
    need_binary("tcpdump")
    need_binary("tshark")
    need_binary("curl")
    d = tmp_path_factory.mktemp("udp-lab")
    pcap = d / "pod.pcap"
    results = {}
    with UdpLab(d) as lab:
        cap = lab.capture(pcap)
        for key, argv in (
            ("catalog", ["curl", "-s", "-m", "5", "http://catalog.default:8080/one"]),
            ("slow", ["curl", "-s", "-m", "5", "http://slow:8080/two"]),
            ("nope", ["curl", "-s", "-m", "5", "http://nope:8080/never"]),
            ("tls-tunnel", ["curl", "-sk", "-m", "5", "-p", "-x", f"http://{SVC}:3128",
                            "https://secure.lab:8443/three"]),
            ("http-tunnel", ["curl", "-s", "-m", "5", "-p", "-x", f"http://{SVC}:3128", f"http://{SVC}:8080/four"]),
        ):
            results[key] = lab.in_pod(*argv)
        for v, extra in (("1", 0), ("2", 0), ("1", 150)):
            results[f"quic{v}-{extra}"] = lab.quic(v, extra_alpn=extra)
        Lab.stop_capture(cap)
    for key, r in results.items():
        expected = 6 if key == "nope" else 0  # curl: could not resolve host
        assert r.returncode == expected, (key, r.stderr[-500:])
    return pcap


def _tshark(pcap, filt: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), "-Y", filt, "-T", "fields", *(a for f in fields for a in ("-e", f))]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def _exchanges(pcap, backend="dpkt"):
    return list(get_backend(backend).decode(pcap))


def _dns(exchanges):
    return [ex for ex in exchanges if ex.exchange_type == "dns"]


def test_search_domain_expansion_is_one_lookup_with_its_attempts(lab_capture):
    by_type = {ex.dns.qtype: ex for ex in _dns(_exchanges(lab_capture)) if ex.dns.lookup == "catalog.default"}
    assert set(by_type) == {"A", "AAAA"}  # glibc asks both, each its own lookup
    a = by_type["A"].dns
    assert (a.name, a.rcode, a.answers) == ("catalog.default.svc.cluster.local", "NOERROR", ["A 10.77.0.1"])
    assert [(t.name, t.rcode) for t in a.attempts] == [("catalog.default.web.svc.cluster.local", "NXDOMAIN")]
    assert by_type["AAAA"].dns.answers == []
    ex = by_type["A"]
    assert ex.conn.transport == "udp" and ex.conn.dport == 53 and ex.request_time < ex.response_time


def test_a_name_that_does_not_exist_tries_every_suffix(lab_capture):
    nope = [ex for ex in _dns(_exchanges(lab_capture)) if ex.dns.lookup == "nope" and ex.dns.qtype == "A"]
    assert len(nope) == 1
    d = nope[0].dns
    tried = [t.name for t in d.attempts] + [d.name]
    assert tried == ["nope.web.svc.cluster.local", "nope.svc.cluster.local", "nope.cluster.local", "nope"]
    assert d.rcode == "NXDOMAIN" and all(t.rcode == "NXDOMAIN" for t in d.attempts)


def test_every_dns_answer_agrees_with_tshark(lab_capture):
    rows = _tshark(lab_capture, "dns.flags.response == 1", "dns.qry.name", "dns.qry.type", "dns.flags.rcode",
                   "dns.a")
    qtypes = {"1": "A", "28": "AAAA"}
    theirs = sorted((name.lower(), qtypes[qtype], rcode, addr) for name, qtype, rcode, addr in rows)
    ours = []
    for ex in _dns(_exchanges(lab_capture)):
        d = ex.dns
        for t in d.attempts:
            ours.append((t.name.lower(), t.qtype, "3", ""))
        code = {"NOERROR": "0", "NXDOMAIN": "3"}[d.rcode]
        addrs = ",".join(a.split()[1] for a in d.answers if a.startswith("A "))
        ours.append((d.name.lower(), d.qtype, code, addrs))
    assert sorted(ours) == theirs


def test_slow_answer_latency_matches_tshark(lab_capture):
    slow = [ex for ex in _dns(_exchanges(lab_capture)) if ex.dns.name == "slow.web.svc.cluster.local"]
    assert {ex.dns.qtype for ex in slow} == {"A", "AAAA"}
    theirs = {qtype: float(t) for _, qtype, t in _tshark(lab_capture, "dns.flags.response == 1 and "
                                                         'dns.qry.name == "slow.web.svc.cluster.local"',
                                                         "dns.qry.name", "dns.qry.type", "dns.time")}
    for ex in slow:
        latency = ex.response_time - ex.request_time
        assert latency >= 0.3
        assert latency == pytest.approx(theirs["1" if ex.dns.qtype == "A" else "28"], abs=1e-5)


def test_lookups_start_the_flows_of_the_requests_they_led_to(lab_capture):
    analysis = analyze([lab_capture])
    by_id = {ex.id: ex for ex in analysis.exchanges}
    flows = {}
    for flow in analysis.flows:
        requests = [by_id[i] for i in flow.exchange_ids if by_id[i].exchange_type == "http"]
        flows[requests[0].uri] = flow
    assert set(flows) == {"/one", "/two"}  # the lookups worth telling: an NXDOMAIN, a slow answer
    for uri, name in (("/one", "catalog.default.svc.cluster.local"), ("/two", "slow.web.svc.cluster.local")):
        flow = flows[uri]
        assert [h.kind for h in flow.hops] == ["dns-lookup", "dns-lookup"]
        assert {h.evidence["name"] for h in flow.hops} == {name}
        assert flow.server == f"{SVC}:8080"
        assert flow.start == min(h.start for h in flow.hops)
    assert flows["/two"].hops[0].evidence["latency_ms"] >= 300
    text = diagram_text(flow_diagram(analysis.flows, analysis.by_id()))  # the lookups drawn first
    assert text.index("DNS A catalog.default") < text.index("NOERROR after 1 NXDOMAIN A 10.77.0.1") \
        < text.index(f"-> {SVC}: GET /one")
    assert flows["/one"].hops[0].evidence["tried"] == ["catalog.default.web.svc.cluster.local NXDOMAIN"]


def test_tls_inside_a_connect_tunnel_is_read_as_tshark_reads_it(lab_capture):
    exchanges = _exchanges(lab_capture)
    tunnelled = [ex for ex in exchanges if ex.tunnel == "CONNECT secure.lab:8443"]
    assert [ex.exchange_type for ex in tunnelled] == ["tls"]
    tls = tunnelled[0]
    connect = next(ex for ex in exchanges if ex.method == "CONNECT" and ex.uri == "secure.lab:8443")
    assert connect.status == 200 and connect.conn is tls.conn and tls.index == connect.index + 1
    theirs = _tshark(lab_capture, "tls.handshake.type == 1 and tcp", "tls.handshake.extensions_server_name",
                     "tls.handshake.extensions_alpn_str", "tcp.srcport")
    assert theirs == [[tls.sni, ",".join(tls.alpn), str(tls.conn.sport)]]
    assert tls.sni == "secure.lab" and tls.tls_version == "TLS 1.3"


def test_plain_http_inside_a_connect_tunnel(lab_capture):
    inner = [ex for ex in _exchanges(lab_capture) if ex.tunnel == f"CONNECT {SVC}:8080"]
    assert [(ex.method, ex.uri, ex.status) for ex in inner] == [("GET", "/four", 200)]


def test_quic_initials_give_sni_alpn_and_version_as_tshark_does(lab_capture):
    quic = [ex for ex in _exchanges(lab_capture) if ex.quic is not None]
    assert [ex.quic.version for ex in quic] == ["1", "2", "1"]
    theirs = _tshark(lab_capture, "quic and tls.handshake.type == 1", "quic.version",
                     "tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str")
    assert [(int(v.split(",")[0], 16), sni, alpn) for v, sni, alpn in theirs] == [
        ({"1": 1, "2": 0x6B3343CF}[ex.quic.version], ex.sni, ",".join(ex.alpn)) for ex in quic]
    for ex in quic:
        assert ex.exchange_type == "tls" and ex.conn.transport == "udp" and ex.conn.dport == 4433
        assert ex.sni == "quic.lab" and ex.tls_version == "TLS 1.3" and not ex.damage
        assert ex.quic.client_packets >= 3 and ex.quic.server_packets >= 2
    assert len(quic[2].alpn) == 151  # that ClientHello spanned several Initial packets


def test_quic_packet_counts_match_tshark(lab_capture):
    quic = [ex for ex in _exchanges(lab_capture) if ex.quic is not None]
    for ex in quic:
        c = ex.conn
        sent = _tshark(lab_capture, f"udp.srcport == {c.sport} and udp.dstport == {c.dport}", "frame.number")
        back = _tshark(lab_capture, f"udp.srcport == {c.dport} and udp.dstport == {c.sport}", "frame.number")
        # tshark counts datagrams here; several QUIC packets may be coalesced in one, counted once by us too
        assert (ex.quic.client_packets, ex.quic.server_packets) == (len(sent), len(back))


@pytest.mark.parametrize("backend", ["scapy", "pyshark"])
def test_backends_agree_on_the_lab_capture(lab_capture, backend):
    def view(exchanges):
        return sorted((ex.id, ex.to_json()) for ex in exchanges)

    assert view(_exchanges(lab_capture, backend)) == view(_exchanges(lab_capture))
