"""The bundled Envoy never outlives `meshscope up`: SIGKILL of up takes it along, one left by an earlier
run is stopped at the next start, and loss accounting notices a proxy whose counters restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from meshscope.proxy import loss as loss_module
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.launcher import EnvoyProcess, envoy_path
from meshscope.proxy.loss import account

from meshscope.settings import Settings
from tests.collector.envoy_lab import APP_HOST, lab_bootstrap, lab_routes, listener_port, need_envoy
from tests.conftest import free_port
from tests.stack.test_up import _alive, _children, _wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _up(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*MESHSCOPE, "--config", str(config), "up"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_sigkill_of_up_takes_envoy_along_and_a_stale_one_is_stopped(tmp_path):
    need_envoy()
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    data = tmp_path / "data"
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(data)}))
    log = tmp_path / "up.log"
    proc = _up(config, log)
    orphan = None
    try:
        _wait_for(lambda: "meshscope is up" in log.read_text(), 120, "the stack")
        [envoy] = [p for p in _children(proc.pid) if "envoy" in Path(f"/proc/{p}/cmdline").read_text()]
        assert (data / "envoy" / "envoy.pid").read_text().split() == [str(envoy)]
        proc.send_signal(signal.SIGKILL)  # meshscope only: its Envoy must go by itself
        proc.wait(10)
        _wait_for(lambda: not _alive(envoy), 10, "the bundled Envoy to die with meshscope up")

        # an Envoy from an older run that had no parent-death signal: still running, port taken
        orphan = subprocess.Popen([envoy_path(), "-c", str(data / "envoy" / "envoy.json"),
                                   "--disable-hot-restart", "-l", "error"], start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (data / "envoy" / "envoy.pid").write_text(f"{orphan.pid}\n")
        admin = f"http://127.0.0.1:{ports['envoy_admin_port']}/ready"
        _wait_for(lambda: _ready(admin), 30, "the stale Envoy")
        log2 = tmp_path / "up2.log"
        proc = _up(config, log2)
        _wait_for(lambda: "meshscope is up" in log2.read_text() or proc.poll() is not None, 120, "up again")
        assert proc.poll() is None, log2.read_text()
        assert orphan.wait(10) is not None  # stopped by the new up
        assert "stopping a stale Envoy" in log2.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        _kill_group(proc)
        if orphan is not None and orphan.poll() is None:
            orphan.kill()
            orphan.wait(5)


def _restartable_proxy(upstream_port: int, data_dir: Path, node_id: str) -> tuple[dict, str, int]:
    """A lab bootstrap whose collector is down, on a fixed admin port (a restart is the same proxy to
    the loss account): (bootstrap, admin address, ingress port)."""
    routes = lab_routes(upstream_port, data_dir / "certs")
    bootstrap = lab_bootstrap(routes, free_port(), free_port(), node_id=node_id)
    admin_port = free_port()
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    return bootstrap, f"127.0.0.1:{admin_port}", listener_port(routes, "ingress")


async def test_loss_accounting_notices_a_restart(data_dir):
    """The collector is down; Envoy writes 5 entries, restarts (counters at 0): the gap stays 5, also for
    an account that restarted itself in between (its memory file)."""
    memory = data_dir / "proxy-loss.json"
    need_envoy()
    loss_module._RUNS.clear()
    async with DemoUpstream(port=free_port()) as upstream:
        bootstrap, admin, port = _restartable_proxy(upstream.port, data_dir, "restarting-proxy")
        async with EnvoyProcess(bootstrap), httpx.AsyncClient(timeout=10) as client:
            for _ in range(5):
                assert (await client.get(f"http://127.0.0.1:{port}/status/200",
                                         headers={"host": APP_HOST})).status_code == 200
            deadline = time.monotonic() + 10
            while (first := (await account([admin], arrived={}, memory=memory))[0]).written < 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert (first.written, first.gap, first.restarts) == (5, 5, 0)
        await asyncio.sleep(1.0)
        async with EnvoyProcess(bootstrap):
            loss_module._RUNS.clear()  # the API restarted too: it recalls the first run from its memory
            (after,) = await account([admin], arrived={}, memory=memory)
            assert after.restarts == 1 and after.written == 5 and after.gap == 5  # not 0
            loss_module._RUNS.clear()  # an account that never saw the first run
            (unseen,) = await account([admin], arrived={"restarting-proxy": 40})
    assert unseen.gap == 0 and unseen.error and "counters reset" in unseen.error


async def test_api_follows_a_proxy_restart_nobody_asked_about(data_dir):
    """The API reads its proxies every proxy_poll_s: Envoy logs 5 entries (the collector is down) and
    restarts before anyone asks /api/proxies; the first answer after the restart still says 5 lost."""
    need_envoy()
    from tests.api.conftest import serve

    loss_module._RUNS.clear()
    async with DemoUpstream(port=free_port()) as upstream:
        bootstrap, admin, port = _restartable_proxy(upstream.port, data_dir, "watched-proxy")
        settings = Settings(data_dir=data_dir, proxy_admins=[admin], proxy_poll_s=0.2)
        api = await asyncio.to_thread(serve, settings)
        try:
            async with EnvoyProcess(bootstrap) as envoy, httpx.AsyncClient(timeout=10) as client:
                for _ in range(5):
                    assert (await client.get(f"http://127.0.0.1:{port}/status/200",
                                             headers={"host": APP_HOST})).status_code == 200
                deadline = time.monotonic() + 10
                while envoy.admin.access_log_counts()["logs_written"] < 5:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # a few of the API's own reads
            async with EnvoyProcess(bootstrap), httpx.AsyncClient(base_url=api.url, timeout=10) as client:
                body = (await client.get("/api/proxies")).json()
        finally:
            await asyncio.to_thread(api.stop)
    [loss] = body["unmatched_admins"]  # nothing of this proxy arrived: it is listed by its admin address
    assert (loss["written"], loss["gap"], loss["restarts"]) == (5, 5, 1)
    assert (data_dir / "proxy-loss.json").is_file()


async def test_what_a_killed_run_logged_after_the_last_read_is_bounded(data_dir):
    """The collector is down, so every entry Envoy logs is lost. The account reads Envoy while 20 req/s
    flow, then stops reading; 10 more requests, SIGKILL, restart. Envoy's counters never showed those
    10: the account names the window after its last read and bounds what it held (peak rate x window),
    so written - dropped - arrived + unseen_at_most covers every lost entry."""
    need_envoy()
    loss_module._RUNS.clear()
    async with DemoUpstream(port=free_port()) as upstream:
        bootstrap, admin, port = _restartable_proxy(upstream.port, data_dir, "killed-proxy")
        sent = 0
        async with httpx.AsyncClient(timeout=10, headers={"host": APP_HOST}) as client:
            async def paced(n: int, read: bool) -> None:
                nonlocal sent
                for k in range(n):
                    assert (await client.get(f"http://127.0.0.1:{port}/status/200")).status_code == 200
                    sent += 1
                    if read and k % 5 == 4:
                        await account([admin], arrived={})
                    await asyncio.sleep(0.05)

            envoy = EnvoyProcess(bootstrap)
            await asyncio.to_thread(envoy.start)
            try:
                await paced(30, read=True)
                (last,) = await account([admin], arrived={})
                await paced(10, read=False)  # unseen by the account
                await asyncio.sleep(0.3)  # in Envoy's counters (and buffer), then gone with it
                envoy.process.send_signal(signal.SIGKILL)
                envoy.process.wait(10)
            finally:
                envoy.stop()
            async with EnvoyProcess(bootstrap):
                (after,) = await account([admin], arrived={})
    assert last.written == 30 and after.restarts == 1 and after.written == 30
    assert after.unseen_since == [pytest.approx(last.read_at)]
    assert 10 <= after.unseen_at_most <= 80, after  # ~20/s over the 0.8 s unseen and the restart
    assert after.gap + after.unseen_at_most >= sent == 40
