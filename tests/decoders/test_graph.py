"""Flow graphs of the bundled lab capture: SVG (well-formed, one column per host with workload names,
handshakes, ClientHello with SNI, requests, responses, NAT and proxy hops) and the same as Mermaid."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from meshscope.decoders.analysis import analyze, stitch
from meshscope.decoders.graph_mermaid import diagram_mermaid, render_mermaid
from meshscope.decoders.graph_svg import diagram_svg, render_svg
from meshscope.decoders.graph_text import diagram_text
from meshscope.decoders.samples import NODEPORT_LAB
from meshscope.decoders.sequence import flow_diagram

from tests.decoders.made_exchanges import RID, lab_path

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def lab():
    return analyze([NODEPORT_LAB])


def _texts(svg: str) -> list[str]:
    """Each text's full wording: a text cut to fit its box keeps it in its <title>."""
    root = ET.fromstring(svg)  # well-formed, or this raises
    out = []
    for t in root.iter(f"{SVG_NS}text"):
        title = t.find(f"{SVG_NS}title")
        out.append(title.text or "" if title is not None else "".join(t.itertext()))
    return out


def test_svg_draws_the_lab_path(lab):
    svg = render_svg(lab.flows, lab.by_id())
    texts = _texts(svg)
    for column in (
        "node",
        "istio-system/istio-ingressgateway",
        "default/webapp",
        "default/catalog",
        "172.18.0.1",
    ):
        assert column in texts
    joined = "\n".join(texts)
    assert (
        "DNAT NodePort 30000 → 10.10.0.6:8080" in joined and "DNAT NodePort 30443 → 10.10.0.6:8443" in joined
    )
    assert joined.count("ClientHello SNI secure.lab") == 2  # before and after the passthrough proxy
    assert "tls-passthrough SNI secure.lab" in joined and "l7-proxy ×2 attempts" in joined
    assert "TCP handshake → 172.18.0.2:30000" in joined and "GET /products" in joined and "503" in joined
    assert svg.count('marker-end="url(#a-nat)"') == 4  # one DNAT per client connection
    assert len(re.findall(r"<text[^>]*class=\"flow\"", svg)) == 4
    offsets = [float(t[1:-3]) for t in texts if re.fullmatch(r"\+-?[0-9.]+ ms", t)]
    assert offsets and min(offsets) >= 0  # nothing drawn before its flow began (pooled connections)


def test_svg_escapes_what_came_off_the_wire():
    exchanges = lab_path(rid=RID)
    for ex in exchanges:
        ex.uri = '/a<script>&b="1"'
    a = stitch(exchanges)
    texts = "\n".join(_texts(render_svg(a.flows, a.by_id())))
    assert '/a<script>&b="1"' in texts


def test_max_flows_bounds_the_drawing(lab):
    assert len(re.findall(r'class="flow"', render_svg(lab.flows, lab.by_id(), max_flows=1))) == 1


def test_mermaid_is_the_same_diagram(lab):
    text = render_mermaid(lab.flows, lab.by_id())
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    aliases = {m.group(1) for m in (re.match(r"\s+participant (P\d+) as ", ln) for ln in lines) if m}
    used = set(re.findall(r"\b(P\d+)\b", text))
    assert used == aliases and len(aliases) == 5  # client, node, gateway, webapp, catalog; no strays
    assert "participant" in text and "istio-system/istio-ingressgateway (10.10.0.6)" in text
    assert sum("--)" in ln and "DNAT NodePort" in ln for ln in lines) == 4
    assert any("ClientHello SNI secure.lab" in ln for ln in lines)
    assert text.count("rect rgb") == text.count("    end") == 4
    assert not any(";" in ln or "#" in ln for ln in lines[1:])  # Mermaid syntax characters are removed


def test_text_is_the_same_diagram(lab):
    """The three renderers take one Diagram: the text one shows the sections and arrows the others draw."""
    diagram = flow_diagram(lab.flows, lab.by_id())
    text = diagram_text(diagram)
    assert [s.title for s in diagram.sections] == re.findall(r"^flow \d+: (.*)$", text, re.M)
    assert text.count("DNAT NodePort") == 4 and text.count("ClientHello SNI secure.lab") == 2
    assert "172.18.0.1 -> node (172.18.0.2): TCP handshake → 172.18.0.2:30000" in text
    assert len(text.splitlines()) == len(diagram.sections) + sum(len(s.messages) for s in diagram.sections)
    assert diagram_mermaid(diagram) == render_mermaid(lab.flows, lab.by_id())
    assert diagram_svg(diagram) == render_svg(lab.flows, lab.by_id())


def test_http2_streams_show_their_stream_id_and_grpc_method_and_status(tmp_path):
    """A gRPC call through a proxy, retried on UNAVAILABLE: the graphs name the method, the stream and
    each attempt's gRPC status (SVG, Mermaid and text draw the same Diagram)."""
    from meshscope.decoders.flow_text import render_text

    from tests.decoders.capture_builders import Conversation, write
    from tests.decoders.h2_builders import H2Pair, grpc_frame

    call = [(":method", "POST"), (":scheme", "http"), (":path", "/shop.v1.Catalog/List"),
            (":authority", "cat"), ("content-type", "application/grpc"), ("x-request-id", "grpc-call-1")]
    down = H2Pair(Conversation(client="10.0.0.1", server="10.0.0.5", sport=8080)).start()
    up = H2Pair(Conversation(client="10.0.0.5", server="10.0.0.9", sport=50051, cisn=7000,
                             sisn=90000)).start()
    sid = down.request(call, grpc_frame(b""))
    up.conv.t = down.conv.t
    for attempt in (1, 2):
        u = up.request(call + [("x-envoy-attempt-count", str(attempt))], grpc_frame(b""))
        up.respond(u, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14")])
    down.conv.t = up.conv.t
    down.respond(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14")])
    a = analyze([write(tmp_path / "grpc.pcap", sorted(down.conv.packets + up.conv.packets,
                                                      key=lambda p: float(p.time)))])
    diagram = flow_diagram(a.flows, a.by_id())
    text = diagram_text(diagram)
    assert "gRPC Catalog/List stream 1" in text and "gRPC Catalog/List stream 3" in text
    assert text.count("<- ") >= 3 and text.count("200 UNAVAILABLE") == 3
    assert "l7-proxy ×2 attempts" in text
    mermaid = diagram_mermaid(diagram)
    assert "gRPC Catalog/List stream 1" in mermaid and "200 UNAVAILABLE" in mermaid
    assert "gRPC Catalog/List stream 1" in " ".join(_texts(diagram_svg(diagram)))
    flows = render_text(a.flows, a.by_id())
    assert "gRPC Catalog/List stream 1 cat → 200 UNAVAILABLE" in flows
    assert "attempts stream 1 200 UNAVAILABLE, stream 3 200 UNAVAILABLE" in flows
