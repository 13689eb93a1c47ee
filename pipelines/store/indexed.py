"""What both stores index for each record kind (derived once, here), plus the opaque page cursor."""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import orjson
from meshscope.pipelines.store.base import VALUE_FIELDS, AccessQuery, AccessSearch

from meshscope.model import (
    RECORD_TYPES,
    Flow,
    Record,
    Span,
    normalize_request_id,
)

# AccessRecord fields a caller may group aggregates by (both stores keep them as plain columns / keywords)
GROUP_FIELDS = (
    "upstream_cluster", "route_name", "authority", "node_id", "node_cluster", "method", "protocol",
)


def record_time(record: Record) -> float | None:
    """The record's own time (the model says which field it is for each kind)."""
    if RECORD_TYPES.get(record.kind) is not type(record):
        raise ValueError(f"not a stored record kind: {type(record).__name__}")
    return record.time()


def flow_request_ids(flow: Flow) -> list[str]:
    """Every normalised request id a flow carries (its own and each hop's), without repeats."""
    ids = [flow.request_id, *(rid for hop in flow.hops for rid in hop.request_ids)]
    return list(dict.fromkeys(n for n in map(normalize_request_id, ids) if n))


def service_of(endpoint: dict | None) -> str | None:
    """Zipkin matches service names case-insensitively: keep them lower-cased for queries."""
    name = (endpoint or {}).get("serviceName")
    return name.lower() if name else None


def check_kinds(records: list[Record] | tuple[Record, ...]) -> None:
    """Refuse (ValueError) a batch holding anything but the five record kinds, before writing any of it."""
    for r in records:
        if RECORD_TYPES.get(getattr(r, "kind", None)) is not type(r):
            raise ValueError(f"refused: not a meshscope record: {type(r).__name__}")
        if not r.id:
            raise ValueError(f"refused: {r.kind} record without an id")


def since(now: float | None, retention_days: int) -> float:
    """The retention cutoff in epoch seconds: records older than this are deleted."""
    return (time.time() if now is None else now) - retention_days * 86400.0


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list:
    """Decode a cursor from a previous Page; a damaged one is a ValueError (the API answers 400)."""
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid cursor: {cursor!r}") from exc
    if not isinstance(key, list):
        raise ValueError(f"invalid cursor: {cursor!r}")
    return key


def check_group_by(group_by: tuple[str, ...] | list[str]) -> list[str]:
    bad = [g for g in group_by if g not in GROUP_FIELDS]
    if bad:
        raise ValueError(f"cannot group by {', '.join(bad)}; choose from {', '.join(GROUP_FIELDS)}")
    return list(group_by)


def span_query_terms(span: Span) -> list[str]:
    """Terms for Zipkin's annotationQuery (as Zipkin's own Elasticsearch storage keeps in ``_q``):
    ``key`` and ``key=value`` for every tag, and every annotation value."""
    terms = [t for k, v in span.tags.items() for t in (k, f"{k}={v}")]
    terms += [a["value"] for a in span.annotations if isinstance(a.get("value"), str)]
    return list(dict.fromkeys(terms))


def tag_terms(tags: dict[str, str | None]) -> list[str]:
    """The query side of span_query_terms: every term must be present on one span."""
    return [k if v is None else f"{k}={v}" for k, v in tags.items()]


def status_class_name(code: int | None) -> str:
    """"2xx" … "5xx" for a response code, "none" when there is none (a TCP record, a reset)."""
    return f"{code // 100}xx" if code and 100 <= code <= 599 else "none"


def check_value_field(field: str) -> str:
    if field not in VALUE_FIELDS:
        raise ValueError(f"no values for {field!r}; choose from {', '.join(VALUE_FIELDS)}")
    return field


def percentile_of_counts(counts: dict[float, int], q: float) -> float | None:
    """The q-quantile (0..1, nearest rank) of values given as {value: how many}."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(round(q * total, 9)))  # nearest rank; round: 0.99 * 100 is 99.00000000000001
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return max(counts)


def trace_id_key(trace_id: str) -> str:
    """B3 trace ids are stored lower-cased; a 64-bit id is matched as written (Envoy logs it so)."""
    return trace_id.strip().lower()


def as_search(query: AccessQuery) -> AccessSearch:
    """The older listing query (AccessQuery) as the search that answers it: one owner for the filters."""
    return AccessSearch(
        start=query.start, end=query.end, status_class=query.status_class,
        upstream_cluster=query.upstream_cluster, authority=query.authority, node_id=query.node_id,
        limit=query.limit, cursor=query.cursor,
    )
