"""Settings: YAML file plus MESHSCOPE_* variables, clear errors on bad input."""

import pytest

from meshscope.settings import load_settings


def test_defaults_are_embedded_on_loopback():
    s = load_settings(env={})
    assert (s.host, s.bus, s.store, s.api_port, s.zipkin_port, s.als_port) == (
        "127.0.0.1", "memory", "sqlite", 8000, 9411, 18000)


def test_file_then_environment(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("api_port: 9000\nbus: kafka\nalert_webhooks: [http://127.0.0.1:1/a]\n")
    s = load_settings(cfg, env={"MESHSCOPE_API_PORT": "9100", "MESHSCOPE_PROXY_ADMINS": "a:1,b:2"})
    assert (s.api_port, s.bus, s.alert_webhooks, s.proxy_admins) == (
        9100, "kafka", ["http://127.0.0.1:1/a"], ["a:1", "b:2"])


def test_bad_settings_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        (tmp_path / "x.yaml").write_text("nope: 1\n")
        load_settings(tmp_path / "x.yaml", env={})
    with pytest.raises(ValueError, match="whole number"):
        load_settings(env={"MESHSCOPE_API_PORT": "eighty"})
