"""``/metrics`` for Prometheus: what this process counts, and gauges of what the store holds.

In-process counters (the pipeline's per-cluster requests / 5xx / retried, records indexed and refused,
alerts, notifications, indexer lag and batch latency; the collector's, when ``meshscope up`` runs it
in the same process and hands its registry over in ``app.state.metric_registries``) are exported as
they are. Totals recomputed from the store at each scrape (records stored per kind, per-cluster
requests / 5xx / retried, alert events, firing groups, proxies) are gauges: a recount can go down
(retention) and every API replica reports the same figure, so they are not counters.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from meshscope.api.deps import reader_of
from meshscope.pipelines import StoreReader

router = APIRouter(tags=["service"])
KINDS = ("access", "span", "exchange", "flow", "alert")
MAX_ALERTS = 10_000

# the store-derived gauges this endpoint adds to the process's own metrics
METRIC_NAMES = (
    "meshscope_stored_records",
    "meshscope_stored_requests",
    "meshscope_stored_responses_5xx",
    "meshscope_stored_requests_retried",
    "meshscope_stored_alert_events",
    "meshscope_alerts_firing",
    "meshscope_proxies",
    "meshscope_uploads_total",
)


class _Snapshot:
    """A prometheus_client collector over figures gathered once per scrape."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self):
        return iter(self.metrics)


class ClusterTotals:
    """Per-cluster (requests, 5xx, retried) totals over every stored record, without rescanning the whole
    store at each scrape: records older than SETTLE_S are summed once into a base that moves forward,
    and only the recent part is aggregated per scrape. A full recount every FULL_EVERY_S folds in late
    arrivals (a collector replaying its spool) and retention."""

    SETTLE_S = 300.0
    FULL_EVERY_S = 3600.0

    def __init__(self) -> None:
        self.base: dict[str, list[int]] = {}
        self.base_end: float | None = None
        self.full_at = 0.0

    @staticmethod
    async def _sum(store: StoreReader, start: float, end: float) -> dict[str, list[int]]:
        totals: dict[str, list[int]] = {}
        if end <= start:
            return totals
        for a in await store.aggregates(start, end, end - start, ("upstream_cluster",)):
            t = totals.setdefault(a.group.get("upstream_cluster") or "", [0, 0, 0])
            t[0] += a.count
            t[1] += a.count_5xx
            t[2] += a.count_retried
        return totals

    @staticmethod
    def _merge(into: dict[str, list[int]], more: dict[str, list[int]]) -> dict[str, list[int]]:
        out = {k: list(v) for k, v in into.items()}
        for cluster, values in more.items():
            t = out.setdefault(cluster, [0, 0, 0])
            for i, v in enumerate(values):
                t[i] += v
        return out

    async def totals(self, store: StoreReader, now: float | None = None) -> dict[str, list[int]]:
        now = time.time() if now is None else now
        settled = now - self.SETTLE_S
        if self.base_end is None or now - self.full_at > self.FULL_EVERY_S:
            self.base, self.base_end, self.full_at = await self._sum(store, 0.0, settled), settled, now
        elif settled > self.base_end:
            self.base = self._merge(self.base, await self._sum(store, self.base_end, settled))
            self.base_end = settled
        return self._merge(self.base, await self._sum(store, self.base_end, now + 1))


async def gather(store: StoreReader, upload_counters: dict[str, int],
                 clusters: ClusterTotals) -> list[Metric]:
    """Read the figures from the store (per-cluster totals through ClusterTotals)."""
    ingested = GaugeMetricFamily("meshscope_stored_records", "Records in the store, by kind", labels=["kind"])
    for kind in KINDS:
        ingested.add_metric([kind], await store.count(kind))
    totals = await clusters.totals(store)
    cluster = ["upstream_cluster"]
    requests = GaugeMetricFamily(
        "meshscope_stored_requests", "Access records in the store per upstream cluster", labels=cluster
    )
    errors = GaugeMetricFamily(
        "meshscope_stored_responses_5xx", "5xx responses in the store per upstream cluster", labels=cluster
    )
    retried = GaugeMetricFamily(
        "meshscope_stored_requests_retried", "Retried requests in the store per upstream cluster",
        labels=cluster,
    )
    for cluster, (n, n5, nr) in sorted(totals.items()):
        requests.add_metric([cluster], n)
        errors.add_metric([cluster], n5)
        retried.add_metric([cluster], nr)
    alerts = await store.alerts(limit=MAX_ALERTS)
    events = GaugeMetricFamily(
        "meshscope_stored_alert_events", "Alert firings and resolutions in the store (the latest "
        f"{MAX_ALERTS})", labels=["rule", "state"]
    )
    for (rule, state), n in sorted(Counter((a.rule, a.state) for a in alerts).items()):
        events.add_metric([rule, state], n)
    latest: dict[tuple[str, str], str] = {}
    for a in sorted(alerts, key=lambda a: a.last_seen):
        latest[(a.rule, a.group_key)] = a.state
    firing = GaugeMetricFamily(
        "meshscope_alerts_firing", "Groups whose latest alert state is firing", labels=["rule"]
    )
    for rule, n in sorted(Counter(r for (r, _), s in latest.items() if s == "firing").items()):
        firing.add_metric([rule], n)
    proxies = GaugeMetricFamily(
        "meshscope_proxies", "Proxies that have sent records", value=len(await store.node_ids())
    )
    uploads = CounterMetricFamily("meshscope_uploads", "Capture uploads by outcome", labels=["result"])
    for result, n in sorted(upload_counters.items()):
        uploads.add_metric([result], n)
    return [ingested, requests, errors, retried, events, firing, proxies, uploads]


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request, store: Annotated[StoreReader, Depends(reader_of)]) -> Response:
    """Prometheus text exposition: the process's counters, other components' registries handed over
    in ``app.state.metric_registries``, and the store-derived gauges."""
    registry = CollectorRegistry(auto_describe=False)
    state = request.app.state
    if not hasattr(state, "cluster_totals"):
        state.cluster_totals = ClusterTotals()
    own = [m for r in (REGISTRY, *getattr(state, "metric_registries", ())) for m in r.collect()]
    registry.register(_Snapshot(own + await gather(store, state.uploads.counters, state.cluster_totals)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
