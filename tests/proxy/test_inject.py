"""Injecting meshscope's telemetry into a user's own Envoy config."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from meshscope.proxy.inject import InjectError, inject_telemetry, load_envoy_config
from meshscope.proxy.launcher import EnvoyProcess, validate
from meshscope.proxy.telemetry import ALS_CLUSTER, ZIPKIN_CLUSTER, CollectorTarget

from tests.conftest import free_port
from tests.proxy.telemetry_sink import TelemetrySink

USER_CONFIG = Path(__file__).with_name("user_envoy.yaml").read_text()


def user_config(tmp_path, app_port: int = 1, suffix: str = "yaml") -> tuple[dict, dict]:
    ports = {"web": free_port(), "db": free_port(), "app": app_port}
    path = tmp_path / f"envoy.{suffix}"
    text = USER_CONFIG % ports
    path.write_text(text if suffix == "yaml" else json.dumps(yaml.safe_load(text)))
    return load_envoy_config(path), ports


def filters(bootstrap: dict) -> list[dict]:
    out = []
    for listener in bootstrap["static_resources"]["listeners"]:
        chains = listener.get("filter_chains", []) + [listener.get("default_filter_chain", {})]
        out += [f for chain in chains for f in chain.get("filters", [])]
    return out


@pytest.mark.envoy
@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_every_hcm_and_tcp_proxy_gets_loggers_and_tracer(tmp_path, suffix):
    config, _ = user_config(tmp_path, suffix=suffix)
    injection = inject_telemetry(config, CollectorTarget("127.0.0.1", 18000, 9411))
    assert (injection.http_connection_managers, injection.tcp_proxies) == (1, 2)
    assert injection.warnings == []
    result = injection.bootstrap
    hcm, *tcp = filters(result)
    loggers = [entry["name"] for entry in hcm["typed_config"]["access_log"]]
    assert loggers == ["envoy.access_loggers.stdout", "envoy.access_loggers.http_grpc"]  # the user's is kept
    assert hcm["typed_config"]["tracing"]["provider"]["name"] == "envoy.tracers.zipkin"
    assert hcm["typed_config"]["route_config"]["virtual_hosts"][0]["include_request_attempt_count"] is True
    assert [[e["name"] for e in f["typed_config"]["access_log"]] for f in tcp] == [
        ["envoy.access_loggers.tcp_grpc"]
    ] * 2
    names = [c["name"] for c in result["static_resources"]["clusters"]]
    assert names == ["app", ALS_CLUSTER, ZIPKIN_CLUSTER]
    assert result["node"]["cluster"] == "meshscope"
    assert "access_log" not in filters(config)[1]["typed_config"]  # the input is not modified
    validate(result)
    # injecting again replaces the earlier injection instead of doubling it
    again = inject_telemetry(result, CollectorTarget("10.0.0.1", 1, 2)).bootstrap
    assert [e["name"] for e in filters(again)[0]["typed_config"]["access_log"]] == loggers
    assert [c["name"] for c in again["static_resources"]["clusters"]] == names
    validate(again)


def test_user_tracing_sampling_is_kept_and_admin_added(tmp_path):
    config, _ = user_config(tmp_path)
    filters(config)[0]["typed_config"]["tracing"] = {"random_sampling": {"value": 5}}
    result = inject_telemetry(config, CollectorTarget(), admin_port=0).bootstrap
    tracing = filters(result)[0]["typed_config"]["tracing"]
    assert (
        tracing["random_sampling"] == {"value": 5} and tracing["provider"]["name"] == "envoy.tracers.zipkin"
    )
    assert result["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}


def test_lds_and_empty_configs_are_warned_about():
    injection = inject_telemetry({"dynamic_resources": {"lds_config": {"ads": {}}}}, CollectorTarget())
    assert any("LDS" in w for w in injection.warnings)
    assert any("no HTTP connection manager" in w for w in injection.warnings)


def test_unreadable_configs_are_clear_errors(tmp_path):
    with pytest.raises(InjectError, match="cannot read"):
        load_envoy_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("static_resources: [")
    with pytest.raises(InjectError, match="neither YAML nor JSON"):
        load_envoy_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1")
    with pytest.raises(InjectError, match="bootstrap mapping"):
        load_envoy_config(tmp_path / "list.yaml")
    with pytest.raises(InjectError, match="list of mappings"):
        inject_telemetry({"static_resources": {"listeners": "x"}}, CollectorTarget())


@pytest.mark.envoy
@pytest.mark.slow
def test_injected_config_logs_real_traffic(tmp_path, upstream):
    config, ports = user_config(tmp_path, app_port=upstream.port)
    with TelemetrySink() as sink:
        bootstrap = inject_telemetry(config, sink.target, admin_port=0, log_name="user").bootstrap
        with EnvoyProcess(bootstrap) as envoy:
            assert httpx.get(f"http://127.0.0.1:{ports['web']}/status/201", timeout=5).status_code == 201
            with httpx.Client(timeout=5) as client:  # the tcp_proxy passes HTTP through as bytes
                assert client.get(f"http://127.0.0.1:{ports['db']}/headers").status_code == 200
            sink.wait_for(lambda: len(sink.http_entries()) == 1 and len(sink.tcp_entries()) == 1)
            sink.wait_for(lambda: len(sink.spans) >= 2)  # the request's span and its upstream span
            dump = json.dumps(envoy.admin.config_dump())
        assert "envoy.access_loggers.http_grpc" in dump and "envoy.access_loggers.tcp_grpc" in dump
        (entry,) = sink.http_entries()
        assert entry.response.response_code.value == 201
        assert entry.request.request_id == upstream.seen()[0]["x-request-id"]
        assert {s["kind"] for s in sink.spans} == {"SERVER", "CLIENT"}
        assert entry.request.request_id in {s["tags"].get("guid:x-request-id") for s in sink.spans}
        assert {m.identifier.log_name for m in sink.service.messages if m.HasField("identifier")} == {
            "user",
            "user-tcp",
        }


@pytest.mark.envoy
def test_a_config_dump_is_refused_in_one_line(tmp_path, capsys):
    """What a running Envoy's admin /config_dump prints is not a bootstrap: `proxy config` says so."""
    from meshscope.cli import main

    config, _ = user_config(tmp_path, app_port=free_port())
    with EnvoyProcess(inject_telemetry(config, CollectorTarget(), admin_port=0).bootstrap) as envoy:
        dump = envoy.admin.config_dump()
    path = tmp_path / "config_dump.json"
    path.write_text(json.dumps(dump))
    with pytest.raises(InjectError, match="config_dump"):
        load_envoy_config(path)
    assert main(["proxy", "config", "--envoy-config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is an Envoy config_dump" in err and "extensionProviders" in err
