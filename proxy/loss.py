"""Loss accounting: what each proxy says it logged versus what reached the collector.

Envoy counts an entry in ``access_logs.grpc_access_log.logs_written`` when it enters the logger's
buffer, not when it is delivered, and a collector that is down loses entries without
``logs_dropped`` moving (only the access-log cluster's ``upstream_cx_connect_fail`` shows it). So the
gap per proxy is ``written - dropped - arrived``, reported with the connect failures beside it.

Envoy's counters start at 0 when it restarts. The account remembers each proxy's last counters and
its start time (admin /server_info uptime): after a restart it keeps counting the earlier run's
entries, and when the store holds more than the proxy's counters can explain (a restart it did not
see) it says so in ``error`` instead of reporting the gap as zero. Given a ``memory`` file (the API
keeps one in its data directory) the remembered runs outlive the process, so a restarted
``meshscope up`` or API still carries what the proxy's earlier runs counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx
from meshscope.proxy.admin import AsyncAdminClient, access_log_counts, cluster_stat
from meshscope.proxy.telemetry import ALS_CLUSTER


@dataclass(slots=True)
class ProxyLoss:
    """One proxy's account. ``gap`` > 0: entries Envoy buffered that never arrived (nor were counted
    as dropped); it is only meaningful once Envoy has flushed (its buffer flush interval)."""

    admin: str
    node_id: str | None
    reachable: bool
    written: int = 0
    dropped: int = 0
    connect_failures: int = 0
    arrived: int = 0
    gap: int = 0
    error: str | None = None
    started_at: float | None = None  # when this run of the proxy started (its counters' zero)
    restarts: int = 0  # restarts this process saw (their counts are carried into written/dropped)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Run:
    """What the account last saw of one proxy: its start, its counters, and earlier runs' totals."""

    started_at: float
    written: int
    dropped: int
    carried_written: int = 0
    carried_dropped: int = 0
    restarts: int = 0


_RUNS: dict[str, _Run] = {}  # admin address -> last seen run
log = logging.getLogger(__name__)


def _recall(memory: Path, admins: list[str]) -> None:
    """Load the remembered runs of ``admins`` this process has not seen yet (a restarted API)."""
    if all(a in _RUNS for a in admins) or not memory.is_file():
        return
    try:
        saved = json.loads(memory.read_text())
        names = {f.name for f in fields(_Run)}
        for admin, run in saved.items():
            if admin in admins and admin not in _RUNS:
                _RUNS[admin] = _Run(**{k: v for k, v in run.items() if k in names})
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("proxy loss memory %s unreadable, starting afresh: %s", memory, exc)


def _remember(memory: Path) -> None:
    try:
        memory.parent.mkdir(parents=True, exist_ok=True)
        tmp = memory.with_name(memory.name + ".tmp")
        tmp.write_text(json.dumps({admin: asdict(run) for admin, run in _RUNS.items()}))
        os.replace(tmp, memory)
    except OSError as exc:  # a full disk must not break the account itself
        log.warning("cannot write the proxy loss memory %s: %s", memory, exc)


def _follow(admin: str, started_at: float, written: int, dropped: int) -> _Run:
    """Update the remembered run of a proxy, carrying the earlier run's counts over a restart."""
    prev = _RUNS.get(admin)
    run = _Run(started_at, written, dropped)
    if prev is not None:
        restarted = (abs(started_at - prev.started_at) > 5.0 or written < prev.written
                     or dropped < prev.dropped)
        run.carried_written, run.carried_dropped = prev.carried_written, prev.carried_dropped
        run.restarts = prev.restarts
        if restarted:
            run.carried_written += prev.written
            run.carried_dropped += prev.dropped
            run.restarts += 1
    _RUNS[admin] = run
    return run


async def _proxy_stats(admin: str, timeout: float) -> tuple[str | None, dict[str, int | float], float | None]:
    """The proxy's node id and start time (admin /server_info) and its counters (admin /stats)."""
    async with AsyncAdminClient(admin, timeout=timeout) as client:
        stats = await client.stats()
    # AsyncAdminClient has no server_info(); the node id is one plain GET away
    base = admin if "://" in admin else f"http://{admin}"
    async with httpx.AsyncClient(timeout=timeout) as http:
        info = (await http.get(f"{base}/server_info")).raise_for_status().json()
    node_id = (info.get("node") or {}).get("id") or info.get("command_line_options", {}).get("service_node")
    try:
        started_at = time.time() - int(str(info.get("uptime_current_epoch", "")).rstrip("s"))
    except ValueError:
        started_at = None
    return node_id, stats, started_at


async def account_one(admin: str, arrived: Mapping[str, int], timeout: float = 2.0) -> ProxyLoss:
    """The account of one proxy reached through its admin address ("host:port")."""
    try:
        node_id, counters, started_at = await _proxy_stats(admin, timeout)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return ProxyLoss(admin=admin, node_id=None, reachable=False, error=f"admin unreachable: {exc}")
    counts = access_log_counts(counters)
    run = _follow(admin, started_at or 0.0, counts["logs_written"], counts["logs_dropped"])
    written, dropped = run.carried_written + run.written, run.carried_dropped + run.dropped
    got = arrived.get(node_id or "", 0)
    error = None
    if got > written - dropped:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started_at)) if started_at else "?"
        error = (f"counters reset: the proxy (re)started at {when} UTC and counts only since then, "
                 f"but {got} records arrived in all; entries lost before the restart cannot be counted")
    return ProxyLoss(
        admin=admin, node_id=node_id, reachable=True, written=written, dropped=dropped,
        connect_failures=cluster_stat(counters, ALS_CLUSTER, "upstream_cx_connect_fail"),
        arrived=got, gap=max(written - dropped - got, 0), error=error, started_at=started_at,
        restarts=run.restarts,
    )


async def account(proxy_admins: list[str], arrived: Mapping[str, int],
                  timeout: float = 2.0, memory: Path | None = None) -> list[ProxyLoss]:
    """Per-proxy loss for every admin address. ``arrived`` maps node id → access records stored for it
    (``StoreReader.node_ids()``: the one definition of "arrived"). Unreachable proxies are reported,
    never raised. ``memory``: a file that keeps the proxies' runs across restarts of this process."""
    if memory is not None:
        _recall(memory, proxy_admins)
    losses = list(await asyncio.gather(*(account_one(a, arrived, timeout) for a in proxy_admins)))
    if memory is not None:
        _remember(memory)
    return losses
