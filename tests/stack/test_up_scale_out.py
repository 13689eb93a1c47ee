"""`meshscope up --kafka BOOTSTRAP --elasticsearch URL`: the same stack in the scale-out shape, against
a real Kafka-protocol broker (Tansu) and a real Elasticsearch-API server (osmem) started by the tests."""

from __future__ import annotations

import signal
import subprocess
import uuid

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.stack.test_up import MESHSCOPE, _wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.kafka, pytest.mark.elasticsearch, pytest.mark.slow]


def test_up_against_kafka_and_elasticsearch(tmp_path, tansu, search_server):
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    run = uuid.uuid4().hex[:8]
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(tmp_path / "data"),
                                      "kafka_topic_prefix": f"up{run}.",
                                      "elasticsearch_index_prefix": f"up{run}-"}))
    log = tmp_path / "up.log"
    proc = subprocess.Popen([*MESHSCOPE, "--config", str(config), "up", "--kafka", tansu.bootstrap,
                             "--elasticsearch", search_server.url], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    api = httpx.Client(base_url=f"http://127.0.0.1:{ports['api_port']}", timeout=10)
    proxy = f"http://127.0.0.1:{ports['proxy_port']}"
    try:
        _wait_for(lambda: "meshscope is up" in log.read_text(), 90, "the stack")
        assert api.get("/healthz").json()["store"] == "elasticsearch"
        ids = [httpx.get(f"{proxy}/headers", timeout=10).headers["x-request-id"] for _ in range(5)]
        ids.append(httpx.get(f"{proxy}/status/503", timeout=10).headers["x-request-id"])
        # each request went Envoy → collector → Kafka → indexer → Elasticsearch, and reads back by id
        for rid in ids:
            trace = _wait_for(lambda rid=rid: api.get(f"/api/traces/{rid}").json().get("hops"), 60,
                              f"request {rid} through Kafka into Elasticsearch")
            assert trace[0]["node_id"] == "meshscope-gateway"
        page = api.get("/api/records", params={"status_class": 5}).json()
        assert [r["request_id"] for r in page["items"]] == [ids[-1]]
        assert page["items"][0]["upstream_cluster"] == "catalog"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        api.close()
    assert code == 0, log.read_text()[-3000:]
