"""`meshscope proxy config | run | stats` as a person uses them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from meshscope.cli import main
from tests.conftest import free_port
from tests.proxy.test_inject import USER_CONFIG

pytestmark = pytest.mark.envoy


@pytest.fixture(autouse=True)
def data_dir_env(monkeypatch, data_dir):
    monkeypatch.setenv("MESHSCOPE_DATA_DIR", str(data_dir))


def test_config_prints_a_validated_bootstrap(capsys):
    assert main(["proxy", "config", "retry", "--collector", "127.0.0.2:18001:9412"]) == 0
    out, err = capsys.readouterr()
    bootstrap = yaml.safe_load(out)
    assert "validate: OK" in err
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert set(clusters) == {"httpbin", "meshscope_als", "meshscope_zipkin"}
    assert "127.0.0.2" in json.dumps(clusters["meshscope_als"])


def test_config_for_every_example_and_json_output(capsys):
    for name in ("plain", "timeout", "sni-gateway", "sni-passthrough"):
        assert main(["proxy", "config", name, "--json"]) == 0
        assert (
            json.loads(capsys.readouterr().out)["admin"]["address"]["socket_address"]["port_value"] == 15000
        )


def test_config_injects_into_a_users_envoy_config(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(USER_CONFIG % {"web": 10080, "db": 10081, "app": 10082})
    assert main(["proxy", "config", "--envoy-config", str(path), "--admin-port", "19000"]) == 0
    bootstrap = yaml.safe_load(capsys.readouterr().out)
    assert "envoy.access_loggers.tcp_grpc" in json.dumps(bootstrap)
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 19000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["proxy", "config", "no-such-example"], "no routes file or example"),
        (["proxy", "config", "--collector", "a:b:c"], "host:als_port:zipkin_port"),
        (["proxy", "config", "plain", "--envoy-config", "x.yaml"], "not both"),
        (["proxy", "config", "--admin-port", "99999"], "Envoy rejected the config"),
        (["proxy", "stats", "--admin", "127.0.0.1:1"], "cannot read stats"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    if argv[-1] == "127.0.0.1:1":
        argv = argv[:-1] + [f"127.0.0.1:{free_port()}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("meshscope: ")


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_the_lab_until_signalled_then_stops_envoy(data_dir, stop_signal, capsys):
    listener, admin, demo = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "MESHSCOPE_DATA_DIR": str(data_dir),
        "MESHSCOPE_PROXY_PORT": str(listener),
        "MESHSCOPE_ENVOY_ADMIN_PORT": str(admin),
        "MESHSCOPE_DEMO_UPSTREAM_PORT": str(demo),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshscope.cli",
            "proxy",
            "run",
            "retry",
            "--demo-upstream",
            "--collector",
            "127.0.0.1:1:2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].strip() == f"demo upstream: http://127.0.0.1:{demo}"
        assert lines[1].startswith("envoy ready (pid ") and f"admin: http://127.0.0.1:{admin}" in lines[1]
        assert lines[2].strip() == f"listener: http://127.0.0.1:{listener}  (ingress)"
        envoy_pid = int(lines[1].split("pid ")[1].split(")")[0])
        assert httpx.get(f"http://127.0.0.1:{listener}/flaky/1", timeout=10).status_code == 503
        assert (
            main(["proxy", "stats", "--admin", f"127.0.0.1:{admin}", "--filter", "upstream_rq_retry$"]) == 0
        )
        proc.send_signal(stop_signal)
        assert proc.wait(20) == 0
        assert "envoy stopped (exit code 0)" in proc.stderr.read()
        time.sleep(0.1)
        with pytest.raises(ProcessLookupError):
            os.kill(envoy_pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
