"""Real traffic through the example configs: headers the upstream sees, timeouts, retries, and the
access logs and spans Envoy sends."""

from __future__ import annotations

import uuid

import httpx
import pytest
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.launcher import EnvoyProcess

from meshscope.model import normalize_request_id
from tests.proxy.conftest import example, silent_collector
from tests.proxy.telemetry_sink import TelemetrySink

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def start(name, upstream, data_dir, collector=None):
    routes = example(name, data_dir, upstream.port)
    envoy = EnvoyProcess(build_bootstrap(routes, collector=collector or silent_collector(), admin_port=0))
    return envoy.start(), f"http://127.0.0.1:{routes.listeners[0].port}"


def test_plain_route_reaches_upstream_with_tracing_headers(upstream, data_dir):
    envoy, url = start("plain", upstream, data_dir)
    with envoy, httpx.Client(base_url=url, timeout=5) as client:
        headers = client.get("/headers").json()["headers"]
        assert uuid.UUID(headers["x-request-id"])
        assert len(headers["x-b3-traceid"]) == 32 and len(headers["x-b3-spanid"]) == 16
        assert headers["x-b3-sampled"] == "1" and headers["x-b3-parentspanid"]
        assert headers["x-envoy-attempt-count"] == "1"
        assert headers["x-forwarded-for"]
        # a client's own request id is kept, so it can be followed from the client's side
        mine = str(uuid.uuid4())
        kept = client.get("/anything", headers={"x-request-id": mine}).json()["headers"]["x-request-id"]
        # (Envoy writes its trace decision into the UUID version digit; the model undoes that)
        assert normalize_request_id(kept) == mine
        assert upstream.seen_request_ids()[-2:] == [headers["x-request-id"], kept]
        assert client.get("/status/503").status_code == 503
        assert envoy.admin.upstream_rq_5xx("httpbin") == 1


def test_timeout_route_answers_504_with_the_ut_flag(upstream, data_dir):
    with TelemetrySink() as sink:
        envoy, url = start("timeout", upstream, data_dir, collector=sink.target)
        with envoy:
            response = httpx.get(f"{url}/delay/3", timeout=10)
            assert response.status_code == 504
            assert response.text == "upstream request timeout"
            stats = envoy.admin.stats()
            assert stats["cluster.httpbin.upstream_rq_timeout"] == 1
            assert stats["http.ingress.downstream_rq_5xx"] == 1
            assert httpx.get(f"{url}/delay/0.1", timeout=10).status_code == 200
            sink.wait_for(lambda: len(sink.http_entries()) == 2)
        timed_out, fine = sink.http_entries()
        assert timed_out.response.response_code.value == 504
        assert timed_out.common_properties.response_flags.upstream_request_timeout  # UT
        assert not fine.common_properties.response_flags.upstream_request_timeout


def test_retry_route_retries_5xx_and_counts_retries(upstream, data_dir):
    key, always = uuid.uuid4().hex, uuid.uuid4().hex
    with TelemetrySink() as sink:
        envoy, url = start("retry", upstream, data_dir, collector=sink.target)
        with envoy, httpx.Client(base_url=url, timeout=10) as client:
            # every 2nd upstream call fails: requests 2..6 each fail once and succeed on the retry
            codes = [client.get(f"/flaky/2?key={key}").status_code for _ in range(6)]
            assert codes == [200] * 6
            assert envoy.admin.upstream_rq_retry("httpbin") == 5
            # always failing: 1 try + 3 retries, then Envoy gives up with the upstream's 503
            assert client.get(f"/flaky/1?key={always}").status_code == 503
            stats = envoy.admin.stats()
            sink.wait_for(lambda: len(sink.http_entries()) == 7)
        assert stats["cluster.httpbin.upstream_rq_retry"] == 8
        assert stats["cluster.httpbin.upstream_rq_retry_limit_exceeded"] == 1
        attempts = [e for e in upstream.seen() if e["path"] == "/flaky/1"]
        assert [e["x-envoy-attempt-count"] for e in attempts] == ["1", "2", "3", "4"]
        assert len({e["x-request-id"] for e in attempts}) == 1
        gave_up = sink.http_entries()[-1]
        assert gave_up.request.request_id == attempts[0]["x-request-id"]
        assert gave_up.common_properties.upstream_request_attempt_count == 4
        assert gave_up.common_properties.response_flags.upstream_retry_limit_exceeded  # URX
        assert gave_up.response.response_code.value == 503


def test_access_logs_and_spans_reach_the_collector_address(upstream, data_dir):
    with TelemetrySink() as sink:
        envoy, url = start("retry", upstream, data_dir, collector=sink.target)
        key = uuid.uuid4().hex
        with envoy, httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(4):
                client.get(f"/flaky/2?key={key}")
            seen_ids = {e["x-request-id"] for e in upstream.seen() if e["path"] == "/flaky/2"}
            sink.wait_for(lambda: len(sink.http_entries()) >= 4)
            # spans still buffered when Envoy stops are lost, so wait for them while it runs
            sink.wait_for(lambda: seen_ids <= {s["tags"].get("guid:x-request-id") for s in list(sink.spans)})
            counts = envoy.admin.access_log_counts()
        entries = sink.http_entries()
        assert len(entries) == 4 and counts == {"logs_written": 4, "logs_dropped": 0}
        first = sink.service.messages[0].identifier
        assert (first.node.id, first.node.cluster) == ("meshscope-proxy", "meshscope")
        assert first.log_name == "meshscope"
        assert {e.request.request_id for e in entries} == seen_ids
        assert [e.common_properties.upstream_request_attempt_count for e in entries] == [1, 2, 2, 2]
        for e in entries:
            logged = e.request.request_headers
            assert logged["x-b3-sampled"] == "1" and len(logged["x-b3-traceid"]) == 32
            assert logged["x-envoy-attempt-count"] == str(e.common_properties.upstream_request_attempt_count)
        # one span for the request plus one per upstream attempt: 4 + (1 + 2 + 2 + 2)
        kinds = [s["kind"] for s in sink.spans]
        assert (kinds.count("SERVER"), kinds.count("CLIENT"), len(kinds)) == (4, 7, 11)
