"""Prometheus counters of the traffic the pipeline carries: requests, 5xx and retried requests per
upstream cluster, counted in process as access records pass the indexer.

A cluster's three series are created at 0 the first time the cluster is seen, so a 5xx burst on a
cluster that had only served 2xx until then is an increase from 0 that ``rate()`` and ``increase()``
see (a series born with its first increment is invisible to them); clusters known before their traffic
(``meshscope up``'s lab routes) are created at start. Records are counted as delivered:
a batch the bus delivers again after a crash is counted again (at-least-once), as Envoy's own counters
would count a retried request.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from meshscope.model import AccessRecord, Record

LABEL = "upstream_cluster"
REQUESTS = Counter("meshscope_requests", "Access records (requests) per upstream cluster", [LABEL])
RESPONSES_5XX = Counter("meshscope_responses_5xx", "5xx responses per upstream cluster", [LABEL])
RETRIED = Counter("meshscope_requests_retried", "Retried requests (attempt count above 1, or URX) per "
                  "upstream cluster", [LABEL])


class TrafficCounters:
    """Counts access records into the per-cluster counters; one per indexer."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def expect(self, clusters: Iterable[str]) -> None:
        """Create the series of clusters known before their traffic (a proxy's configured clusters),
        so even a cluster's very first requests, a burst of 5xx among them, are an increase from 0."""
        for cluster in clusters:
            if cluster not in self._seen:
                self._seen.add(cluster)
                for counter in (REQUESTS, RESPONSES_5XX, RETRIED):
                    counter.labels(cluster)

    def observe(self, records: Iterable[Record]) -> None:
        counts: dict[str, list[int]] = {}
        for r in records:
            if not isinstance(r, AccessRecord):
                continue
            c = counts.get(r.upstream_cluster or "")
            if c is None:
                c = counts[r.upstream_cluster or ""] = [0, 0, 0]
            c[0] += 1
            if r.response_code is not None and r.response_code // 100 == 5:
                c[1] += 1
            if r.retried:
                c[2] += 1
        self.expect(counts)  # the series exist at 0 from here on
        for cluster, (n, n5, nr) in counts.items():
            REQUESTS.labels(cluster).inc(n)
            if n5:
                RESPONSES_5XX.labels(cluster).inc(n5)
            if nr:
                RETRIED.labels(cluster).inc(nr)
