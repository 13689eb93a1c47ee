"""Istio node ids, parsed in one place: the proxy's role, workload, namespace and address."""

import pytest

from meshscope.model import parse_node_id


@pytest.mark.parametrize(("node_id", "role", "name", "namespace", "ip"), [
    ("sidecar~10.10.0.9~webapp-1.shop~shop.svc.cluster.local", "sidecar", "webapp-1", "shop", "10.10.0.9"),
    ("router~10.10.0.6~istio-ingressgateway-5c8f.istio-system~istio-system.svc.cluster.local",
     "gateway", "istio-ingressgateway-5c8f", "istio-system", "10.10.0.6"),
    ("router~10.10.0.6~istio-ingressgateway~istio-system", "gateway", "istio-ingressgateway", "istio-system",
     "10.10.0.6"),
    ("meshscope-gateway", "gateway", "meshscope-gateway", None, None),  # a bare Envoy's --service-node
    ("envoy-1", "proxy", "envoy-1", None, None),
    ("", "proxy", "", None, None),
])
def test_node_ids(node_id, role, name, namespace, ip):
    node = parse_node_id(node_id)
    assert (node.role, node.name, node.namespace, node.ip) == (role, name, namespace, ip)
