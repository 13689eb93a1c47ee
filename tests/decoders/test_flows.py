"""Flows: the lab path's hops in order, with evidence, timings and workload names."""

from decoders.analyze import stitch
from tests.decoders.made_exchanges import RID, RID_SAMPLED, lab_path


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
