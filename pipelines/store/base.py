"""The store interface: a writer (idempotent by record id) and a reader for the API (Zipkin's
SpanConsumer / SpanStore split). Request ids are matched normalised (meshscope.model.ids)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshscope.model import AccessRecord, Alert, Exchange, Flow, Record, Span


class StoreUnavailable(Exception):
    """The store did not acknowledge a write or answer a read; nothing was lost, retry later."""


@dataclass(slots=True, kw_only=True)
class AccessQuery:
    start: float | None = None  # epoch seconds, inclusive
    end: float | None = None  # exclusive
    status_class: int | None = None  # 2, 4, 5 … (response_code // 100)
    upstream_cluster: str | None = None
    authority: str | None = None
    node_id: str | None = None
    limit: int = 100
    cursor: str | None = None  # opaque, from the previous Page


@dataclass(slots=True, kw_only=True)
class AccessSearch:
    """The search page's filters over access records (every given one must hold; None: no filter)."""

    start: float | None = None  # epoch seconds, inclusive
    end: float | None = None  # exclusive
    node_id: str | None = None  # the proxy that logged it
    node_cluster: str | None = None  # its service / workload (Envoy's --service-cluster)
    upstream_cluster: str | None = None
    route_name: str | None = None
    path_prefix: str | None = None
    authority: str | None = None
    method: str | None = None
    status_class: int | None = None  # 2, 4, 5 …
    status: int | None = None  # an exact response code
    response_flag: str | None = None  # one of Envoy's flags (UF, URX, NR …)
    retried: bool = False  # only requests retried (attempt count above 1, or URX)
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None  # exclusive (the stores' own use: a band of durations)
    request_id: str | None = None  # matched normalised: any sampling digit
    trace_id: str | None = None
    limit: int = 100
    cursor: str | None = None  # opaque, from the previous Page


# fields whose values search_values() lists (autocomplete), and that AccessSearch filters on
VALUE_FIELDS = (
    "node_id", "node_cluster", "upstream_cluster", "route_name", "authority", "method", "response_code",
    "response_flags",
)


@dataclass(slots=True, kw_only=True)
class HistogramBucket:
    """Matching records in one time bucket, by status class ("2xx", "5xx", "none" for no code)."""

    start: float
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class TrafficEdge:
    """Requests one workload's proxy sent to one upstream cluster in a time range."""

    source: str  # node_cluster of the proxy that logged them
    target: str  # upstream_cluster
    count: int = 0
    count_5xx: int = 0
    count_retried: int = 0
    p99_ms: float | None = None


@dataclass(slots=True)
class Page:
    items: list
    next_cursor: str | None = None
    total: int | None = None


@dataclass(slots=True, kw_only=True)
class WindowAggregate:
    """Counts for one group in one time window (for alerts, dashboards and /metrics)."""

    window_start: float
    group: dict[str, str]
    count: int = 0
    count_5xx: int = 0
    count_retried: int = 0
    extra: dict = field(default_factory=dict)


class StoreWriter(abc.ABC):
    @abc.abstractmethod
    async def write(self, records: Sequence[Record]) -> None:
        """Store records of any kind; a record whose id is already stored is not duplicated.
        Raise StoreUnavailable (nothing partially acknowledged) or ValueError for refused records."""


class StoreReader(abc.ABC):
    @abc.abstractmethod
    async def access_by_request_id(self, request_id: str) -> list[AccessRecord]: ...

    @abc.abstractmethod
    async def spans_by_trace_id(self, trace_id: str) -> list[Span]: ...

    @abc.abstractmethod
    async def spans_by_request_id(self, request_id: str) -> list[Span]: ...

    @abc.abstractmethod
    async def exchanges_by_request_id(self, request_id: str) -> list[Exchange]: ...

    @abc.abstractmethod
    async def flows_by_request_id(self, request_id: str) -> list[Flow]: ...

    @abc.abstractmethod
    async def list_access(self, query: AccessQuery) -> Page: ...

    @abc.abstractmethod
    async def search_access(self, query: AccessSearch) -> Page:
        """Records matching every filter of query, newest first, paged by cursor."""

    @abc.abstractmethod
    async def access_histogram(self, query: AccessSearch, bucket_s: float) -> list[HistogramBucket]:
        """Records matching query per bucket (aligned on multiples of bucket_s since the epoch) and
        status class, buckets in time order, empty buckets left out."""

    @abc.abstractmethod
    async def search_values(
        self, field: str, prefix: str = "", start: float | None = None, end: float | None = None,
        limit: int = 20,
    ) -> list[str]:
        """Values of one VALUE_FIELDS field starting with prefix (as stored: case-sensitive), the most
        frequent first, for autocomplete. Without a time range only recent records are looked at."""

    @abc.abstractmethod
    async def traffic_edges(self, start: float, end: float) -> list[TrafficEdge]:
        """Per (node_cluster, upstream_cluster): count, 5xx, retried and p99 duration (for the map)."""

    @abc.abstractmethod
    async def aggregates(
        self, start: float, end: float, window_s: float, group_by: Sequence[str]
    ) -> list[WindowAggregate]:
        """Per-window count, 5xx count and retried count grouped by fields of AccessRecord
        (e.g. ("upstream_cluster",), ("route_name",), ("authority",))."""

    @abc.abstractmethod
    async def alerts(
        self, rule: str | None = None, group_key: str | None = None, state: str | None = None,
        start: float | None = None, end: float | None = None, limit: int = 100,
    ) -> list[Alert]: ...

    # Zipkin v2 read API
    @abc.abstractmethod
    async def service_names(self) -> list[str]: ...

    @abc.abstractmethod
    async def span_names(self, service: str) -> list[str]: ...

    @abc.abstractmethod
    async def remote_service_names(self, service: str) -> list[str]: ...

    @abc.abstractmethod
    async def find_traces(
        self, service: str | None, span_name: str | None, end_ts_ms: int, lookback_ms: int,
        min_duration_us: int | None, max_duration_us: int | None, tags: dict[str, str | None],
        limit: int,
    ) -> list[list[Span]]: ...

    @abc.abstractmethod
    async def node_ids(self) -> list[dict]:
        """Every proxy that has sent records: node id, cluster, record count, first/last seen."""

    @abc.abstractmethod
    async def count(self, kind: str) -> int:
        """How many records of one kind ("access", "span", "exchange", "flow", "alert") are stored."""


class Store(StoreWriter, StoreReader, abc.ABC):
    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, create schema / index templates."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close connections."""

    @abc.abstractmethod
    async def apply_retention(self, now: float | None = None) -> int:
        """Delete records older than settings.retention_days (by each record's own time); return
        how many records (SQLite) or indices (Elasticsearch) went. The pipeline calls it periodically."""


    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
