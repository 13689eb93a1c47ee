"""Reading the store over HTTP: traces by request id (any sampling digit), records, alerts, Zipkin v2,
proxies, metrics."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshscope.model import AccessRecord
from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, RID_GW, RID_SC, TRACE, lab_records, wait_done, write_records
from tests.conftest import free_port


@pytest.fixture
def seeded(api):
    write_records(api.settings, lab_records())
    return api


@pytest.mark.parametrize("asked", [RID, RID_GW, RID_SC, RID.upper()])
def test_trace_found_whatever_sampling_digit(seeded, asked):
    with seeded.client() as c:
        r = c.get(f"/api/traces/{asked}")
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["request_id_norm"] == RID
    assert [h["role"] for h in t["hops"]] == ["gateway", "sidecar"]
    assert [h["request_id"] for h in t["hops"]] == [RID_GW, RID_SC]  # raw ids shown as each proxy wrote them
    assert t["hops"][1]["linked_by"] == "address"  # sidecar's downstream = gateway's upstream local address
    assert sorted(t["raw_request_ids"]) == sorted([RID_GW, RID_SC])
    assert [s["span_kind"] for s in t["spans"]] == ["CLIENT", "SERVER"]
    assert t["trace_ids"] == [TRACE]


def test_trace_joins_uploaded_capture_and_draws_one_graph(seeded, tmp_path):
    node, pod = lab_captures(tmp_path, RID, NOW)
    with seeded.client() as c:
        up = c.post(
            "/api/pcaps",
            files=[("file", ("node.pcap", node.read_bytes())), ("file", ("pod.pcap", pod.read_bytes()))],
        ).json()
        assert wait_done(c, up["id"])["state"] == "done"
        t = c.get(f"/api/traces/{RID_SC}").json()
        assert len(t["hops"]) == 2 and len(t["spans"]) == 2
        assert len(t["exchanges"]) == 3 and len(t["flows"]) == 1
        # each stored capture is named back to the file it was uploaded as
        assert {v["name"] for v in t["captures"].values()} == {"node.pcap", "pod.pcap"}
        assert {v["upload"] for v in t["captures"].values()} == {up["id"]}
        assert set(t["captures"]) == {e["conn"]["capture"] for e in t["exchanges"]}
        svg = c.get(f"/api/traces/{RID}/graph.svg")
        assert svg.status_code == 200 and svg.text.startswith("<svg")
        assert "proxy access logs" in svg.text and "NodePort 30000" in svg.text
        assert "gateway" in svg.text and "sidecar" in svg.text


def test_unknown_trace_is_404(api):
    with api.client() as c:
        r = c.get("/api/traces/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 404 and "nothing known" in r.json()["detail"]
        assert c.get("/api/traces/00000000-0000-4000-8000-000000000000/graph.svg").status_code == 404


def test_records_paging_and_filters(api):
    base = NOW - 100
    records = [
        AccessRecord(
            start_time=base + i,
            node_id=f"sidecar~10.0.0.{i % 2}~a~b",
            request_id=f"r{i}",
            authority="shop.local" if i % 3 else "api.local",
            response_code=503 if i % 4 == 0 else 200,
            upstream_cluster="catalog" if i % 2 else "webapp",
        )
        for i in range(25)
    ]
    write_records(api.settings, records)
    with api.client() as c:
        seen, cursor = [], None
        while True:
            params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            page = c.get("/api/records", params=params).json()
            seen += [r["request_id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [f"r{i}" for i in reversed(range(25))]  # newest first, each once
        five = c.get("/api/records", params={"status_class": 5}).json()["items"]
        assert {r["request_id"] for r in five} == {f"r{i}" for i in range(0, 25, 4)}
        cat = c.get("/api/records", params={"cluster": "catalog", "authority": "api.local"}).json()["items"]
        assert {r["request_id"] for r in cat} == {f"r{i}" for i in range(25) if i % 2 and not i % 3}
        window = c.get("/api/records", params={"start": base + 5, "end": base + 8}).json()["items"]
        assert [r["request_id"] for r in window] == ["r7", "r6", "r5"]
        node = c.get("/api/records", params={"node_id": "sidecar~10.0.0.1~a~b", "limit": 1000}).json()[
            "items"
        ]
        assert len(node) == 12
        bad = c.get("/api/records", params={"cursor": "!!!not-a-cursor"})
        assert bad.status_code == 400 and "cursor" in bad.json()["detail"]
        assert c.get("/api/records", params={"status_class": 9}).status_code == 422


def test_alerts_filters(seeded):
    from meshscope.model import Alert

    write_records(
        seeded.settings,
        [
            Alert(
                rule="retry-spike",
                group_key="upstream_cluster=webapp",
                state="resolved",
                window_s=60,
                observed=1,
                first_seen=NOW - 4000,
                last_seen=NOW - 3500,
            ),
        ],
    )
    with seeded.client() as c:
        everything = c.get("/api/alerts").json()["items"]
        assert [a["rule"] for a in everything] == ["5xx-spike", "retry-spike"]
        firing = c.get("/api/alerts", params={"state": "firing"}).json()["items"]
        assert [(a["rule"], a["group_key"], a["sample_request_ids"]) for a in firing] == [
            ("5xx-spike", "upstream_cluster=catalog", [RID])
        ]
        assert c.get("/api/alerts", params={"rule": "retry-spike"}).json()["items"][0]["state"] == "resolved"
        assert (
            c.get("/api/alerts", params={"group": "upstream_cluster=catalog"}).json()["items"][0]["rule"]
            == "5xx-spike"
        )
        assert [a["rule"] for a in c.get("/api/alerts", params={"start": NOW - 100}).json()["items"]] == [
            "5xx-spike"
        ]
        assert c.get("/api/alerts", params={"state": "bogus"}).status_code == 422


def test_zipkin_read_api_shapes(seeded):
    end = int((NOW + 60) * 1000)
    with seeded.client() as c:
        assert c.get("/api/v2/services").json() == ["istio-ingressgateway", "webapp"]
        assert c.get("/api/v2/spans", params={"serviceName": "webapp"}).json() == [
            "webapp.shop.svc.cluster.local:8080/*"
        ]
        assert c.get("/api/v2/remoteServices", params={"serviceName": "istio-ingressgateway"}).json() == [
            "webapp"
        ]
        traces = c.get(
            "/api/v2/traces", params={"serviceName": "webapp", "endTs": end, "lookback": 3_600_000}
        ).json()
        assert len(traces) == 1 and len(traces[0]) == 2
        span = next(s for s in traces[0] if s["kind"] == "SERVER")
        assert span == {
            "traceId": TRACE,
            "id": "0000000000000002",
            "parentId": "48485a3953bb6124",
            "name": "webapp.shop.svc.cluster.local:8080/*",
            "kind": "SERVER",
            "timestamp": int((NOW + 0.004) * 1e6),
            "duration": 7000,
            "localEndpoint": {"serviceName": "webapp", "ipv4": "10.10.0.9"},
            "tags": {"guid:x-request-id": RID_SC, "http.status_code": "200"},
        }
        q = {"endTs": end, "lookback": 3_600_000}
        assert len(c.get("/api/v2/traces", params=q | {"annotationQuery": "http.method=GET"}).json()) == 1
        assert c.get("/api/v2/traces", params=q | {"annotationQuery": "http.method=POST"}).json() == []
        assert len(c.get("/api/v2/traces", params=q | {"minDuration": 10000}).json()) == 1
        assert c.get("/api/v2/traces", params=q | {"minDuration": 20000}).json() == []
        assert (
            c.get("/api/v2/traces", params={"endTs": int((NOW - 3600) * 1000), "lookback": 60_000}).json()
            == []
        )
        assert (
            len(
                c.get(
                    "/api/v2/traces",
                    params=q | {"serviceName": "istio-ingressgateway", "remoteServiceName": "webapp"},
                ).json()
            )
            == 1
        )
        assert len(c.get(f"/api/v2/trace/{TRACE}").json()) == 2
        assert len(c.get(f"/api/v2/trace/{TRACE.upper()}").json()) == 2
        assert c.get("/api/v2/trace/0123456789abcdef").status_code == 404
        many = c.get("/api/v2/traceMany", params={"traceIds": f"{TRACE},0123456789abcdef"}).json()
        assert [len(t) for t in many] == [2]
        deps = c.get("/api/v2/dependencies", params={"endTs": end, "lookback": 3_600_000}).json()
        assert deps == [
            {"parent": "istio-ingressgateway", "child": "webapp", "callCount": 1, "errorCount": 0}
        ]


def test_proxies_with_loss_accounting(seeded):
    with seeded.client() as c:
        items = c.get("/api/proxies").json()["items"]
    assert {p["node_id"]: p["records"] for p in items} == {
        "router~10.10.0.6~istio-ingressgateway~istio-system": 1,
        "sidecar~10.10.0.9~webapp-1~shop": 1,
    }
    assert all(p["loss"] is None for p in items)  # no admin addresses configured


def test_proxies_report_unreachable_admins(data_dir):
    from tests.api.conftest import serve, settings_for

    running = serve(settings_for(data_dir, proxy_admins=[f"127.0.0.1:{free_port()}"]))
    try:
        with running.client() as c:
            body = c.get("/api/proxies").json()
        (admin,) = body["unmatched_admins"]
        assert admin["reachable"] is False and "unreachable" in admin["error"]
    finally:
        running.stop()


def test_metrics_per_cluster(seeded):
    write_records(
        seeded.settings,
        [
            AccessRecord(
                start_time=time.time(),
                node_id="n",
                request_id=f"m{i}",
                response_code=500 if i < 3 else 200,
                upstream_cluster="catalog",
                attempt_count=2 if i == 0 else 1,
            )
            for i in range(5)
        ],
    )
    with seeded.client() as c:
        text = c.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    # store-derived totals are gauges (a recount); the counters are the pipeline's (tests/pipelines)
    assert samples[("meshscope_stored_requests", (("upstream_cluster", "catalog"),))] == 5
    assert samples[("meshscope_stored_responses_5xx", (("upstream_cluster", "catalog"),))] == 3
    assert samples[("meshscope_stored_requests_retried", (("upstream_cluster", "catalog"),))] == 1
    assert samples[("meshscope_stored_records", (("kind", "access"),))] == 7
    assert samples[("meshscope_alerts_firing", (("rule", "5xx-spike"),))] == 1
    assert samples[("meshscope_proxies", ())] == 3


async def test_cluster_totals_count_each_record_once(data_dir):
    """/metrics' per-cluster totals: the settled past is summed once, the recent part at each scrape."""
    from meshscope.pipelines.store.sqlite import SqliteStore

    from meshscope.api.metrics import ClusterTotals
    from tests.api.conftest import settings_for

    def rec(t: float, code: int = 200) -> AccessRecord:
        return AccessRecord(
            start_time=t, node_id="n", request_id=f"t{t}", response_code=code, upstream_cluster="c"
        )

    now = time.time()
    async with SqliteStore(settings_for(data_dir)) as store:
        await store.write([rec(now - 1000), rec(now, 503)])
        totals = ClusterTotals()
        assert await totals.totals(store, now) == {"c": [2, 1, 0]}
        await store.write([rec(now + 1)])
        assert await totals.totals(store, now + 2) == {"c": [3, 1, 0]}
        assert await totals.totals(store, now + 400) == {"c": [3, 1, 0]}  # the base moved forward
        await store.write([rec(now - 2000, 500)])  # a late arrival into the settled past
        assert await totals.totals(store, now + 401) == {"c": [3, 1, 0]}
        assert await totals.totals(store, now + 401 + ClusterTotals.FULL_EVERY_S) == {"c": [4, 2, 0]}
