"""``/api/proxies`` and the trace view name proxies: Istio node ids by pod, namespace and role; proxies that
sent no node id by log name and the peer address of their stream."""

from __future__ import annotations

from meshscope.model import AccessRecord
from tests.api.conftest import NOW, serve, settings_for, write_records

ISTIO_NODE = "sidecar~10.244.0.12~productpage-v1-6b7f6f8d5c-x2k9p.bookinfo~bookinfo.svc.cluster.local"
GATEWAY_NODE = ("router~10.244.0.3~istio-ingressgateway-5d8b7c9f-abcde.istio-system"
                "~istio-system.svc.cluster.local")
ANONYMOUS = "anonymous~10.0.0.7~http_als"  # what the collector names a stream without a node id


def test_proxies_by_pod_namespace_role_and_anonymous_by_log_name_and_peer(data_dir):
    rid = "7f1c0a52-0b1e-4a4c-9d7e-2f3b4c5d6e7f"
    records = [AccessRecord(start_time=NOW + i, node_id=node, log_name="http_als", request_id=rid,
                            downstream_remote=f"10.0.0.{i}:1000", response_code=200)
               for i, node in enumerate((GATEWAY_NODE, ISTIO_NODE, ANONYMOUS))]
    write_records(settings_for(data_dir), records)
    running = serve(settings_for(data_dir))
    try:
        with running.client() as c:
            items = {p["node_id"]: p for p in c.get("/api/proxies").json()["items"]}
            trace = c.get(f"/api/traces/{rid}").json()
    finally:
        running.stop()
    sidecar, gateway, anonymous = items[ISTIO_NODE], items[GATEWAY_NODE], items[ANONYMOUS]
    assert (sidecar["role"], sidecar["name"], sidecar["namespace"], sidecar["ip"]) == (
        "sidecar", "productpage-v1-6b7f6f8d5c-x2k9p", "bookinfo", "10.244.0.12")
    assert (gateway["role"], gateway["name"], gateway["namespace"]) == (
        "gateway", "istio-ingressgateway-5d8b7c9f-abcde", "istio-system")
    assert (anonymous["role"], anonymous["name"], anonymous["ip"]) == ("proxy", "http_als", "10.0.0.7")
    assert [(h["role"], h["node_id"]) for h in trace["hops"]] == [
        ("gateway", GATEWAY_NODE), ("sidecar", ISTIO_NODE), ("proxy", ANONYMOUS)]


def test_proxies_say_whether_their_identity_was_authenticated(data_dir):
    """A node id is a claim: /api/proxies says which senders proved theirs (mTLS, token) and which did not."""
    records = [AccessRecord(start_time=NOW, node_id=GATEWAY_NODE, request_id="a-1", response_code=200,
                            node_auth="mtls:istio-ingressgateway"),
               AccessRecord(start_time=NOW, node_id=ISTIO_NODE, request_id="b-1", response_code=200,
                            node_auth="token"),
               AccessRecord(start_time=NOW, node_id=ANONYMOUS, request_id="c-1", response_code=200)]
    write_records(settings_for(data_dir), records)
    running = serve(settings_for(data_dir))
    try:
        with running.client() as c:
            items = {p["node_id"]: p for p in c.get("/api/proxies").json()["items"]}
    finally:
        running.stop()
    assert (items[GATEWAY_NODE]["authenticated"], items[GATEWAY_NODE]["auth"]) == (
        True, "mtls:istio-ingressgateway")
    assert (items[ISTIO_NODE]["authenticated"], items[ISTIO_NODE]["auth"]) == (True, "token")
    assert (items[ANONYMOUS]["authenticated"], items[ANONYMOUS]["auth"]) == (False, None)
