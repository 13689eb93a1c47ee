"""Flows: the lab path's hops in order, with evidence, timings and workload names."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.analysis import analyze, stitch
from meshscope.decoders.flows import MAX_DEPTH
from meshscope.decoders.samples import NODEPORT_LAB

from meshscope.model import HOP_KINDS, Flow, Hop
from tests.conftest import need_binary
from tests.decoders.made_exchanges import RID, RID_SAMPLED, conn, http, lab_path, tls


def test_lab_path_is_one_flow_of_three_hops():
    a = stitch(lab_path(rid=RID))
    assert len(a.flows) == 1
    flow = a.flows[0]
    assert [h.kind for h in flow.hops] == ["nat-dnat", "l7-proxy", "app-call"]
    nat, proxy, app = flow.hops
    assert nat.nodeport == 30000 and nat.src == "172.18.0.1:57536" and nat.dst == "10.10.0.6:8080"
    assert proxy.src == "10.10.0.6:46612" and proxy.dst == "10.10.0.9:8080"
    assert proxy.src_name == "istio-system/istio-ingressgateway" and proxy.dst_name == "default/webapp"
    assert proxy.request_ids == [RID, RID_SAMPLED]
    assert {"x-request-id", "x-forwarded-for"} <= set(proxy.evidence["matched_by"])
    assert app.src == "10.10.0.9:40000" and app.dst == "10.10.0.8:3000"
    assert flow.request_id == RID and flow.client == "172.18.0.1:57536" and flow.server == "10.10.0.8:3000"
    assert flow.start <= nat.start < proxy.start < app.start and flow.end >= app.end
    assert a.duplicates == 1  # the copy on the bridge folded away


def test_a_service_dnat_on_the_app_call_comes_right_after_it():
    # webapp calls catalog's ClusterIP 10.96.0.20:3000; kube-proxy rewrites it to the pod 10.10.0.8:3000
    ex = lab_path(rid=RID)
    call = ex[-1]
    pre = conn("10.10.0.9:40000", "10.96.0.20:3000", isn=555, t=call.conn.syn_time - 0.00001)
    ex.append(http(pre, call.request_time - 0.00001, uri="/items", dur=0.02, headers=dict(call.headers),
                   host="catalog:3000"))
    call.conn.client_isn, call.conn.server_isn = pre.client_isn, pre.server_isn
    (flow,) = stitch(ex).flows
    assert [h.kind for h in flow.hops] == ["nat-dnat", "l7-proxy", "app-call", "nat-dnat"]
    svc = flow.hops[-1]
    assert svc.nodeport is None and svc.evidence["service"] == "10.96.0.20:3000"
    assert svc.src == "10.10.0.9:40000" and svc.dst == "10.10.0.8:3000"
    assert flow.server == "10.10.0.8:3000"


def test_names_from_response_metadata_and_json_round_trip():
    ex = lab_path(rid=RID)
    ex[-1].server_peer_workload, ex[-1].server_peer_namespace = "catalog", "default"
    (flow,) = stitch(ex).flows
    assert flow.hops[-1].dst_name == "default/catalog"
    back = Flow.from_json(flow.to_json())
    assert back == flow and back.id == flow.id and isinstance(back.hops[0], Hop)


def test_a_plain_request_is_no_flow_but_is_kept():
    c = conn("10.0.0.1:5000", "10.0.0.2:80", isn=9, t=1.0)
    a = stitch([http(c, 1.001)])
    assert a.flows == [] and len(a.exchanges) == 1


_endpoints = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "172.18.0.2"])
_ids = st.sampled_from([None, RID, RID_SAMPLED, "66666666-7777-4888-9999-aaaaaaaaaaaa", "not-a-uuid"])


@st.composite
def _exchanges(draw):
    out = []
    for i in range(draw(st.integers(0, 12))):
        src, dst = draw(_endpoints), draw(_endpoints)
        isn = draw(st.sampled_from([None, 1, 2, 3, 1000 + i]))
        t = draw(st.floats(0, 2, allow_nan=False))
        c = conn(f"{src}:{draw(st.sampled_from([1000, 1001, 30000]))}",
                 f"{dst}:{draw(st.sampled_from([80, 8080, 30000]))}", isn=isn, t=t)
        rid = draw(_ids)
        headers = {"x-request-id": rid} if rid else {}
        if draw(st.booleans()):
            headers["x-forwarded-for"] = draw(st.sampled_from(["10.0.0.1", "10.0.0.1, 10.0.0.2", ""]))
        if draw(st.booleans()):
            out.append(tls(c, t + 0.001, draw(st.sampled_from(["a.lab", "b.lab"]))))
        else:
            out.append(http(c, t + 0.001, dur=draw(st.floats(0, 1)), index=draw(st.integers(0, 2)),
                            headers=headers, uri=draw(st.sampled_from(["/", "/x"]))))
    return out


@settings(max_examples=300, deadline=None)
@given(_exchanges())
def test_stitching_any_exchanges_gives_well_formed_flows(exchanges):
    a = stitch(exchanges)
    known = {e.id for e in a.exchanges}
    for flow in a.flows:
        assert flow.hops and all(h.kind in HOP_KINDS for h in flow.hops)
        assert set(flow.exchange_ids) <= known
        assert all(h.retries >= 0 for h in flow.hops)
    roots = [f.exchange_ids[0] for f in a.flows]
    assert len(roots) == len(set(roots))  # an exchange roots at most one flow


def _summary(analysis):
    return [(h.kind, h.src, h.dst, h.nodeport, h.sni, tuple(h.request_ids), h.retries)
            for f in analysis.flows for h in f.hops]


@pytest.mark.tshark
@pytest.mark.parametrize("backend", ["scapy", "pyshark"])
def test_every_backend_stitches_the_lab_sample_alike(backend):
    if backend == "pyshark":
        need_binary("tshark")
    reference = _summary(analyze([NODEPORT_LAB]))
    assert len(reference) == 11
    assert _summary(analyze([NODEPORT_LAB], backend=backend)) == reference


def test_many_gateway_requests_stitch_in_linear_time():
    # 10k requests through a gateway over 100 pooled upstream connections, 50 in flight at a time:
    # a quadratic matcher takes minutes here, a linear one about a second
    ups = [conn(f"10.10.0.6:{40000 + k}", "10.10.0.9:8080", isn=900000 + k, t=0.5) for k in range(100)]
    ex = []
    for i in range(10_000):
        t = 1000 + i * 0.001
        client = f"172.18.1.{i % 50}"
        down = conn(f"{client}:{1000 + i}", "10.10.0.6:8080", isn=i * 7 + 1, t=t)
        ex.append(http(down, t + 0.0005, uri=f"/p/{i}", dur=0.05))
        ex.append(http(ups[i % 100], t + 0.002, uri=f"/p/{i}", dur=0.04, index=i // 100,
                       headers={"x-request-id": f"{i:08x}-aaaa-9bbb-8ccc-dddddddddddd",
                                "x-forwarded-for": client, "x-envoy-attempt-count": "1"}))
    started = time.monotonic()
    a = stitch(ex)
    assert time.monotonic() - started < 30
    by_id = a.by_id()
    assert len(a.flows) == 10_000
    for f in a.flows:  # every downstream request paired with its own upstream request
        root, up = by_id[f.exchange_ids[0]], by_id[f.hops[0].exchange_ids[1]]
        assert f.hops[0].kind == "l7-proxy" and root.uri == up.uri


def test_requests_that_look_like_each_others_cause_make_no_flow():
    # two hosts calling each other at the same instant: each request is open while the other is sent,
    # so each looks caused by the other; nobody's request started it, so there is no flow to tell
    rid = {"x-request-id": RID}
    a = http(conn("10.0.0.1:1000", "10.0.0.2:80", isn=1, t=5.0), 5.001, dur=0.1, headers=rid)
    b = http(conn("10.0.0.2:2000", "10.0.0.1:80", isn=2, t=5.0), 5.001, dur=0.1, headers=rid)
    analysis = stitch([a, b])
    assert analysis.flows == [] and len(analysis.exchanges) == 2


def test_a_long_chain_of_proxies_is_bounded():
    # 200 proxies in a row (a crafted capture): the flow stops at MAX_DEPTH hops, nothing overflows
    chain = [http(conn(f"10.1.{i // 250}.{i % 250}:1000", f"10.1.{(i + 1) // 250}.{(i + 1) % 250}:80",
                       isn=i + 1, t=1.0 + i * 0.001), 1.0005 + i * 0.001, dur=10 - i * 0.01,
                  headers={"x-request-id": RID}) for i in range(200)]
    (flow,) = stitch(chain).flows
    assert len(flow.hops) == MAX_DEPTH and all(h.kind == "app-call" for h in flow.hops)
