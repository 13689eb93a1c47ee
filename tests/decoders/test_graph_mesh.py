"""Istio's marks drawn in the flow graphs, the same through SVG, text and Mermaid (one Diagram): a mesh
mTLS leg by its destination service (from Istio's SNI) and "mesh mTLS" (its ALPN), each end's SPIFFE
namespace and service account, and a hop inferred without keys as "inferred (confidence)"; the
hop listing (flow_text) says the same in words."""

from __future__ import annotations

import re

import pytest
from meshscope.decoders.analysis import stitch
from meshscope.decoders.flow_text import render_text
from meshscope.decoders.graph_mermaid import diagram_mermaid
from meshscope.decoders.graph_svg import diagram_svg
from meshscope.decoders.graph_text import diagram_text
from meshscope.decoders.sequence import flow_diagram

from tests.decoders.made_exchanges import conn, http, tls
from tests.decoders.mermaid_parser import mermaid_parse
from tests.decoders.test_capture_pictures import svg_texts

SNI = "outbound_.8080_.v1_.catalog.shop.svc.cluster.local"
WEBAPP_ID, CATALOG_ID = "spiffe://cluster.local/ns/shop/sa/webapp", "spiffe://cluster.local/ns/shop/sa/catalog"


def mesh_leg(t: float = 1000.0, *, sport: int = 41000, identities: bool = True):
    """webapp's sidecar → catalog's sidecar over mesh mTLS (no keys), then catalog's sidecar → its app
    from 127.0.0.6, as tcpdump on catalog's pod (eth0 and loopback) records them."""
    eth0 = conn(f"10.10.0.9:{sport}", "10.10.0.8:8080", isn=5000 + sport, t=t, interface="eth0")
    leg = tls(eth0, t + 0.001, SNI, alpn=["istio-peer-exchange", "istio"])
    if identities:
        leg.tls_client_identity, leg.tls_server_identity = WEBAPP_ID, CATALOG_ID
    lo = conn(f"127.0.0.6:{sport + 1}", "10.10.0.8:8080", isn=9000 + sport, t=t + 0.004, interface="lo")
    app = http(lo, t + 0.005, uri="/items", host="catalog.shop:8080",
               headers={"x-forwarded-proto": "https", "x-request-id": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"})
    return [leg, app]


@pytest.fixture(scope="module")
def mesh():
    a = stitch(mesh_leg())
    by_id = a.by_id()
    [flow] = [f for f in a.flows if f.hops]
    [hop] = flow.hops
    assert hop.kind == "l7-proxy" and hop.evidence["inferred"] is True
    return a, by_id, flow_diagram(a.flows, by_id), hop.evidence["confidence"]


def test_svg_draws_destination_mesh_mark_identities_and_inferred(mesh):
    a, by_id, diagram, confidence = mesh
    texts = "\n".join(svg_texts(diagram_svg(diagram)))
    assert "ClientHello → catalog.shop:8080 v1 mesh mTLS" in texts  # Istio's SNI read as its service
    assert "istio-peer-exchange" not in texts  # the mark stands for the ALPN list
    assert "SPIFFE ns shop, sa webapp" in texts and "SPIFFE ns shop, sa catalog" in texts
    assert f"l7-proxy inferred ({confidence:.2f})" in texts
    assert "TLS → catalog.shop:8080 v1 mesh mTLS" in texts  # the flow's title


def test_text_and_mermaid_say_the_same(mesh):
    a, by_id, diagram, confidence = mesh
    text = diagram_text(diagram)
    # each identity on its own end's column: the client's on webapp's address, the server's on catalog's
    assert "[10.10.0.9] SPIFFE ns shop, sa webapp" in text
    assert "[10.10.0.8] SPIFFE ns shop, sa catalog" in text
    assert "10.10.0.9 -> 10.10.0.8: ClientHello → catalog.shop:8080 v1 mesh mTLS" in text
    assert f"l7-proxy inferred ({confidence:.2f})" in text
    mermaid = diagram_mermaid(diagram)
    for words in ("ClientHello → catalog.shop:8080 v1 mesh mTLS", "Note over P0: SPIFFE ns shop, sa webapp",
                  "SPIFFE ns shop, sa catalog", f"l7-proxy inferred ({confidence:.2f})"):
        assert words in mermaid, words
    listing = render_text(a.flows, by_id)
    assert "TLS → catalog.shop:8080 v1 mesh mTLS (client SPIFFE ns shop, sa webapp; server SPIFFE ns shop, " \
        "sa catalog)" in listing
    assert f"inferred (confidence {confidence:.2f}) from istio sni names the authority's service" in listing
    assert "sidecar inbound: 127.0.0.6 to where the mTLS leg arrived" in listing


def test_without_certificates_the_leg_is_still_marked_and_plain_tls_is_not():
    a = stitch(mesh_leg(identities=False) + [tls(conn("172.18.0.1:50000", "10.10.0.6:443", isn=1, t=990.0),
                                                 990.001, "shop.example.com", alpn=["h2", "http/1.1"])])
    text = diagram_text(flow_diagram(a.flows, a.by_id()))
    assert "ClientHello → catalog.shop:8080 v1 mesh mTLS" in text and "SPIFFE" not in text
    from meshscope.decoders.capture_picture import exchange_diagram
    plain = diagram_text(exchange_diagram(a.exchanges))
    [hello] = [line for line in plain.splitlines() if "shop.example.com" in line]
    assert "ClientHello SNI shop.example.com ALPN h2" in hello and "mesh" not in hello


def test_an_ambiguous_inferred_hop_says_so():
    # two mTLS legs from two clients to one pod, both just before the plaintext request: either did it
    a, b = mesh_leg(sport=41000), mesh_leg(t=1000.0005, sport=42000)
    b[0].conn.src = "10.10.0.7"
    flows = stitch([a[0], b[0], a[1]])
    hops = [h for f in flows.flows for h in f.hops]
    assert len(hops) == 2 and all(h.evidence.get("ambiguous") for h in hops)
    text = diagram_text(flow_diagram(flows.flows, flows.by_id()))
    assert len(re.findall(r"l7-proxy ambiguous, inferred \(\d\.\d\d\)", text)) == 2
    listing = render_text(flows.flows, flows.by_id())
    assert "ambiguous: one of " in listing
    assert "10.10.0.9:41000 (0." in listing and "10.10.0.7:42000 (0." in listing


@pytest.mark.chromium
def test_mermaids_parser_reads_the_mesh_labels(mesh):
    assert mermaid_parse([diagram_mermaid(mesh[2])]) == ["ok"]
