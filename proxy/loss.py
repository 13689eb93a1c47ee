"""Loss accounting: what each proxy says it logged versus what reached the collector.

Envoy counts an entry in ``access_logs.grpc_access_log.logs_written`` when it enters the logger's
buffer, not when it is delivered, and a collector that is down loses entries without
``logs_dropped`` moving (only the access-log cluster's ``upstream_cx_connect_fail`` shows it). So the
gap per proxy is ``written - dropped - arrived``, reported with the connect failures beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)


async def _proxy_stats(admin: str, timeout: float) -> tuple[str | None, dict[str, int | float]]:
    """The proxy's node id (admin /server_info) and its counters and gauges (admin /stats)."""
    async with AsyncAdminClient(admin, timeout=timeout) as client:
        stats = await client.stats()
    # AsyncAdminClient has no server_info(); the node id is one plain GET away
    base = admin if "://" in admin else f"http://{admin}"
    async with httpx.AsyncClient(timeout=timeout) as http:
        info = (await http.get(f"{base}/server_info")).raise_for_status().json()
    node_id = (info.get("node") or {}).get("id") or info.get("command_line_options", {}).get("service_node")
    return node_id, stats


async def account_one(admin: str, arrived: Mapping[str, int], timeout: float = 2.0) -> ProxyLoss:
    """The account of one proxy reached through its admin address ("host:port")."""
    try:
        node_id, counters = await _proxy_stats(admin, timeout)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return ProxyLoss(admin=admin, node_id=None, reachable=False, error=f"admin unreachable: {exc}")
    counts = access_log_counts(counters)
    written, dropped = counts["logs_written"], counts["logs_dropped"]
    got = arrived.get(node_id or "", 0)
    return ProxyLoss(
        admin=admin, node_id=node_id, reachable=True, written=written, dropped=dropped,
        connect_failures=cluster_stat(counters, ALS_CLUSTER, "upstream_cx_connect_fail"),
        arrived=got, gap=max(written - dropped - got, 0),
    )


async def account(proxy_admins: list[str], arrived: Mapping[str, int],
                  timeout: float = 2.0) -> list[ProxyLoss]:
    """Per-proxy loss for every admin address. ``arrived`` maps node id → access records stored for it
    (``StoreReader.node_ids()``: the one definition of "arrived"). Unreachable proxies are reported,
    never raised."""
    return list(await asyncio.gather(*(account_one(a, arrived, timeout) for a in proxy_admins)))
