"""Real captures of the NodePort lab (network namespaces, iptables DNAT/SNAT, real Envoy, real tcpdump)
stitched into flows: hop kinds in order, NodePorts, NAT kind, SNI, request ids (raw and
normalised), pooled upstream pairing, retries — in one `-i any` capture and across two captures."""

from __future__ import annotations

import pytest
from meshscope.decoders.analysis import analyze

from meshscope.model import normalize_request_id
from tests.conftest import need_binary, need_root
from tests.decoders.lab import CLIENT, GW, NODE, NODEPORT, SNI, TLS_NODEPORT, WEBAPP, Lab

pytestmark = [pytest.mark.root, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(120)]


def _run_lab(tmp_path, snat: bool):
    need_root()
    for tool in ("ip", "iptables", "tcpdump", "openssl"):
        need_binary(tool)
    with Lab(tmp_path, snat=snat) as lab:
        caps = {"node": lab.capture("node", "any", tmp_path / "node.pcap"),
                "client": lab.capture("client", "eth0", tmp_path / "client.pcap"),
                "gw": lab.capture("gw", "eth0", tmp_path / "gw.pcap")}
        rows = lab.traffic()
        for p in caps.values():
            Lab.stop_capture(p)
    assert [r["status"] for r in rows] == [200, 200, 200, 200], rows
    return rows


def _by_path(flows, exchanges):
    """Flows with hops keyed by what the client asked for ("/products#0", "/flaky", "tls")."""
    out: dict[str, list] = {}
    for f in flows:
        if not f.hops:
            continue
        root = exchanges[f.exchange_ids[0]]
        out.setdefault(root.uri if root.exchange_type == "http" else "tls", []).append(f)
    return out


@pytest.fixture(scope="module")
def dnat_lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("dnat-lab")
    return d, _run_lab(d, snat=False)


def test_one_any_capture_on_the_node_gives_the_whole_path(dnat_lab):
    d, rows = dnat_lab
    a = analyze([d / "node.pcap"])
    flows = _by_path(a.flows, a.by_id())
    assert sorted(flows) == ["/flaky", "/products", "tls"] and len(flows["/products"]) == 2
    own, generated = sorted(flows["/products"], key=lambda f: f.start)

    assert [h.kind for h in own.hops] == ["nat-dnat", "l7-proxy", "app-call"]
    nat, proxy, app = own.hops
    assert nat.nodeport == NODEPORT and nat.src == f"{CLIENT}:{rows[0]['sport']}" and nat.dst == f"{GW}:8080"
    assert nat.evidence["dnat"] and not nat.evidence["snat"] and nat.evidence["match"] == "isn"
    assert nat.evidence["pre"] == f"{CLIENT}:{rows[0]['sport']} → {NODE}:{NODEPORT}"
    assert proxy.src.startswith(f"{GW}:") and proxy.dst == f"{WEBAPP}:8080"
    assert {"x-request-id", "x-forwarded-for"} <= set(proxy.evidence["matched_by"])
    assert proxy.evidence["x_forwarded_for"] == CLIENT
    sent = rows[0]["request_id"]
    assert proxy.request_ids[0] == sent  # raw ids as seen on each side …
    assert all(normalize_request_id(r) == sent for r in proxy.request_ids)  # … equal once normalised
    assert own.request_id == sent
    assert proxy.src_name == "istio-system/istio-ingressgateway" and proxy.dst_name == "default/webapp"
    assert app.src.startswith(f"{WEBAPP}:") and app.dst_name == "default/catalog"

    # Envoy generated the id of the second request, and reused its pooled upstream connection
    assert [h.kind for h in generated.hops] == ["nat-dnat", "l7-proxy", "app-call"]
    assert generated.request_id and generated.request_id != own.request_id
    assert generated.hops[1].src == proxy.src  # same keep-alive upstream connection, two flows
    assert "x-forwarded-for" in generated.hops[1].evidence["matched_by"]

    (flaky,) = flows["/flaky"]
    assert [h.kind for h in flaky.hops] == ["nat-dnat", "l7-proxy", "app-call"]
    retried = flaky.hops[1]
    assert retried.retries == 1
    assert [at["status"] for at in retried.evidence["attempts"]] == [503, 200]
    assert [at["attempt_count"] for at in retried.evidence["attempts"]] == ["1", "2"]
    assert flaky.request_id == rows[2]["request_id"]

    (tls,) = flows["tls"]
    assert [h.kind for h in tls.hops] == ["nat-dnat", "tls-passthrough"]
    assert tls.hops[0].nodeport == TLS_NODEPORT and tls.hops[0].dst == f"{GW}:8443"
    assert tls.hops[1].sni == SNI and tls.hops[1].dst == f"{WEBAPP}:8443"


def test_two_captures_on_either_side_of_the_nat(dnat_lab):
    d, rows = dnat_lab
    a = analyze([d / "client.pcap", d / "gw.pcap"])
    flows = _by_path(a.flows, a.by_id())
    own = min(flows["/products"], key=lambda f: f.start)
    assert [h.kind for h in own.hops] == ["nat-dnat", "l7-proxy"]  # webapp → catalog is not on gw's eth0
    nat = own.hops[0]
    assert nat.nodeport == NODEPORT and not nat.evidence["same_capture"]
    assert nat.evidence["captures"] == ["client.pcap", "gw.pcap"]
    assert [h.kind for h in flows["tls"][0].hops] == ["nat-dnat", "tls-passthrough"]


def test_copies_across_captures_fold_into_one_sighting(dnat_lab):
    d, _ = dnat_lab
    alone = analyze([d / "node.pcap"])
    together = analyze([d / "node.pcap", d / "client.pcap", d / "gw.pcap"])
    kinds = sorted(tuple(h.kind for h in f.hops) for f in together.flows if f.hops)
    assert kinds == sorted(tuple(h.kind for h in f.hops) for f in alone.flows if f.hops)
    assert together.duplicates > 0 and len(together.exchanges) == len(alone.exchanges)


def test_snat_variant_is_reported_as_snat(tmp_path):
    rows = _run_lab(tmp_path, snat=True)
    a = analyze([tmp_path / "node.pcap"])
    flows = _by_path(a.flows, a.by_id())
    own = min(flows["/products"], key=lambda f: f.start)
    assert [h.kind for h in own.hops] == ["nat-snat", "l7-proxy", "app-call"]
    nat = own.hops[0]
    assert nat.nodeport == NODEPORT and nat.evidence["snat"] and nat.evidence["dnat"]
    assert nat.evidence["source_rewritten_to"].startswith(f"{NODE}:")
    assert nat.src == f"{CLIENT}:{rows[0]['sport']}"
    assert own.hops[1].evidence["x_forwarded_for"] == NODE  # the gateway saw the node, not the client
    assert normalize_request_id(own.hops[1].request_ids[-1]) == rows[0]["request_id"]
    assert [h.kind for h in flows["tls"][0].hops] == ["nat-snat", "tls-passthrough"]
