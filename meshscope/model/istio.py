"""Envoy node ids as Istio writes them: ``TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local``, where TYPE
is ``sidecar`` or ``router`` (a gateway). One parser for every reader of a proxy's identity."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProxyNode:
    """What a node id says about the proxy that logged a record; fields are None when the id is not
    Istio's (a bare Envoy's ``--service-node``)."""

    node_id: str
    proxy_type: str | None  # "sidecar", "router" (Istio's word for a gateway) or None
    ip: str | None
    pod: str | None  # the workload's pod (or gateway deployment) name
    namespace: str | None
    domain: str | None  # ``NAMESPACE.svc.cluster.local``

    @property
    def role(self) -> str:
        """"gateway", "sidecar" or "proxy": from the type prefix, else from a word in the id."""
        lowered = self.node_id.lower()
        if self.proxy_type == "router" or "gateway" in lowered:
            return "gateway"
        if self.proxy_type == "sidecar" or "sidecar" in lowered:
            return "sidecar"
        return "proxy"

    @property
    def name(self) -> str:
        """The workload part (``sidecar~10.0.0.9~webapp-1.shop~shop.svc…`` → webapp-1), else the whole id."""
        return self.pod or self.node_id


def parse_node_id(node_id: str) -> ProxyNode:
    """Split an Envoy node id into Istio's parts; any string is accepted."""
    parts = node_id.split("~")
    head = parts[0].lower()
    if len(parts) < 3:
        return ProxyNode(node_id, head if head in ("sidecar", "router") else None, None, None, None, None)
    pod, _, namespace = parts[2].partition(".")
    domain = parts[3] if len(parts) > 3 and parts[3] else None
    if not namespace and domain:
        namespace = domain.split(".", 1)[0]
    return ProxyNode(
        node_id=node_id,
        proxy_type=head if head in ("sidecar", "router") else None,
        ip=parts[1] or None,
        pod=pod or None,
        namespace=namespace or None,
        domain=domain,
    )
