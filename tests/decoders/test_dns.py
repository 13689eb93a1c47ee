"""DNS: messages (decoders.dns_message), lookups with their search-domain attempts and retries
(decoders.dns_lookups), DNS over TCP, and which lookups join a request's flow (decoders.dns_flows),
on scapy-crafted captures read by all three backends."""

from __future__ import annotations

import struct

import pytest
from meshscope.decoders import analyze, get_backend, render_text
from meshscope.decoders.dns_lookups import DnsLookups
from meshscope.decoders.dns_message import parse_dns
from scapy.layers.dns import DNS, DNSQR, DNSRR

from tests.decoders.capture_builders import Conversation, http_request, http_response, write
from tests.decoders.udp_builders import T0, Resolver, datagram

BACKENDS = ["dpkt", "scapy", "pyshark"]
NX = 3


def _decode(path, backend="dpkt"):
    b = get_backend(backend)
    return list(b.decode(path)), b.report


# -- messages -----------------------------------------------------------------------------------
def test_message_fields_and_answers_as_text():
    raw = bytes(DNS(id=77, qr=1, qd=DNSQR(qname="www.example.com"),
                    an=[DNSRR(rrname="www.example.com", type="CNAME", rdata="edge.example.net"),
                        DNSRR(rrname="edge.example.net", rdata="192.0.2.1"),
                        DNSRR(rrname="edge.example.net", type="AAAA", rdata="2001:db8::1")]))
    msg = parse_dns(raw)
    assert (msg.id, msg.response, msg.rcode) == (77, True, "NOERROR")
    assert (msg.name, msg.qtype) == ("www.example.com", "A")
    assert msg.answers == ["CNAME edge.example.net", "A 192.0.2.1", "AAAA 2001:db8::1"]


@pytest.mark.parametrize("raw, why", [
    (b"\x00" * 11, "shorter than a DNS header"),
    (struct.pack("!HHHHHH", 1, 0x2800, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01", "opcode 5"),
    (struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2, "2 questions"),
    (struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01", "compression pointer loop"),
    (struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab", "label runs past"),
])
def test_what_is_not_a_lookup_is_refused_clearly(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_dns(raw)


def test_an_answer_cut_short_keeps_the_records_before_the_cut():
    raw = bytes(DNS(id=5, qr=1, qd=DNSQR(qname="a.example"),
                    an=[DNSRR(rrname="a.example", rdata="192.0.2.1"),
                        DNSRR(rrname="a.example", rdata="192.0.2.2")]))
    msg = parse_dns(raw[:-3])
    assert msg.answers == ["A 192.0.2.1"] and msg.answer_count == 1


# -- lookups ------------------------------------------------------------------------------------
def _kubernetes_lookups(r: Resolver) -> None:
    r.query(0.000, 1, "catalog.default.web.svc.cluster.local")
    r.answer(0.001, 1, "catalog.default.web.svc.cluster.local", NX)
    r.query(0.002, 2, "catalog.default.svc.cluster.local")
    r.answer(0.004, 2, "catalog.default.svc.cluster.local", 0, ("10.0.0.8",))
    # a retry with the same id after a timeout, then the (slow) answer
    r.query(1.000, 3, "api.web.svc.cluster.local")
    r.query(6.000, 3, "api.web.svc.cluster.local")
    r.answer(6.400, 3, "api.web.svc.cluster.local", 0, ("10.0.0.9",))
    # a query never answered
    r.query(7.000, 4, "lost.web.svc.cluster.local", cport=41001)


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_expansion_retries_and_silence(tmp_path, backend):
    r = Resolver()
    _kubernetes_lookups(r)
    exchanges, report = _decode(write(tmp_path / "dns.pcap", r.packets), backend)
    assert [ex.exchange_type for ex in exchanges] == ["dns"] * 3
    catalog, api, lost = exchanges
    d = catalog.dns
    assert (d.lookup, d.name, d.rcode, d.answers) == ("catalog.default", "catalog.default.svc.cluster.local",
                                                       "NOERROR", ["A 10.0.0.8"])
    assert [(a.name, a.rcode, a.query_time, a.answer_time) for a in d.attempts] == [
        ("catalog.default.web.svc.cluster.local", "NXDOMAIN", T0, T0 + 0.001)]
    assert (catalog.request_time, catalog.response_time) == (T0, T0 + 0.004)
    assert catalog.conn.key == ("10.1.0.5", 41000, "10.96.0.10", 53) and catalog.conn.transport == "udp"
    assert api.dns.retries == 1 and api.response_time - api.request_time == pytest.approx(5.4)
    assert lost.dns.rcode is None and lost.response_time is None and lost.damage == ["no answer captured"]
    assert (report.datagrams, report.dns_lookups, report.exchanges) == (8, 3, 3)


def test_a_retry_with_a_new_id_is_the_same_attempt(tmp_path):
    r = Resolver()
    r.query(0, 10, "x.web.svc.cluster.local")
    r.query(5, 11, "x.web.svc.cluster.local")
    r.answer(5.01, 11, "x.web.svc.cluster.local", 0, ("10.0.0.1",))
    (ex,), _ = _decode(write(tmp_path / "d.pcap", r.packets))
    assert (ex.dns.id, ex.dns.retries, ex.dns.attempts) == (11, 1, [])
    assert ex.request_time == T0


def test_a_name_that_exists_nowhere(tmp_path):
    r = Resolver()
    names = ["nope.web.svc.cluster.local", "nope.svc.cluster.local", "nope.cluster.local", "nope"]
    for i, name in enumerate(names):
        r.query(i * 0.01, 20 + i, name)
        r.answer(i * 0.01 + 0.002, 20 + i, name, NX)
    (ex,), _ = _decode(write(tmp_path / "d.pcap", r.packets))
    assert [a.name for a in ex.dns.attempts] + [ex.dns.name] == names
    assert ex.dns.rcode == "NXDOMAIN" and ex.dns.lookup == "nope"


def test_unrelated_names_and_late_queries_are_separate_lookups(tmp_path):
    r = Resolver()
    r.query(0, 1, "a.web.svc.cluster.local")
    r.answer(0.001, 1, "a.web.svc.cluster.local", NX)
    r.query(0.002, 2, "b.web.svc.cluster.local")  # another name: not an expansion of "a"
    r.answer(0.003, 2, "b.web.svc.cluster.local", 0, ("10.0.0.2",))
    r.query(10, 3, "c.web.svc.cluster.local")
    r.answer(10.001, 3, "c.web.svc.cluster.local", NX)
    r.query(15, 4, "c.svc.cluster.local")  # after the follow window: a new lookup
    r.answer(15.001, 4, "c.svc.cluster.local", NX)
    exchanges, _ = _decode(write(tmp_path / "d.pcap", r.packets))
    assert [(ex.dns.name, len(ex.dns.attempts)) for ex in exchanges] == [
        ("a.web.svc.cluster.local", 0), ("b.web.svc.cluster.local", 0), ("c.web.svc.cluster.local", 0),
        ("c.svc.cluster.local", 0)]


def test_answers_without_queries_and_duplicate_answers(tmp_path):
    r = Resolver()
    r.answer(0, 9, "orphan.example", 0, ("192.0.2.9",))
    r.query(1, 10, "dup.example")
    r.answer(1.001, 10, "dup.example", 0, ("192.0.2.10",))
    r.answer(1.002, 10, "dup.example", 0, ("192.0.2.10",))
    exchanges, _ = _decode(write(tmp_path / "d.pcap", r.packets))
    orphan = [ex for ex in exchanges if ex.dns.name == "orphan.example"]
    assert len(orphan) == 1 and orphan[0].damage == ["answer without a captured query"]
    assert orphan[0].request_time is None and orphan[0].response_time == T0
    dup = [ex for ex in exchanges if ex.dns.name == "dup.example"]
    assert len(dup) == 1 and not dup[0].damage


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_on_port_53_is_damage_not_a_crash(tmp_path, backend):
    pkts = [datagram(0, "10.1.0.5", 5000, "10.96.0.10", 53, b"\xff" * 40),
            datagram(0.1, "10.1.0.5", 5000, "10.96.0.10", 53, b"hello")]
    exchanges, report = _decode(write(tmp_path / "g.pcap", pkts), backend)
    assert exchanges == []
    assert report.datagrams == 2 and len(report.damage) == 2
    assert all("not a DNS message" in d for d in report.damage)


def test_open_lookups_are_bounded(monkeypatch):
    import meshscope.decoders.dns_lookups as mod

    monkeypatch.setattr(mod, "MAX_OPEN", 10)
    monkeypatch.setattr(mod, "MAX_PENDING", 15)
    ready = []
    lookups = DnsLookups("cap", ready)
    for i in range(100):
        msg = parse_dns(bytes(DNS(id=i, rd=1, qd=DNSQR(qname=f"n{i}.example"))))
        lookups.message(msg, T0 + i * 0.001, f"10.2.{i // 250}.{i % 250}", 40000, "10.96.0.10", 53)
    assert len(lookups.open) == 10 and len(lookups.pending) <= 15 and len(ready) == 90
    lookups.finish()
    assert len(ready) == 100 and not lookups.open


@pytest.mark.parametrize("backend", BACKENDS)
def test_dns_over_tcp_after_a_truncated_answer_is_the_same_lookup(tmp_path, backend):
    r = Resolver()
    name = "big.web.svc.cluster.local"
    r.query(0, 9, name)
    r.packets.append(r.answer(0.01, 9, name).copy())
    r.packets.pop(-2)
    r.packets[-1]["DNS"].tc = 1
    conv = Conversation(client=r.client, server=r.server, cport=41500, sport=53, t=T0 + 0.02).handshake()
    q = bytes(DNS(id=10, rd=1, qd=DNSQR(qname=name)))
    a = bytes(DNS(id=10, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.1.1.1")))
    conv.send(True, struct.pack("!H", len(q)) + q)
    conv.send(False, struct.pack("!H", len(a)) + a[:20])  # the answer in two segments
    conv.send(False, a[20:])
    conv.close()
    exchanges, _ = _decode(write(tmp_path / "tc.pcap", r.packets + conv.packets), backend)
    assert len(exchanges) == 1
    d = exchanges[0].dns
    assert (d.name, d.answers, d.retries, d.attempts) == (name, ["A 10.1.1.1"], 1, [])
    assert exchanges[0].conn.transport == "tcp" and exchanges[0].conn.sport == 41500
    assert exchanges[0].request_time == T0


# -- flows --------------------------------------------------------------------------------------
def test_only_lookups_worth_telling_join_the_request_flow(tmp_path):
    r = Resolver(client="10.1.0.5")
    _kubernetes_lookups(r)
    r.query(8.0, 30, "fast.web.svc.cluster.local")  # a clean, quick lookup: not worth a flow
    r.answer(8.001, 30, "fast.web.svc.cluster.local", 0, ("10.0.0.7",))
    pkts = list(r.packets)
    for t, host, server in ((0.010, "catalog.default:3000", "10.0.0.8"), (6.5, "api", "10.0.0.9"),
                            (8.1, "fast", "10.0.0.7")):
        conv = Conversation(client="10.1.0.5", server=server, cport=50000 + int(t * 10), sport=3000,
                            cisn=int(t * 1e6), t=T0 + t).handshake()  # own ISNs: not one NAT'd connection
        conv.send(True, http_request(uri=f"/{host.split('.')[0].split(':')[0]}", host=host))
        conv.send(False, http_response())
        pkts += conv.close().packets
    analysis = analyze([write(tmp_path / "f.pcap", pkts)])
    by_id = {ex.id: ex for ex in analysis.exchanges}
    flows = {by_id[f.exchange_ids[0]].uri: f for f in analysis.flows}
    assert set(flows) == {"/catalog", "/api"}
    assert [h.kind for h in flows["/catalog"].hops] == ["dns-lookup"]
    evidence = flows["/catalog"].hops[0].evidence
    assert evidence["tried"] == ["catalog.default.web.svc.cluster.local NXDOMAIN"]
    assert flows["/catalog"].server == "10.0.0.8:3000" and flows["/catalog"].start == T0
    assert flows["/api"].hops[0].evidence["retries"] == 1
    text = render_text(analysis.flows, by_id)
    assert ("A catalog.default.svc.cluster.local NOERROR; "
            "tried catalog.default.web.svc.cluster.local NXDOMAIN") in text
    assert "A api.web.svc.cluster.local NOERROR; sent 2 times" in text
    assert flows["/api"].hops[0].evidence["latency_ms"] == pytest.approx(5400, abs=0.01)
