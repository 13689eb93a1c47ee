"""NAT hops from scapy-crafted captures: DNAT and SNAT in one `-i any` capture or across two, copies on
several interfaces, captures without the handshake, and look-alikes that are not NAT."""

from __future__ import annotations

from meshscope.decoders.analysis import analyze

from tests.decoders.stitch_captures import Conversation, http_request, http_response, view, write

T = 1_700_000_000.0
CLIENT, NODEPORT, POD = "172.18.0.1:57536", "172.18.0.2:30000", "10.10.0.6:8080"


def _conv(
    isn: int = 1_000_000, t: float = T, rid: str = "4c3f9e1a-2b7d-4e11-8a9f-0d3c5b6a7e81"
) -> Conversation:
    req = http_request("GET", "/products", {"x-request-id": rid, "user-agent": "curl/8"})
    return Conversation(isn, isn * 3 + 7, t).exchange(req, http_response(200, b"[]"), took=0.02).close()


def _nat_hops(a):
    return [h for f in a.flows for h in f.hops if h.kind.startswith("nat-")]


def test_dnat_in_one_any_capture_with_copies_on_two_interfaces(tmp_path):
    c = _conv()
    pcap = write(
        tmp_path / "node.pcap",
        view(c, CLIENT, NODEPORT, ifindex=2),
        view(c, CLIENT, POD, delay=20e-6, ifindex=5),  # after DNAT, out of the node's veth
        view(c, CLIENT, POD, delay=30e-6, ifindex=6),
    )  # … and the same packets on the bridge
    a = analyze([pcap])
    (hop,) = _nat_hops(a)
    assert hop.kind == "nat-dnat" and hop.nodeport == 30000
    assert hop.src == CLIENT and hop.dst == POD
    ev = hop.evidence
    assert ev["dnat"] and not ev["snat"] and ev["match"] == "isn" and ev["same_capture"]
    assert ev["client_isn"] == 1_000_000 and ev["pre"] == f"{CLIENT} → {NODEPORT}"
    assert 0 < ev["dt_ms"] < 1
    assert len(a.flows) == 1  # the copies are neither new connections nor new flows
    assert len(hop.exchange_ids) == 2  # the request as seen before and after the NAT


def test_dnat_across_two_captures(tmp_path):
    c = _conv()
    node = write(tmp_path / "node-eth0.pcap", view(c, CLIENT, NODEPORT))
    pod = write(tmp_path / "gw-eth0.pcap", view(c, CLIENT, POD, delay=50e-6))
    (hop,) = _nat_hops(analyze([pod, node]))  # order of the files does not matter
    assert hop.kind == "nat-dnat" and hop.nodeport == 30000 and not hop.evidence["same_capture"]
    assert hop.evidence["captures"] == ["gw-eth0.pcap", "node-eth0.pcap"]
    assert hop.evidence["pre"].endswith(NODEPORT)


def test_snat_as_with_external_traffic_policy_cluster(tmp_path):
    c = _conv()
    pcap = write(
        tmp_path / "node.pcap",
        view(c, CLIENT, NODEPORT, ifindex=2),
        view(c, "172.18.0.2:61000", POD, delay=20e-6, ifindex=5),
    )
    (hop,) = _nat_hops(analyze([pcap]))
    assert hop.kind == "nat-snat" and hop.nodeport == 30000
    assert hop.evidence["snat"] and hop.evidence["dnat"]
    assert hop.evidence["source_rewritten_to"] == "172.18.0.2:61000"
    assert hop.src == CLIENT and hop.dst == POD


def test_egress_snat_without_dnat_has_no_nodeport(tmp_path):
    c = _conv()
    pcap = write(
        tmp_path / "node.pcap",
        view(c, "10.10.0.9:40000", "10.20.0.5:8080", ifindex=5),
        view(c, "172.18.0.2:40000", "10.20.0.5:8080", delay=20e-6, ifindex=2),
    )
    (hop,) = _nat_hops(analyze([pcap]))
    assert hop.kind == "nat-snat" and hop.nodeport is None and not hop.evidence["dnat"]


def test_without_the_handshake_the_sides_match_by_payload_and_timing(tmp_path):
    c = _conv()
    pcap = write(
        tmp_path / "late.pcap",
        view(c, CLIENT, NODEPORT, handshake=False, ifindex=2),
        view(c, CLIENT, POD, delay=20e-6, handshake=False, ifindex=5),
    )
    (hop,) = _nat_hops(analyze([pcap]))
    assert hop.kind == "nat-dnat" and hop.nodeport == 30000 and hop.evidence["match"] == "payload+timing"


def test_look_alikes_are_not_nat(tmp_path):
    # the same request twice from one client on two connections, and a reused 5-tuple with a new ISN
    a1, a2 = _conv(isn=10, t=T), _conv(isn=20, t=T + 0.0001)
    reused = _conv(isn=30, t=T + 5)
    pcap = write(
        tmp_path / "twice.pcap",
        view(a1, CLIENT, POD, handshake=False),
        view(a2, "172.18.0.1:57537", POD, handshake=False),
        view(reused, CLIENT, POD),
    )
    a = analyze([pcap])
    assert a.flows == [] and len(a.exchanges) == 3  # three connections on their own: no flow


def test_the_same_connection_in_two_captures_folds_into_one(tmp_path):
    c = _conv()
    one = write(tmp_path / "a.pcap", view(c, CLIENT, POD))
    two = write(tmp_path / "b.pcap", view(c, CLIENT, POD, delay=10e-6))
    a = analyze([one, two])
    assert a.flows == [] and a.duplicates == 1 and len(a.exchanges) == 1
