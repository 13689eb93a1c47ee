"""The generated bootstrap: every example validates with real Envoy and carries the telemetry."""

from __future__ import annotations

import pytest
from meshscope.proxy.bootstrap import build_bootstrap, dump_yaml
from meshscope.proxy.launcher import validate
from meshscope.proxy.routes import load_routes
from meshscope.proxy.telemetry import ALS_CLUSTER, ZIPKIN_CLUSTER, CollectorTarget

from tests.proxy.conftest import EXAMPLES

pytestmark = pytest.mark.envoy

B3_AND_ATTEMPT = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-envoy-attempt-count")
EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))


def network_filters(bootstrap: dict) -> list[dict]:
    return [
        f
        for listener in bootstrap["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"]
    ]


def endpoint_of(cluster: dict) -> dict:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]


def first_route(bootstrap: dict) -> dict:
    return network_filters(bootstrap)[0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]


def test_the_lab_scenarios_are_all_there():
    assert set(EXAMPLE_NAMES) >= {"plain", "timeout", "retry", "sni-gateway", "sni-passthrough"}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_validates_with_envoy(name, data_dir):
    routes = load_routes(EXAMPLES / f"{name}.yaml", data_dir=data_dir)
    validate(build_bootstrap(routes, collector=CollectorTarget("127.0.0.1", 18000, 9411)))
    validate(build_bootstrap(routes, collector=None))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_hcm_and_tcp_proxy_reports_to_the_collector(name, data_dir):
    routes = load_routes(EXAMPLES / f"{name}.yaml", data_dir=data_dir)
    bootstrap = build_bootstrap(routes, collector=CollectorTarget("10.0.0.9", 18001, 9412), node_id="gw-1")
    assert bootstrap["node"] == {"id": "gw-1", "cluster": "meshscope"}
    filters = network_filters(bootstrap)
    assert filters
    for f in filters:
        typed = f["typed_config"]
        (log,) = typed["access_log"]
        common = log["typed_config"]["common_config"]
        assert common["grpc_service"]["envoy_grpc"]["cluster_name"] == ALS_CLUSTER
        assert common["log_name"] and common["transport_api_version"] == "V3"
        if f["name"] == "envoy.filters.network.http_connection_manager":
            assert log["name"] == "envoy.access_loggers.http_grpc"
            headers = log["typed_config"]["additional_request_headers_to_log"]
            assert set(B3_AND_ATTEMPT) <= set(headers)
            zipkin = typed["tracing"]["provider"]
            assert zipkin["name"] == "envoy.tracers.zipkin"
            assert zipkin["typed_config"]["collector_endpoint"] == "/api/v2/spans"
            assert zipkin["typed_config"]["collector_endpoint_version"] == "HTTP_PROTO"
            assert zipkin["typed_config"]["shared_span_context"] is False
            assert typed["tracing"]["random_sampling"]["value"] == 100
            assert typed["generate_request_id"] and typed["use_remote_address"]
            assert all(vh["include_request_attempt_count"] for vh in typed["route_config"]["virtual_hosts"])
        else:
            assert f["name"] == "envoy.filters.network.tcp_proxy"
            assert log["name"] == "envoy.access_loggers.tcp_grpc"
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert endpoint_of(clusters[ALS_CLUSTER]) == {"address": "10.0.0.9", "port_value": 18001}
    assert "http2_protocol_options" in str(clusters[ALS_CLUSTER]["typed_extension_protocol_options"])
    assert endpoint_of(clusters[ZIPKIN_CLUSTER]) == {"address": "10.0.0.9", "port_value": 9412}


def test_without_a_collector_there_is_no_telemetry(data_dir):
    bootstrap = build_bootstrap(load_routes(EXAMPLES / "plain.yaml"), collector=None)
    assert all("access_log" not in f["typed_config"] for f in network_filters(bootstrap))
    assert {c["name"] for c in bootstrap["static_resources"]["clusters"]} == {"httpbin"}


def test_route_settings_reach_envoy_config():
    bootstrap = build_bootstrap(load_routes(EXAMPLES / "retry.yaml"), collector=None, admin_port=0)
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 0
    route = first_route(bootstrap)
    assert route["route"]["retry_policy"] == {"retry_on": "5xx", "num_retries": 3}
    timeout = build_bootstrap(load_routes(EXAMPLES / "timeout.yaml"), collector=None)
    assert first_route(timeout)["route"]["timeout"] == "1s"


def test_hostname_endpoints_use_dns_and_yaml_dump_round_trips(tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(
        "listeners: [{name: l, port: 1, virtual_hosts: [{routes: [{cluster: c}]}]}]\n"
        "clusters: [{name: c, endpoints: ['localhost:80'], lb_policy: random, http2: true}]\n"
    )
    bootstrap = build_bootstrap(load_routes(path), collector=CollectorTarget("collector.local", 1, 2))
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert clusters["c"]["type"] == "STRICT_DNS" and clusters["c"]["lb_policy"] == "RANDOM"
    assert clusters[ALS_CLUSTER]["type"] == "STRICT_DNS"
    assert yaml.safe_load(dump_yaml(bootstrap)) == bootstrap
    validate(bootstrap)


def test_collector_target_parse():
    assert CollectorTarget.parse("10.1.2.3:18000:9411") == CollectorTarget("10.1.2.3", 18000, 9411)
    assert CollectorTarget.parse("collector") == CollectorTarget("collector", 18000, 9411)
    for bad in ("a:b:c", "", "h:1:x"):
        with pytest.raises(ValueError, match="host:als_port:zipkin_port"):
            CollectorTarget.parse(bad)
