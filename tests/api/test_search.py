"""The endpoints behind the web page's Find and Map views, and Zipkin's autocomplete, over HTTP against
the real app and a real SQLite store."""

from __future__ import annotations

import pytest
from meshscope.pipelines import TrafficEdge

from meshscope.api.search import bucket_size
from meshscope.api.service_graph import build_graph, service_name
from meshscope.model import AccessRecord
from tests.api.conftest import NOW, RID, RID_SC, TRACE, lab_records, write_records

T0 = NOW // 60 * 60 - 600  # ten minutes ago, on a whole minute
WEBAPP, CATALOG = "outbound|8080||webapp.shop.svc.cluster.local", "outbound|3000||catalog"


def varied(i: int) -> AccessRecord:
    return AccessRecord(
        start_time=T0 + i,
        duration_ms=float(i),
        node_id="gw-0" if i < 30 else "webapp-sidecar",
        node_cluster="istio-ingressgateway" if i < 30 else "webapp",
        request_id=f"00000000-0000-4000-8000-{i:012d}",
        method="POST" if i % 10 == 0 else "GET",
        authority="shop.local",
        path=f"/api/items/{i}" if i % 2 else f"/cart/{i}",
        route_name="api" if i % 2 else "cart",
        response_code=503 if i % 6 == 0 else 200,
        response_flags=["URX"] if i == 7 else [],
        attempt_count=2 if i in (7, 8) else 1,
        upstream_cluster=CATALOG if i >= 30 else WEBAPP,
    )


@pytest.fixture
def client(api):
    write_records(api.settings, [*lab_records(), *(varied(i) for i in range(60))])
    with api.client() as c:
        yield c


def test_search_filters_over_http(client):
    def starts(**params) -> list[int]:
        params.setdefault("start", T0)
        params.setdefault("end", T0 + 60)
        items = client.get("/api/search", params=params).raise_for_status().json()["items"]
        return sorted(int(r["start_time"] - T0) for r in items)

    assert len(starts()) == 60
    assert starts(start=T0 + 55) == [55, 56, 57, 58, 59]
    assert starts(proxy="webapp-sidecar", end=T0 + 32) == [30, 31]
    assert starts(service="istio-ingressgateway", status_class=5) == [0, 6, 12, 18, 24]
    assert starts(cluster="outbound|3000||catalog", status=503) == [30, 36, 42, 48, 54]
    assert starts(route="api", end=T0 + 6) == [1, 3, 5]
    assert starts(path="/api/items/1", end=T0 + 20) == [1, 11, 13, 15, 17, 19]
    assert starts(authority="shop.local", method="post") == [0, 10, 20, 30, 40, 50]
    assert starts(flag="URX") == [7]
    assert starts(retried="true") == [7, 8]
    assert starts(min_ms=57) == [57, 58, 59]
    assert starts(id="00000000-0000-b000-8000-000000000042") == [42]  # any sampling digit
    lab = client.get("/api/search", params={"id": RID_SC}).json()["items"]
    assert {r["node_cluster"] for r in lab} == {"istio-ingressgateway", "webapp"}
    assert len(client.get("/api/search", params={"id": TRACE.upper()}).json()["items"]) == 2
    page = client.get("/api/search", params={"start": T0, "limit": 25}).json()
    more = client.get("/api/search", params={"start": T0, "limit": 25, "cursor": page["next_cursor"]}).json()
    assert len({r["id"] for r in page["items"] + more["items"]}) == 50


def test_histogram_buckets_by_status_class(client):
    body = client.get("/api/search/histogram", params={"start": T0, "end": T0 + 60}).json()
    assert body["bucket_s"] == 1 and body["total"] == 60
    assert body["bars"][0] == {"start": T0, "counts": {"5xx": 1}}
    assert sum(b["counts"].get("5xx", 0) for b in body["bars"]) == 10
    hour = client.get("/api/search/histogram", params={"service": "webapp"}).json()  # default: last hour
    assert hour["bucket_s"] == 60 and hour["total"] == 31  # 30 varied + the lab sidecar hop
    assert client.get("/api/search/histogram", params={"start": T0, "end": T0}).status_code == 400
    assert bucket_size(3600) == 60 and bucket_size(86400) == 1800 and bucket_size(10) == 1


def test_autocomplete_values_and_zipkin_keys(client):
    assert client.get("/api/search/values", params={"field": "node_cluster"}).json() == [
        "istio-ingressgateway", "webapp"
    ]  # most records first (31 each here), then by name
    assert client.get("/api/search/values", params={"field": "response_code"}).json() == ["200", "503"]
    assert client.get("/api/search/values", params={"field": "route_name", "prefix": "c"}).json() == ["cart"]
    assert client.get("/api/search/values", params={"field": "doc"}).status_code == 422
    keys = client.get("/api/v2/autocompleteKeys").json()
    assert "http.method" in keys and "upstream_cluster" in keys
    assert client.get("/api/v2/autocompleteValues", params={"key": "http.method"}).json() == ["GET", "POST"]
    assert "503" in client.get("/api/v2/autocompleteValues", params={"key": "http.status_code"}).json()
    assert client.get("/api/v2/autocompleteValues", params={"key": "no.such.key"}).json() == []


def test_service_graph(client):
    body = client.get("/api/graph", params={"start": T0, "end": T0 + 60}).json()
    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    assert set(edges) == {("istio-ingressgateway", "webapp.shop"), ("webapp", "catalog")}
    gw = edges[("istio-ingressgateway", "webapp.shop")]
    assert gw["requests"] == 30 and gw["error_ratio"] == pytest.approx(5 / 30, abs=1e-3)
    assert gw["retried_ratio"] == pytest.approx(2 / 30, abs=1e-3) and gw["rate"] == pytest.approx(0.5)
    assert gw["p99_ms"] == 29 and gw["health"] == "degraded"
    nodes = {n["id"]: n for n in body["nodes"]}
    assert nodes["istio-ingressgateway"]["kind"] == "workload" and nodes["webapp.shop"]["kind"] == "service"
    assert client.get("/api/graph", params={"start": T0, "end": T0 - 1}).status_code == 400


def test_graph_names_and_inbound_traffic():
    assert service_name("outbound|8080||webapp.shop.svc.cluster.local") == "webapp.shop"
    assert service_name("outbound|8080|v2|reviews.default.svc.cluster.local") == "reviews.default"
    assert service_name("webapp") == "webapp"
    nodes, edges = build_graph(
        [TrafficEdge(source="webapp", target="inbound|8080||", count=10, count_5xx=5),
         TrafficEdge(source="gw", target="webapp", count=10, count_5xx=0)], 10.0
    )
    assert [(e.source, e.target) for e in edges] == [("gw", "webapp")]
    assert {n.id: (n.kind, n.inbound, n.health) for n in nodes} == {
        "gw": ("workload", 0, "healthy"), "webapp": ("workload", 20, "failing")
    }
    assert RID  # the lab request is part of every data set above
