"""Envoy admin-API client: readiness, stats (counters and gauges), clusters, config dump.

`AdminClient` is synchronous, `AsyncAdminClient` the same for asyncio code (the collector's loss
accounting); both parse with the same functions.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

ALS_WRITTEN = "access_logs.grpc_access_log.logs_written"
ALS_DROPPED = "access_logs.grpc_access_log.logs_dropped"


def parse_stats(payload: dict) -> dict[str, int | float]:
    """`/stats?format=json` → {name: value} for counters and gauges (histograms are left out)."""
    out: dict[str, int | float] = {}
    for entry in payload.get("stats", []):
        if "name" in entry and "value" in entry:
            out[entry["name"]] = entry["value"]
    return out


def cluster_stat(stats: dict[str, int | float], cluster: str, stat: str) -> int:
    """`cluster.<cluster>.<stat>` from a stats dict, 0 when Envoy has not created it yet."""
    return int(stats.get(f"cluster.{cluster}.{stat}", 0))


def access_log_counts(stats: dict[str, int | float]) -> dict[str, int]:
    """What Envoy says its gRPC access loggers wrote (entered the buffer) and dropped."""
    return {"logs_written": int(stats.get(ALS_WRITTEN, 0)), "logs_dropped": int(stats.get(ALS_DROPPED, 0))}


def _base(address: str) -> str:
    return address if "://" in address else f"http://{address}"


class AdminClient:
    """Synchronous client for one Envoy's admin API (`http://127.0.0.1:15000` or `127.0.0.1:15000`)."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = _base(base_url).rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, **params: Any) -> httpx.Response:
        response = httpx.get(self.base_url + path, params=params or None, timeout=self.timeout)
        response.raise_for_status()
        return response

    def ready(self) -> bool:
        """True when /ready answers 200 (LIVE); False when not ready or unreachable."""
        try:
            return httpx.get(self.base_url + "/ready", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def stats(self, filter: str | None = None) -> dict[str, int | float]:
        """Counters and gauges, optionally narrowed by Envoy's regex `filter`."""
        params = {"format": "json", **({"filter": filter} if filter else {})}
        return parse_stats(self._get("/stats", **params).json())

    def cluster_stat(self, cluster: str, stat: str) -> int:
        """One `cluster.<cluster>.<stat>` counter (0 if absent)."""
        return cluster_stat(self.stats(filter=rf"^cluster\.{re.escape(cluster)}\."), cluster, stat)

    def upstream_rq_retry(self, cluster: str) -> int:
        return self.cluster_stat(cluster, "upstream_rq_retry")

    def upstream_rq_5xx(self, cluster: str) -> int:
        return self.cluster_stat(cluster, "upstream_rq_5xx")

    def upstream_rq_timeout(self, cluster: str) -> int:
        return self.cluster_stat(cluster, "upstream_rq_timeout")

    def access_log_counts(self) -> dict[str, int]:
        """{'logs_written': n, 'logs_dropped': m} from `access_logs.grpc_access_log.*`."""
        return access_log_counts(self.stats(filter=r"^access_logs\."))

    def clusters(self) -> dict:
        """`/clusters?format=json`: every cluster with its hosts and their health and stats."""
        return self._get("/clusters", format="json").json()

    def config_dump(self) -> dict:
        return self._get("/config_dump").json()

    def listeners(self) -> dict:
        return self._get("/listeners", format="json").json()

    def server_info(self) -> dict:
        return self._get("/server_info").json()


class AsyncAdminClient:
    """The same admin API for asyncio code; keeps one connection pool until `aclose()`."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = _base(base_url).rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def _get(self, path: str, **params: Any) -> httpx.Response:
        response = await self._client.get(path, params=params or None)
        response.raise_for_status()
        return response

    async def ready(self) -> bool:
        try:
            return (await self._client.get("/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    async def stats(self, filter: str | None = None) -> dict[str, int | float]:
        params = {"format": "json", **({"filter": filter} if filter else {})}
        return parse_stats((await self._get("/stats", **params)).json())

    async def cluster_stat(self, cluster: str, stat: str) -> int:
        return cluster_stat(await self.stats(filter=rf"^cluster\.{re.escape(cluster)}\."), cluster, stat)

    async def access_log_counts(self) -> dict[str, int]:
        return access_log_counts(await self.stats(filter=r"^access_logs\."))

    async def clusters(self) -> dict:
        return (await self._get("/clusters", format="json")).json()

    async def config_dump(self) -> dict:
        return (await self._get("/config_dump")).json()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
