"""A request's trace graph: one Diagram with a section for its proxy hops, then the decoders' section per
packet flow, drawn by the same renderers as a capture's flow graph."""

from meshscope.decoders import NODEPORT_LAB, analyze, diagram_svg, diagram_text, flow_diagram

from meshscope.model import AccessRecord
from meshscope.trace_graph import trace_diagram, trace_svg
from meshscope.traces import TraceView, order_hops
from tests.api.conftest import RID, lab_records


def test_hops_then_packet_flows_in_one_diagram():
    lab = analyze([NODEPORT_LAB])
    packets = flow_diagram(lab.flows, lab.by_id())
    hops = order_hops([r for r in lab_records() if isinstance(r, AccessRecord)])
    view = TraceView(request_id=RID, request_id_norm=RID, hops=hops, exchanges=lab.exchanges, flows=lab.flows)
    diagram = trace_diagram(view)
    assert [s.title for s in diagram.sections] == [f"proxy access logs  x-request-id {RID}"] + [
        s.title for s in packets.sections]
    assert len(diagram.sections[0].messages) == 5 * len(hops)
    assert diagram.labels["10.10.0.6"] == "gateway istio-ingressgateway"  # the node id's workload part
    assert diagram.labels["10.10.0.9"] == "sidecar webapp-1"
    assert len(set(diagram.participants)) == len(diagram.participants)
    drawn = {p for s in diagram.sections for m in s.messages for p in (m.src, m.dst)}
    assert drawn == set(diagram.participants)
    text = diagram_text(diagram)
    assert "[gateway istio-ingressgateway (10.10.0.6)] gateway access log" in text
    assert trace_svg(view) == diagram_svg(diagram)
    # building the trace graph leaves the packet diagram it drew from as it was
    assert flow_diagram(lab.flows, lab.by_id()) == packets


def test_a_loopback_lab_keeps_client_proxy_and_upstream_apart():
    """Everything on 127.0.0.1 (the demo stack, the web page's test): the proxy and upstream columns
    take their ports, so the hop does not fold into one column of self-messages."""
    record = AccessRecord(
        start_time=1.7e9, duration_ms=3.0, node_id="lab-gateway", node_cluster="gateway", request_id=RID,
        method="GET", authority="shop.local", path="/headers", response_code=200,
        upstream_cluster="webapp", upstream_host="127.0.0.1:54813",
        downstream_remote="127.0.0.1:41034", downstream_local="127.0.0.1:36479",
    )
    view = TraceView(request_id=RID, request_id_norm=RID, hops=order_hops([record]), exchanges=[], flows=[])
    diagram = trace_diagram(view)
    assert diagram.participants == ["127.0.0.1", "127.0.0.1:36479", "127.0.0.1:54813"]
    assert diagram.labels["127.0.0.1:54813"] == "webapp"
    request, note, forward, answer, reply = diagram.sections[0].messages
    assert (request.src, request.dst, forward.dst, reply.dst) == (
        "127.0.0.1", "127.0.0.1:36479", "127.0.0.1:54813", "127.0.0.1")
    assert note.src == note.dst == "127.0.0.1:36479"
