"""Loss accounting against a real Envoy whose collector is down: Envoy says it wrote the entries and
dropped none, only the ALS cluster's connect failures show the loss; the account reports the gap."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.launcher import EnvoyProcess
from meshscope.proxy.loss import account

from tests.collector.envoy_lab import APP_HOST, lab_bootstrap, lab_routes, listener_port, need_envoy
from tests.conftest import free_port


@pytest.mark.envoy
@pytest.mark.slow
async def test_gap_when_the_collector_is_down(data_dir):
    need_envoy()
    async with DemoUpstream(port=free_port()) as upstream:
        routes = lab_routes(upstream.port, data_dir / "certs")
        # nobody listens on these ports: the collector is down
        bootstrap = lab_bootstrap(routes, free_port(), free_port(), node_id="lonely-proxy")
        async with EnvoyProcess(bootstrap) as envoy, httpx.AsyncClient(timeout=10) as client:
            port = listener_port(routes, "ingress")
            for _ in range(5):
                r = await client.get(f"http://127.0.0.1:{port}/status/200", headers={"host": APP_HOST})
                assert r.status_code == 200
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                (loss,) = await account([envoy.admin_address], arrived={})
                if loss.connect_failures > 0 or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
    assert loss.reachable and loss.node_id == "lonely-proxy"
    assert (loss.written, loss.dropped, loss.arrived, loss.gap) == (5, 0, 0, 5)
    assert loss.connect_failures > 0


async def test_unreachable_admin_is_reported_not_raised():
    (loss,) = await account([f"127.0.0.1:{free_port()}"], arrived={"x": 3}, timeout=1.0)
    assert not loss.reachable and loss.error.startswith("admin unreachable")
