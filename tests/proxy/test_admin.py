"""The admin-API clients against a real Envoy."""

from __future__ import annotations

import httpx
import pytest
from meshscope.proxy.admin import AdminClient, AsyncAdminClient, parse_stats
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.launcher import EnvoyProcess

from tests.conftest import free_port
from tests.proxy.conftest import example, silent_collector

pytestmark = pytest.mark.envoy


@pytest.fixture
def envoy_and_url(upstream, data_dir):
    routes = example("plain", data_dir, upstream.port)
    with EnvoyProcess(build_bootstrap(routes, collector=silent_collector(), admin_port=0)) as envoy:
        yield envoy, f"http://127.0.0.1:{routes.listeners[0].port}"


def test_stats_clusters_and_config_dump(envoy_and_url):
    envoy, url = envoy_and_url
    for path in ("/status/200", "/status/502", "/status/503"):
        httpx.get(url + path, timeout=5)
    admin = AdminClient(envoy.admin_address)  # "host:port" works as well as a URL
    assert admin.ready()
    stats = admin.stats()
    assert stats["cluster.httpbin.upstream_rq_total"] == 3 and isinstance(stats["server.live"], int)
    assert admin.upstream_rq_5xx("httpbin") == 2 and admin.upstream_rq_retry("httpbin") == 0
    assert admin.cluster_stat("httpbin", "no_such_stat") == 0
    assert set(admin.stats(filter="^cluster\\.httpbin\\.upstream_rq_total$")) == {
        "cluster.httpbin.upstream_rq_total"
    }
    # 3 entries entered the logger's buffer; a collector that is down is not counted as dropped
    assert admin.access_log_counts() == {"logs_written": 3, "logs_dropped": 0}
    names = {c["name"] for c in admin.clusters()["cluster_statuses"]}
    assert {"httpbin", "meshscope_als", "meshscope_zipkin"} <= names
    dump = admin.config_dump()
    assert any("BootstrapConfigDump" in c["@type"] for c in dump["configs"])
    assert admin.server_info()["state"] == "LIVE"


async def test_async_client(envoy_and_url):
    envoy, url = envoy_and_url
    async with httpx.AsyncClient() as client:
        await client.get(url + "/status/503")
    async with AsyncAdminClient(envoy.admin_url) as admin:
        assert await admin.ready()
        assert await admin.cluster_stat("httpbin", "upstream_rq_5xx") == 1
        assert (await admin.access_log_counts())["logs_written"] == 1
        assert (await admin.clusters())["cluster_statuses"]
        assert (await admin.config_dump())["configs"]


def test_unreachable_admin():
    admin = AdminClient(f"127.0.0.1:{free_port()}", timeout=1)
    assert admin.ready() is False
    with pytest.raises(httpx.HTTPError):
        admin.stats()


def test_parse_stats_skips_histograms():
    payload = {"stats": [{"name": "a", "value": 1}, {"histograms": {"computed_quantiles": []}}]}
    assert parse_stats(payload) == {"a": 1}
