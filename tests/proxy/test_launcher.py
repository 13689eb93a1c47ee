"""The launcher: Envoy starts, answers /ready, several run at once, stops cleanly; bad configs
are reported with Envoy's own words."""

from __future__ import annotations

import time

import httpx
import pytest
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.launcher import EnvoyError, EnvoyProcess, validate

from tests.proxy.conftest import example, silent_collector

pytestmark = pytest.mark.envoy


def test_starts_ready_and_stops_cleanly(upstream, data_dir):
    routes = example("plain", data_dir, upstream.port)
    envoy = EnvoyProcess(build_bootstrap(routes, collector=silent_collector(), admin_port=0))
    with envoy:
        pid = envoy.pid
        assert envoy.running() and envoy.admin.ready()
        assert httpx.get(f"http://127.0.0.1:{routes.listeners[0].port}/status/200").status_code == 200
        process = envoy.process
        # the generated config uses no deprecated Envoy fields (they would be warned about here)
        assert "Deprecated" not in envoy.log_path.read_text()
    # SIGTERM is a clean shutdown for Envoy: exit code 0, well inside the kill timeout
    assert process.returncode == 0
    assert not envoy.running() and envoy.pid is None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
    assert not envoy.workdir.exists()


def test_several_envoys_run_at_once(upstream, data_dir):
    first, second = (example("plain", data_dir, upstream.port) for _ in range(2))
    with (
        EnvoyProcess(build_bootstrap(first, collector=None, admin_port=0)) as a,
        EnvoyProcess(build_bootstrap(second, collector=None, admin_port=0)) as b,
    ):
        assert a.admin_url != b.admin_url
        for routes in (first, second):
            assert httpx.get(f"http://127.0.0.1:{routes.listeners[0].port}/headers").status_code == 200


async def test_async_context_manager(upstream, data_dir):
    routes = example("plain", data_dir, upstream.port)
    async with EnvoyProcess(build_bootstrap(routes, collector=None, admin_port=0)) as envoy:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{envoy.admin_url}/ready")).status_code == 200
    assert not envoy.running()


def test_bad_config_is_reported_with_envoys_message(upstream, data_dir):
    bootstrap = build_bootstrap(example("plain", data_dir, upstream.port), collector=None, admin_port=0)
    bootstrap["static_resources"]["clusters"][0]["lb_policy"] = "FASTEST"
    with pytest.raises(EnvoyError) as err:
        validate(bootstrap)
    assert "Envoy rejected the config" in str(err.value) and "FASTEST" in str(err.value)
    started = time.monotonic()
    with pytest.raises(EnvoyError) as err:
        EnvoyProcess(bootstrap, ready_timeout=20).start()
    assert "exited with code" in str(err.value) and "FASTEST" in str(err.value)
    assert time.monotonic() - started < 10


def test_listener_port_in_use_is_reported(upstream, data_dir):
    routes = example("plain", data_dir, upstream.port)
    routes.listeners[0].port = upstream.port  # the demo upstream already holds it
    with pytest.raises(EnvoyError) as err:
        with EnvoyProcess(build_bootstrap(routes, collector=None, admin_port=0), ready_timeout=10):
            pass
    assert "address already in use" in str(err.value).lower() or "cannot bind" in str(err.value).lower()


def test_a_hung_envoy_is_killed_after_the_stop_timeout(upstream, data_dir):
    import signal

    bootstrap = build_bootstrap(example("plain", data_dir, upstream.port), collector=None, admin_port=0)
    envoy = EnvoyProcess(bootstrap, stop_timeout=0.5)
    with envoy:
        process = envoy.process
        process.send_signal(signal.SIGSTOP)  # a stopped process ignores SIGTERM until it is killed
        started = time.monotonic()
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5
