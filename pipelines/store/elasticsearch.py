"""ElasticsearchStore: the scale-out store, plain Elasticsearch through elasticsearch-py's async client.

One daily index per record kind (``<prefix>access-2026.11.24``, …), shaped by the index templates
in ``pipelines/store/templates/`` (explicit mappings, ``dynamic: false``: the whole record stays
in ``_source``). Each record is written with ``op_type=create`` under its deterministic id, so a
replay answers 409 per record and stores nothing twice; bulk writes retry with backoff and raise
StoreUnavailable once the server stays unreachable. Only the common Elasticsearch/OpenSearch
subset is used (bulk, search with search_after, composite/terms/min/max aggregations, count,
index templates, delete of named indices).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import ApiError, ConnectionError, ConnectionTimeout, TransportError
from elasticsearch import AsyncElasticsearch, NotFoundError
from meshscope.pipelines.store.base import (
    AccessQuery,
    AccessSearch,
    HistogramBucket,
    Page,
    Store,
    StoreUnavailable,
    TrafficEdge,
    WindowAggregate,
)
from meshscope.pipelines.store.indexed import (
    as_search,
    check_group_by,
    check_kinds,
    check_value_field,
    decode_cursor,
    encode_cursor,
    flow_request_ids,
    record_time,
    service_of,
    since,
    span_query_terms,
    status_class_name,
    tag_terms,
    trace_id_key,
)

from meshscope.model import (
    RECORD_TYPES,
    AccessRecord,
    Alert,
    Exchange,
    Flow,
    Record,
    Span,
    normalize_request_id,
)
from meshscope.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("access", "span", "exchange", "flow", "alert")
MAX_HITS = 10_000  # Elasticsearch's default index.max_result_window
BULK_DOCS = 5_000  # per bulk request: a few MB, well under http.max_content_length (100 MB)
_RETRY_STATUS = {429, 502, 503, 504}


def template_body(kind: str) -> dict:
    """The index template body for one record kind (shared with dashboards/ through the JSON file)."""
    body = orjson.loads((TEMPLATES / f"{kind}.json").read_bytes())
    body.pop("_comment", None)
    return body


def index_day(epoch_s: float | None) -> str:
    when = dt.datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, dt.UTC)
    return when.strftime("%Y.%m.%d")


def document(record: Record) -> dict[str, Any]:
    """The _source of a record: all its fields plus what the queries and dashboards index."""
    doc = record.to_dict()
    when = record_time(record)
    doc["@timestamp"] = None if when is None else int(when * 1000)
    if isinstance(record, AccessRecord):
        doc["request_id_norm"] = record.request_id_norm
        doc["retried"] = record.retried
        doc["trace_id"] = record.trace_id and record.trace_id.lower()
    elif isinstance(record, Span):
        doc["trace_id"] = record.trace_id.lower()
        doc["request_id_norm"] = record.request_id_norm
        doc["service"] = service_of(record.local_endpoint)
        doc["remote_service"] = service_of(record.remote_endpoint)
        doc["name_lc"] = record.name and record.name.lower()
        doc["tag_query"] = span_query_terms(record)
    elif isinstance(record, Exchange):
        doc["request_id_norm"] = record.request_id_norm
    elif isinstance(record, Flow):
        doc["request_ids_norm"] = flow_request_ids(record)
    return doc


class ElasticsearchStore(Store):
    """The scale-out Store on settings.elasticsearch_url, indices named from
    settings.elasticsearch_index_prefix, daily indices older than settings.retention_days
    deleted by apply_retention()."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry_for_s: float = 30.0,
        refresh: bool | str = False,
        client: AsyncElasticsearch | None = None,
    ) -> None:
        self.settings = settings
        self.prefix = settings.elasticsearch_index_prefix
        self.retry_for_s = retry_for_s  # how long a write or read keeps retrying before StoreUnavailable
        self.refresh = refresh  # "wait_for" makes a write visible to searches before it returns
        self._client = client
        self._own_client = client is None

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchStore:
        return cls(settings, retry_for_s=settings.elasticsearch_retry_s)

    @property
    def es(self) -> AsyncElasticsearch:
        if self._client is None:
            raise StoreUnavailable("ElasticsearchStore is not started")
        return self._client

    def pattern(self, kind: str) -> str:
        return f"{self.prefix}{kind}-*"

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is None:
            # retries are ours (with backoff and a deadline), not the transport's
            self._client = AsyncElasticsearch(
                self.settings.elasticsearch_url, max_retries=0, request_timeout=30
            )
        for kind in KINDS:
            body = template_body(kind)
            await self._call(
                self.es.indices.put_index_template,
                name=f"{self.prefix}{kind}",
                index_patterns=[self.pattern(kind)],
                template=body["template"],
                priority=100,
            )

    async def stop(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.close()
            self._client = None

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        """One API call, retried with exponential backoff while the server is unreachable or busy."""
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.1
        while True:
            try:
                return await method(**kwargs)
            except (ConnectionError, ConnectionTimeout) as exc:
                failure: Exception = exc
            except NotFoundError:
                raise
            except ApiError as exc:
                if exc.meta.status not in _RETRY_STATUS:
                    name = getattr(method, "__name__", "request")
                    raise ValueError(f"elasticsearch refused {name}: {exc}") from exc
                failure = exc
            except TransportError as exc:
                failure = exc
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"elasticsearch {self.settings.elasticsearch_url}: {failure}"
                ) from failure
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    # -- writer ------------------------------------------------------------------------------
    async def write(self, records: Sequence[Record]) -> None:
        """Bulk-create every record; items the server was too busy for are sent again, items
        already stored (409) count as stored, items it refuses raise ValueError (the rest stay)."""
        check_kinds(records)
        try:
            pending = {r.id: (self._index_of(r), document(r)) for r in records}
        except (AttributeError, TypeError, ValueError) as exc:  # a field of the wrong type
            raise ValueError(f"a record cannot be indexed: {exc!r}") from exc
        refused: list[str] = []
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.1
        while pending:
            busy: dict[str, tuple[str, dict]] = {}
            items = list(pending.items())
            for start in range(0, len(items), BULK_DOCS):
                ops: list[dict] = []
                for rid, (index, doc) in items[start : start + BULK_DOCS]:
                    ops += [{"create": {"_index": index, "_id": rid}}, doc]
                resp = await self._call(self.es.bulk, operations=ops, refresh=self.refresh)
                for item in resp["items"]:
                    result = item["create"]
                    status = result.get("status", 500)
                    if status < 300 or status == 409:  # 409: stored before (a replay)
                        continue
                    if status in _RETRY_STATUS or status >= 500:
                        busy[result["_id"]] = pending[result["_id"]]
                    else:
                        refused.append(f"{result['_id']}: {result.get('error', {}).get('reason', status)}")
            pending = busy
            if pending:
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(f"elasticsearch kept refusing {len(pending)} records as busy")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if refused:
            raise ValueError(f"refused by elasticsearch ({len(refused)}): {'; '.join(refused[:5])}")

    def _index_of(self, record: Record) -> str:
        return f"{self.prefix}{record.kind}-{index_day(record_time(record))}"

    async def apply_retention(self, now: float | None = None) -> int:
        """Delete whole daily indices whose day ended before the cutoff; return how many."""
        cutoff = since(now, self.settings.retention_days)
        names = await self._call(self.es.indices.get_alias, index=f"{self.prefix}*", allow_no_indices=True)
        old = []
        for name in names:
            kind, _, day = name[len(self.prefix) :].rpartition("-")
            if kind not in KINDS:
                continue
            try:
                start = dt.datetime.strptime(day, "%Y.%m.%d").replace(tzinfo=dt.UTC).timestamp()
            except ValueError:
                continue
            if start + 86400 <= cutoff:
                old.append(name)
        # named, never by wildcard: Elasticsearch refuses wildcard deletes by default
        for i in range(0, len(old), 50):
            await self._call(self.es.indices.delete, index=",".join(old[i : i + 50]))
        return len(old)

    # -- reader ------------------------------------------------------------------------------
    async def _search(self, kind: str, **body: Any) -> dict:
        try:
            return await self._call(
                self.es.search,
                index=self.pattern(kind),
                ignore_unavailable=True,
                allow_no_indices=True,
                **body,
            )
        except NotFoundError:
            return {"hits": {"hits": []}, "aggregations": {}}

    async def _docs(self, kind: str, query: dict, sort: list, size: int = MAX_HITS) -> list:
        resp = await self._search(kind, query=query, sort=sort, size=size)
        cls = RECORD_TYPES[kind]
        return [cls.from_dict(h["_source"]) for h in resp["hits"]["hits"]]

    async def count(self, kind: str) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        try:
            resp = await self._call(
                self.es.count, index=self.pattern(kind), ignore_unavailable=True, allow_no_indices=True
            )
        except NotFoundError:
            return 0
        return resp["count"]

    async def _by_request_id(self, kind: str, field: str, request_id: str, sort_field: str) -> list:
        """Records of one kind whose normalised request id (in field) equals the one asked for."""
        key = normalize_request_id(request_id)
        if not key:
            return []
        return await self._docs(kind, {"term": {field: key}}, [{sort_field: "asc"}, {"id": "asc"}])

    async def access_by_request_id(self, request_id: str) -> list[AccessRecord]:
        return await self._by_request_id("access", "request_id_norm", request_id, "start_time")

    async def spans_by_trace_id(self, trace_id: str) -> list[Span]:
        return await self._docs(
            "span", {"term": {"trace_id": trace_id.lower()}}, [{"timestamp": "asc"}, {"id": "asc"}]
        )

    async def spans_by_request_id(self, request_id: str) -> list[Span]:
        return await self._by_request_id("span", "request_id_norm", request_id, "timestamp")

    async def exchanges_by_request_id(self, request_id: str) -> list[Exchange]:
        return await self._by_request_id("exchange", "request_id_norm", request_id, "@timestamp")

    async def flows_by_request_id(self, request_id: str) -> list[Flow]:
        return await self._by_request_id("flow", "request_ids_norm", request_id, "start")

    async def list_access(self, query: AccessQuery) -> Page:
        """Newest first; the cursor is the sort key of the last item (search_after)."""
        return await self.search_access(as_search(query))

    async def search_access(self, query: AccessSearch) -> Page:
        """Newest first, paged as list_access."""
        filters = _search_filters(query)
        if filters is None:
            return Page([])
        return await self._access_page(filters, query.limit, query.cursor)

    async def _access_page(self, filters: list[dict], limit: int, cursor: str | None) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        extra = {"search_after": decode_cursor(cursor)[:2]} if cursor else {}
        resp = await self._search(
            "access",
            query={"bool": {"filter": filters}},
            sort=[{"start_time": "desc"}, {"id": "desc"}],
            size=min(limit + 1, MAX_HITS),
            **extra,
        )
        hits = resp["hits"]["hits"]
        more = len(hits) > limit
        hits = hits[:limit]
        next_cursor = encode_cursor(*hits[-1]["sort"]) if more else None
        return Page([AccessRecord.from_dict(h["_source"]) for h in hits], next_cursor)

    async def _composite(self, query: dict, sources: list[dict], sub: dict | None = None) -> list[dict]:
        """Every bucket of a composite aggregation over access records, paged to the end."""
        composite: dict[str, Any] = {"size": 1000, "sources": sources}
        agg: dict[str, Any] = {"composite": composite}
        if sub:
            agg["aggs"] = sub
        out: list[dict] = []
        while True:
            resp = await self._search("access", query=query, size=0, aggs={"c": agg})
            found = resp.get("aggregations", {}).get("c", {})
            out += found.get("buckets", [])
            if not found.get("buckets") or "after_key" not in found:
                return out
            composite["after"] = found["after_key"]

    async def access_histogram(self, query: AccessSearch, bucket_s: float) -> list[HistogramBucket]:
        if bucket_s <= 0:
            raise ValueError("bucket_s must be positive")
        filters = _search_filters(query)
        if filters is None:
            return []
        interval_ms = max(1, round(bucket_s * 1000))
        sources = [
            {"w": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{interval_ms}ms"}}},
            {"c": {"histogram": {"field": "response_code", "interval": 100, "missing_bucket": True}}},
        ]
        buckets: dict[float, HistogramBucket] = {}
        for b in await self._composite({"bool": {"filter": filters}}, sources):
            start = b["key"]["w"] / 1000
            bucket = buckets.setdefault(start, HistogramBucket(start=start))
            code = b["key"]["c"]
            name = status_class_name(int(code) if code is not None else None)
            bucket.counts[name] = bucket.counts.get(name, 0) + b["doc_count"]
        return [buckets[k] for k in sorted(buckets)]

    async def search_values(
        self, field: str, prefix: str = "", start: float | None = None, end: float | None = None,
        limit: int = 20,
    ) -> list[str]:
        check_value_field(field)
        filters: list[dict] = []
        if start is not None or end is not None:
            filters.append({"range": {"start_time": _bounds(start, end)}})
        if prefix and field != "response_code":
            filters.append({"prefix": {field: prefix}})
        resp = await self._search(
            "access",
            query={"bool": {"filter": filters}},
            size=0,
            aggs={"t": {"terms": {"field": field, "size": 1000}}},
        )
        counted: dict[str, int] = {}
        for b in resp.get("aggregations", {}).get("t", {}).get("buckets", []):
            value = str(b["key"])
            if value and value.startswith(prefix):  # an array field's other values come along too
                counted[value] = counted.get(value, 0) + b["doc_count"]
        return [v for v, _ in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))][:limit]

    async def traffic_edges(self, start: float, end: float) -> list[TrafficEdge]:
        sources = [
            {"s": {"terms": {"field": "node_cluster", "missing_bucket": True}}},
            {"t": {"terms": {"field": "upstream_cluster", "missing_bucket": True}}},
        ]
        sub = {
            "e5xx": {"filter": {"range": {"response_code": {"gte": 500, "lte": 599}}}},
            "retried": {"filter": {"term": {"retried": True}}},
            "p": {"percentiles": {"field": "duration_ms", "percents": [99]}},
        }
        query = {"range": {"start_time": {"gte": start, "lt": end}}}
        edges = []
        for b in await self._composite(query, sources, sub):
            values = b["p"].get("values") or {}
            p99 = next(iter(values.values()), None) if isinstance(values, dict) else None
            edges.append(
                TrafficEdge(
                    source=b["key"]["s"] or "", target=b["key"]["t"] or "", count=b["doc_count"],
                    count_5xx=b["e5xx"]["doc_count"], count_retried=b["retried"]["doc_count"],
                    p99_ms=p99,
                )
            )
        return sorted(edges, key=lambda e: (e.source, e.target))

    async def aggregates(
        self, start: float, end: float, window_s: float, group_by: Sequence[str]
    ) -> list[WindowAggregate]:
        """A composite aggregation (date_histogram + terms), paged to the end; windows aligned
        on multiples of window_s since the epoch, as in SqliteStore."""
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        groups = check_group_by(group_by)
        interval_ms = max(1, round(window_s * 1000))
        sources = [{"w": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{interval_ms}ms"}}}]
        sources += [{g: {"terms": {"field": g, "missing_bucket": True}}} for g in groups]
        composite: dict[str, Any] = {"size": 1000, "sources": sources}
        sub = {
            "e5xx": {"filter": {"range": {"response_code": {"gte": 500, "lte": 599}}}},
            "retried": {"filter": {"term": {"retried": True}}},
        }
        query = {"range": {"start_time": {"gte": start, "lt": end}}}
        out: list[WindowAggregate] = []
        while True:
            resp = await self._search(
                "access", query=query, size=0, aggs={"c": {"composite": composite, "aggs": sub}}
            )
            agg = resp.get("aggregations", {}).get("c", {})
            for b in agg.get("buckets", []):
                out.append(
                    WindowAggregate(
                        window_start=b["key"]["w"] / 1000,
                        group={g: b["key"][g] or "" for g in groups},
                        count=b["doc_count"],
                        count_5xx=b["e5xx"]["doc_count"],
                        count_retried=b["retried"]["doc_count"],
                    )
                )
            if not agg.get("buckets") or "after_key" not in agg:
                break
            composite["after"] = agg["after_key"]
        return sorted(out, key=lambda a: (a.window_start, *a.group.values()))

    async def alerts(
        self,
        rule: str | None = None,
        group_key: str | None = None,
        state: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        filters: list[dict] = [
            {"term": {field: value}}
            for field, value in (("rule", rule), ("group_key", group_key), ("state", state))
            if value is not None
        ]
        if start is not None:
            filters.append({"range": {"last_seen": {"gte": start}}})
        if end is not None:
            filters.append({"range": {"first_seen": {"lt": end}}})
        return await self._docs(
            "alert",
            {"bool": {"filter": filters}},
            [{"last_seen": "desc"}, {"id": "desc"}],
            min(limit, MAX_HITS),
        )

    # -- Zipkin v2 read API --------------------------------------------------------------------
    async def _terms(self, field: str, query: dict | None = None) -> list[str]:
        resp = await self._search(
            "span",
            query=query or {"match_all": {}},
            size=0,
            aggs={"t": {"terms": {"field": field, "size": MAX_HITS, "order": {"_key": "asc"}}}},
        )
        return [b["key"] for b in resp.get("aggregations", {}).get("t", {}).get("buckets", [])]

    async def service_names(self) -> list[str]:
        return await self._terms("service")

    async def span_names(self, service: str) -> list[str]:
        return await self._terms("name_lc", {"term": {"service": service.lower()}})

    async def remote_service_names(self, service: str) -> list[str]:
        return await self._terms("remote_service", {"term": {"service": service.lower()}})

    async def find_traces(
        self,
        service: str | None,
        span_name: str | None,
        end_ts_ms: int,
        lookback_ms: int,
        min_duration_us: int | None,
        max_duration_us: int | None,
        tags: dict[str, str | None],
        limit: int,
    ) -> list[list[Span]]:
        """Traces with at least one span matching every condition, newest first."""
        filters: list[dict] = [
            {"range": {"timestamp": {"gte": (end_ts_ms - lookback_ms) * 1000, "lte": end_ts_ms * 1000}}}
        ]
        if service:
            filters.append({"term": {"service": service.lower()}})
        if span_name:
            filters.append({"term": {"name_lc": span_name.lower()}})
        if min_duration_us is not None or max_duration_us is not None:
            bounds = {"gte": min_duration_us} if min_duration_us is not None else {}
            if max_duration_us is not None:
                bounds["lte"] = max_duration_us
            filters.append({"range": {"duration": bounds}})
        filters += [{"term": {"tag_query": term}} for term in tag_terms(tags)]
        resp = await self._search(
            "span",
            query={"bool": {"filter": filters}},
            size=0,
            aggs={
                "t": {
                    "terms": {"field": "trace_id", "size": max(1, limit), "order": {"last": "desc"}},
                    "aggs": {"last": {"max": {"field": "timestamp"}}},
                }
            },
        )
        trace_ids = [b["key"] for b in resp.get("aggregations", {}).get("t", {}).get("buckets", [])]
        if not trace_ids:
            return []
        spans = await self._docs(
            "span", {"terms": {"trace_id": trace_ids}}, [{"timestamp": "asc"}, {"id": "asc"}]
        )
        by_trace: dict[str, list[Span]] = {t: [] for t in trace_ids}
        for s in spans:
            by_trace[s.trace_id.lower()].append(s)
        return [t for t in by_trace.values() if t]

    async def node_ids(self) -> list[dict]:
        resp = await self._search(
            "access",
            size=0,
            query={"match_all": {}},
            aggs={
                "n": {
                    "terms": {"field": "node_id", "size": MAX_HITS, "order": {"_key": "asc"}},
                    "aggs": {
                        "cluster": {"terms": {"field": "node_cluster", "size": 1}},
                        "first": {"min": {"field": "start_time"}},
                        "last": {"max": {"field": "start_time"}},
                    },
                }
            },
        )
        nodes = []
        for b in resp.get("aggregations", {}).get("n", {}).get("buckets", []):
            clusters = b["cluster"]["buckets"]
            nodes.append(
                {
                    "node_id": b["key"],
                    "node_cluster": clusters[0]["key"] if clusters else "",
                    "records": b["doc_count"],
                    "first_seen": b["first"]["value"],
                    "last_seen": b["last"]["value"],
                }
            )
        return nodes


def _bounds(start: float | None, end: float | None) -> dict:
    bounds: dict[str, float] = {}
    if start is not None:
        bounds["gte"] = start
    if end is not None:
        bounds["lt"] = end
    return bounds


def _search_filters(query: AccessSearch) -> list[dict] | None:
    """Filter clauses for an AccessSearch; None when it can match nothing (an empty request id)."""
    filters: list[dict] = []
    if query.start is not None or query.end is not None:
        filters.append({"range": {"start_time": _bounds(query.start, query.end)}})
    for field, value in (("node_id", query.node_id), ("node_cluster", query.node_cluster),
                         ("upstream_cluster", query.upstream_cluster), ("route_name", query.route_name),
                         ("authority", query.authority), ("method", query.method),
                         ("response_code", query.status), ("response_flags", query.response_flag)):
        if value is not None:
            filters.append({"term": {field: value}})
    if query.status_class is not None:
        low = query.status_class * 100
        filters.append({"range": {"response_code": {"gte": low, "lte": low + 99}}})
    if query.path_prefix:
        filters.append({"prefix": {"path": query.path_prefix}})
    if query.retried:
        filters.append({"term": {"retried": True}})
    if query.min_duration_ms is not None or query.max_duration_ms is not None:
        bounds = {"gte": query.min_duration_ms, "lt": query.max_duration_ms}
        filters.append({"range": {"duration_ms": {k: v for k, v in bounds.items() if v is not None}}})
    if query.request_id is not None:
        key = normalize_request_id(query.request_id)
        if not key:
            return None
        filters.append({"term": {"request_id_norm": key}})
    if query.trace_id is not None:
        filters.append({"term": {"trace_id": trace_id_key(query.trace_id)}})
    return filters
