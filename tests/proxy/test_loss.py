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
            (first,) = await account([envoy.admin_address], arrived={})
            while True:
                (loss,) = await account([envoy.admin_address], arrived={})
                if loss.connect_failures > 0 or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            # three more entries, read 0.5 s after the last read: only the five before it have settled
            await asyncio.sleep(0.5)
            for _ in range(3):
                await client.get(f"http://127.0.0.1:{port}/status/200", headers={"host": APP_HOST})
            while envoy.admin.access_log_counts()["logs_written"] != 8:
                assert loop.time() < deadline + 10, "Envoy did not count the three entries"
                await asyncio.sleep(0.05)
            (later,) = await account([envoy.admin_address], arrived={"lonely-proxy": 4}, settle_s=0.4)
    assert first.gap_settled is None  # no read old enough yet: the gap may be entries in flight
    assert loss.reachable and loss.node_id == "lonely-proxy"
    assert (loss.written, loss.dropped, loss.arrived, loss.gap) == (5, 0, 0, 5)
    assert loss.connect_failures > 0
    assert (later.written, later.gap, later.gap_settled) == (8, 4, 1)  # 5 settled, 4 of them arrived


async def test_unreachable_admin_is_reported_not_raised():
    (loss,) = await account([f"127.0.0.1:{free_port()}"], arrived={"x": 3}, timeout=1.0)
    assert not loss.reachable and loss.error.startswith("admin unreachable")


def test_a_run_that_ended_between_reads_leaves_a_bounded_window():
    """A run last read at t=110 writing at most 20 entries/s; its end is bounded by the first read that
    failed (t=111), else by the next run's start, else (died with its watcher) by the watcher's cadence."""
    from meshscope.proxy.loss import _follow, _Run

    def ended(down_at: float | None = None, died_by: float | None = None) -> _Run:
        prev = _Run(started_at=100.0, written=50, dropped=1, read_at=110.0, peak_rate=20.0, down_at=down_at)
        new = _Run(started_at=115.0, written=3, dropped=0, read_at=116.0)
        return _follow(prev, new, restarted=True, died_by=died_by)

    after_failed_read = ended(down_at=111.0)
    assert (after_failed_read.carried_written, after_failed_read.carried_dropped) == (50, 1)
    assert after_failed_read.unseen == [[110.0, 1.0, 20]]
    assert ended().unseen == [[110.0, 6.0, 120]]  # only the next start bounds it: 115 + 1 s of slack
    with_watcher = ended(died_by=110.5)
    assert with_watcher.unseen == [[110.0, 0.5, 10]] and with_watcher.restarts == 1


def test_a_stale_uptime_is_no_restart_but_a_falling_one_or_falling_counters_are():
    """Envoy's server.uptime gauge moves only at stats flushes (every 5 s): a start time computed from it
    drifts by up to 5 s within one run."""
    from meshscope.proxy.loss import _restarted, _Run

    prev = _Run(started_at=1000.0, written=40, dropped=0, read_at=1020.0, uptime=15.0)
    assert not _restarted(prev, uptime=15.0, written=45, dropped=0, now=1021.0)  # start looks 1006: stale
    assert _restarted(prev, uptime=10.0, written=45, dropped=0, now=1021.0)  # uptime fell
    assert _restarted(prev, uptime=15.0, written=3, dropped=0, now=1021.0)  # counters fell
    assert _restarted(prev, uptime=0.0, written=90, dropped=0, now=1030.0)  # started 30 s after the first
