"""The same API over the scale-out store: ElasticsearchStore on the osmem Elasticsearch-API server. The
API reads only through StoreReader, so traces, records, alerts, Zipkin and uploads answer alike."""

from __future__ import annotations

import time

import pytest

from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, RID_GW, RID_SC, TRACE, lab_records, serve, wait_done, write_records
from tests.pipelines.search_server import es_settings, search_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]


def test_api_over_elasticsearch(es_settings, tmp_path):  # noqa: F811 - fixture
    settings = es_settings.replace(upload_max_bytes=200_000)
    write_records(settings, lab_records())
    api = serve(settings)
    try:
        with api.client() as c:
            for asked in (RID, RID_GW, RID_SC):
                t = c.get(f"/api/traces/{asked}").json()
                assert [h["role"] for h in t["hops"]] == ["gateway", "sidecar"], t
                assert len(t["spans"]) == 2 and t["trace_ids"] == [TRACE]
            page = c.get("/api/records", params={"limit": 1}).json()
            nxt = c.get("/api/records", params={"limit": 1, "cursor": page["next_cursor"]}).json()
            assert [r["request_id"] for r in page["items"] + nxt["items"]] == [RID_SC, RID_GW]
            assert c.get("/api/alerts", params={"state": "firing"}).json()["items"][0]["rule"] == "5xx-spike"
            assert c.get("/api/v2/services").json() == ["istio-ingressgateway", "webapp"]
            end = int((NOW + 60) * 1000)
            traces = c.get("/api/v2/traces", params={"serviceName": "webapp", "endTs": end}).json()
            assert len(traces) == 1 and {s["traceId"] for s in traces[0]} == {TRACE}
            assert "meshscope_stored_requests{" in c.get("/metrics").text

            node, pod = lab_captures(tmp_path, RID, NOW)
            up = c.post(
                "/api/pcaps",
                files=[("file", ("n.pcap", node.read_bytes())), ("file", ("p.pcap", pod.read_bytes()))],
            )
            assert wait_done(c, up.json()["id"])["state"] == "done"
            deadline = time.monotonic() + 15  # Elasticsearch makes writes searchable at its refresh
            while time.monotonic() < deadline:
                t = c.get(f"/api/traces/{RID}").json()
                if len(t["exchanges"]) == 3 and len(t["flows"]) == 1:
                    break
                time.sleep(0.3)
            assert len(t["exchanges"]) == 3 and len(t["flows"]) == 1
    finally:
        api.stop()
