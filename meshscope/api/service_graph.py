"""``GET /api/graph``: the mesh as a service graph over a time range (as Kiali draws it), from the access
records: workloads and upstream services as nodes, edges with request rate, 5xx ratio, retried share
and p99 latency."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from meshscope.api.deps import reader_of
from meshscope.api.schemas import GraphEdge, GraphNode, ServiceGraph
from meshscope.pipelines import StoreReader, TrafficEdge

router = APIRouter(prefix="/api/graph", tags=["graph"])
DEFAULT_RANGE_S = 3600.0
# health by 5xx ratio, as Kiali's defaults: above 0.1 % degraded, above 20 % failing
DEGRADED, FAILING = 0.001, 0.2


def service_name(cluster: str) -> str:
    """An Envoy cluster as a service: Istio's ``outbound|8080||webapp.shop.svc.cluster.local`` is
    ``webapp.shop``; any other cluster name stays as it is."""
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[3]:
        return parts[3].removesuffix(".svc.cluster.local")
    return cluster


def health(ratio_5xx: float) -> str:
    return "failing" if ratio_5xx > FAILING else "degraded" if ratio_5xx > DEGRADED else "healthy"


def build_graph(edges: list[TrafficEdge], seconds: float) -> tuple[list[GraphNode], list[GraphEdge]]:
    """Nodes and edges from per-(workload, upstream cluster) traffic. Inbound clusters (a sidecar
    handing requests to its own app) count as traffic into that workload, not as an edge."""
    nodes: dict[str, GraphNode] = {}

    def node(name: str, kind: str) -> GraphNode:
        found = nodes.get(name)
        if found is None:
            found = nodes[name] = GraphNode(id=name, kind=kind)
        elif kind == "workload":
            found.kind = "workload"
        return found

    out: list[GraphEdge] = []
    for e in edges:
        source = node(e.source or "(unknown proxy)", "workload")
        if e.target.startswith("inbound|"):
            source.inbound += e.count
            source.inbound_5xx += e.count_5xx
            continue
        target = node(service_name(e.target) or "(no upstream)", "service")
        target.inbound += e.count
        target.inbound_5xx += e.count_5xx
        ratio = e.count_5xx / e.count if e.count else 0.0
        out.append(
            GraphEdge(
                source=source.id, target=target.id, cluster=e.target, requests=e.count,
                rate=round(e.count / seconds, 4), error_ratio=round(ratio, 4),
                retried_ratio=round(e.count_retried / e.count, 4) if e.count else 0.0,
                p99_ms=e.p99_ms, health=health(ratio),
            )
        )
    for n in nodes.values():
        n.health = health(n.inbound_5xx / n.inbound if n.inbound else 0.0)
    return sorted(nodes.values(), key=lambda n: n.id), out


@router.get("", response_model=ServiceGraph)
async def service_graph(
    store: Annotated[StoreReader, Depends(reader_of)],
    start: Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds")] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds; default now")] = None,
) -> ServiceGraph:
    """The graph of the time range (default: the last hour)."""
    end = end if end is not None else time.time()
    start = start if start is not None else end - DEFAULT_RANGE_S
    if start >= end:
        raise ValueError("start must be before end")
    nodes, edges = build_graph(await store.traffic_edges(start, end), end - start)
    return ServiceGraph(start=start, end=end, nodes=nodes, edges=edges)
