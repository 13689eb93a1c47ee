"""Per-10-second counts of access records for SqliteStore, kept at write time so the search page's
histogram of a million records is a read of a few thousand rows instead of a scan of a million, and so
the newest matches of a search are looked for only in the slots that hold them.

Two tables of counts. ``access_rollup``: one row per (10-second slot, proxy, its cluster, upstream
cluster, method, response code, retried), small, for the default view and its common filters.
``access_rollup_detail``: the same plus route, authority, flags and a duration bucket — every filter of the
search page but the path prefix and the ids — read only when a search filters on one of those four.
A histogram whose filters are all among a table's dimensions, with buckets a multiple of 10 s, is answered
from it; its partial first and last slots, the path and id searches, and a minimum duration that falls
inside a duration bucket (that bucket's share only) come from the access table and its indexes."""

from __future__ import annotations

import bisect
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from meshscope.pipelines.store.base import AccessSearch

SLOT_S = 10
# duration buckets (ms): bucket k holds EDGES_MS[k] <= duration < EDGES_MS[k + 1]; -1: no duration
EDGES_MS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000)
_DUR_SQL = (
    "CASE WHEN duration_ms IS NULL THEN -1 "
    + " ".join(f"WHEN duration_ms < {edge} THEN {k - 1}" for k, edge in enumerate(EDGES_MS) if k)
    + f" ELSE {len(EDGES_MS) - 1} END"
)
_NUMBERS = ("response_code", "retried")
_EXPRESSION = {"retried": "retried", "dur": _DUR_SQL}


@dataclass(frozen=True)
class Rollup:
    """One table of counts: its name and dimensions (besides the slot), in primary-key order."""

    table: str
    dimensions: tuple[str, ...]

    @property
    def ddl(self) -> str:
        columns = ", ".join(
            f"{d} {'INTEGER' if d in (*_NUMBERS, 'dur') else 'TEXT'} NOT NULL" for d in self.dimensions
        )
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (slot INTEGER NOT NULL, {columns}, n INTEGER NOT NULL,"
            f" PRIMARY KEY (slot, {', '.join(self.dimensions)})) WITHOUT ROWID;"
        )

    def _insert(self) -> tuple[str, str]:
        key = ", ".join(("slot", *self.dimensions))
        return (
            f"INSERT INTO {self.table} ({key}, n)",
            f" ON CONFLICT ({key}) DO UPDATE SET n = n + excluded.n",
        )

    @property
    def add_sql(self) -> str:
        insert, merge = self._insert()
        return insert + f" VALUES ({', '.join('?' * (len(self.dimensions) + 2))})" + merge

    def from_access_sql(self, where: str) -> str:
        insert, merge = self._insert()
        picks = ", ".join(
            _EXPRESSION.get(d) or f"coalesce({d}, {0 if d in _NUMBERS else repr('')})"
            for d in self.dimensions
        )
        groups = ", ".join(str(i) for i in range(1, len(self.dimensions) + 2))
        return (
            insert + f" SELECT CAST(start_time / {SLOT_S} AS INTEGER), {picks}, count(*) FROM access"
            f" WHERE {where} GROUP BY {groups}" + merge
        )


COARSE = Rollup(
    "access_rollup", ("upstream_cluster", "node_id", "method", "response_code", "retried", "node_cluster")
)
DETAIL = Rollup("access_rollup_detail", (*COARSE.dimensions, "route_name", "authority", "flags", "dur"))
ROLLUPS = (COARSE, DETAIL)
TABLE = "\n".join(r.ddl for r in ROLLUPS)


def duration_bucket(duration_ms: float | None) -> int:
    if duration_ms is None:
        return -1
    return max(0, bisect.bisect_right(EDGES_MS, duration_ms) - 1)


def add_rows(conn: sqlite3.Connection, rows: Sequence[tuple], columns: Sequence[str]) -> None:
    """Count freshly inserted access rows (in ACCESS_COLUMNS order), summed in Python first."""
    t, d = columns.index("start_time"), columns.index("duration_ms")
    for rollup in ROLLUPS:
        at = [(columns.index(c), 0 if c in _NUMBERS else "") for c in rollup.dimensions if c != "dur"]
        dur = "dur" in rollup.dimensions
        counts: dict[tuple, int] = {}
        for r in rows:
            key = (int(r[t] // SLOT_S), *(r[i] or empty for i, empty in at))
            if dur:
                key += (duration_bucket(r[d]),)
            counts[key] = counts.get(key, 0) + 1
        conn.executemany(rollup.add_sql, [(*k, n) for k, n in counts.items()])


def add_since(conn: sqlite3.Connection, seq: int) -> None:
    """Count the access rows with seq above ``seq`` (after a partial replay)."""
    for rollup in ROLLUPS:
        conn.execute(rollup.from_access_sql("seq > ?"), (seq,))


def fill_if_missing(conn: sqlite3.Connection) -> None:
    """An access table from before a rollup table existed: count it into that table once."""
    if not conn.execute("SELECT 1 FROM access LIMIT 1").fetchone():
        return
    for rollup in ROLLUPS:
        if conn.execute(f"SELECT 1 FROM {rollup.table} LIMIT 1").fetchone():
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(rollup.from_access_sql("1"))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def retain(conn: sqlite3.Connection, cutoff: float) -> None:
    """After the access rows before cutoff went: drop their slots and recount the slot cut in two."""
    edge = int(cutoff // SLOT_S)
    for rollup in ROLLUPS:
        conn.execute(f"DELETE FROM {rollup.table} WHERE slot <= ?", (edge,))
        conn.execute(
            rollup.from_access_sql("start_time >= ? AND start_time < ?"), (edge * SLOT_S, (edge + 1) * SLOT_S)
        )


def answers(query: AccessSearch) -> bool:
    """Whether every filter of the query is a dimension of the rollup (the minimum duration: up to the
    share of the one bucket it falls in, see duration_band)."""
    return all(
        v is None for v in (query.path_prefix, query.request_id, query.trace_id, query.max_duration_ms)
    )


def rollup_for(query: AccessSearch) -> Rollup:
    """The small table unless a filter needs the detailed one's dimensions."""
    detail = (query.route_name, query.authority, query.response_flag, query.min_duration_ms)
    return DETAIL if any(v is not None for v in detail) else COARSE


def duration_band(min_ms: float | None) -> tuple[int | None, tuple[float, float | None] | None]:
    """For a minimum duration: the first duration bucket wholly at or above it, and the [lo, hi) band of
    durations below that bucket that still match (None when the minimum is a bucket edge)."""
    if min_ms is None:
        return None, None
    k = bisect.bisect_left(EDGES_MS, min_ms)
    if k < len(EDGES_MS) and EDGES_MS[k] == min_ms:
        return k, None
    return k, (min_ms, EDGES_MS[k] if k < len(EDGES_MS) else None)


def usable(query: AccessSearch, bucket_s: float) -> bool:
    """Whether the rollup can answer this histogram (with duration_band's share from the access table)."""
    return (
        query.start is not None
        and query.end is not None
        and bucket_s >= SLOT_S
        and bucket_s % SLOT_S == 0
        and answers(query)
    )


def _where(query: AccessSearch, lo_slot: int, hi_slot: int) -> tuple[list[str], list[Any]]:
    where = ["slot >= ?", "slot < ?"]
    params: list[Any] = [lo_slot, hi_slot]
    for column, value in (
        ("node_id", query.node_id),
        ("node_cluster", query.node_cluster),
        ("upstream_cluster", query.upstream_cluster),
        ("method", query.method),
        ("response_code", query.status),
        ("route_name", query.route_name),
        ("authority", query.authority),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.status_class is not None:
        where.append("response_code BETWEEN ? AND ?")
        params += [query.status_class * 100, query.status_class * 100 + 99]
    if query.retried:
        where.append("retried = 1")
    if query.response_flag:
        where.append("instr(flags, ?) > 0")
        params.append(f",{query.response_flag},")
    first, _ = duration_band(query.min_duration_ms)
    if first is not None:
        where.append("dur >= ?")
        params.append(first)
    return where, params


def histogram_parts(query: AccessSearch, bucket_s: float) -> tuple[str, list[Any], list[AccessSearch]]:
    """SQL over the whole slots inside [start, end), and the searches the access table must add: the
    partial slots at either end, and the band of durations inside the minimum's bucket."""
    assert query.start is not None and query.end is not None
    lo = math.ceil(query.start / SLOT_S) * SLOT_S
    hi = max(lo, math.floor(query.end / SLOT_S) * SLOT_S)
    where, params = _where(query, lo // SLOT_S, hi // SLOT_S)
    sql = (
        f"SELECT CAST(slot * {SLOT_S} / ? AS INTEGER) AS w, response_code / 100 AS c, sum(n)"
        f" FROM {rollup_for(query).table} WHERE {' AND '.join(where)} GROUP BY w, c"
    )
    rest = [query]
    if lo < hi:
        rest = [replace(query, start=query.start, end=lo), replace(query, start=hi, end=query.end)]
        _, band = duration_band(query.min_duration_ms)
        if band is not None:
            rest.append(replace(query, start=lo, end=hi, min_duration_ms=band[0], max_duration_ms=band[1]))
    return sql, [bucket_s, *params], rest


def newest_window(
    conn: sqlite3.Connection, query: AccessSearch, before: float | None, want: int
) -> tuple[float, float | None] | None:
    """A time window [lo, hi) that holds the newest ``want`` matches of the query up to ``before`` (a
    cursor's time) or all of them when fewer match, from the rollup's counts: the search then reads only
    those slots (hi None: no upper bound beyond the query's). None when the rollup cannot tell (a filter
    it does not have). Read newest first, a few slots, then eight times as many, and so on."""
    if not answers(query):
        return None
    end = min(x for x in (query.end, before, math.inf) if x is not None)
    start = query.start if query.start is not None else 0.0
    if math.isinf(end) or end < start:
        return None if math.isinf(end) else (start, start)
    # only the slots wholly before `end` are counted; the slot `end` falls in is always read
    whole = math.floor(end / SLOT_S)
    first = int(start // SLOT_S)
    exact = duration_band(query.min_duration_ms)[1] is None
    table = rollup_for(query).table
    seen, newest, oldest = 0, None, None
    top, step = whole + 1, 8
    while top > first:
        bottom = max(first, top - step)
        where, params = _where(query, bottom, top)
        rows = conn.execute(
            f"SELECT slot, sum(n) FROM {table} WHERE {' AND '.join(where)} GROUP BY slot ORDER BY slot DESC",
            params,
        ).fetchall()
        for slot, n in rows:
            newest = slot if newest is None else newest
            oldest = slot
            if slot < whole:
                seen += n
            if seen >= want:
                return max(start, slot * SLOT_S), None
        top, step = bottom, step * 8
    if exact:  # every match is in a listed slot: from the oldest to the newest (none: an empty window)
        return (max(start, oldest * SLOT_S), (newest + 1) * SLOT_S) if newest is not None else (start, start)
    return None


# a map over fewer records than this is counted from the access table (exact p99 to the millisecond)
EXACT_MAP_RECORDS = 20_000


def traffic_rows(
    conn: sqlite3.Connection, start: float, end: float
) -> tuple[list[tuple], float, float] | None:
    """The service map's counts over the whole slots of [start, end) from the detailed rollup: rows of
    (source, target, duration bucket, requests, 5xx, retried), and the [lo, hi) they cover; None when the
    range holds too few records to be worth it (or no whole slot)."""
    lo = math.ceil(start / SLOT_S) * SLOT_S
    hi = max(lo, math.floor(end / SLOT_S) * SLOT_S)
    if lo >= hi:
        return None
    rows = conn.execute(
        f"SELECT node_cluster, upstream_cluster, dur, sum(n),"
        " sum(CASE WHEN response_code BETWEEN 500 AND 599 THEN n ELSE 0 END), sum(retried * n)"
        f" FROM {DETAIL.table} WHERE slot >= ? AND slot < ? GROUP BY 1, 2, 3",
        (lo // SLOT_S, hi // SLOT_S),
    ).fetchall()
    if sum(r[3] for r in rows) < EXACT_MAP_RECORDS:
        return None
    return rows, float(lo), float(hi)


def bucket_quantile(counts: dict[int, int], q: float) -> float | None:
    """The q-quantile of durations given as {duration bucket: how many}, interpolated linearly inside its
    bucket (as Prometheus' histogram_quantile does); the last bucket, without an upper edge, answers its
    lower edge."""
    total = sum(n for k, n in counts.items() if k >= 0)
    if not total:
        return None
    rank = max(1.0, q * total)
    seen = 0
    for k in sorted(k for k in counts if k >= 0):
        if seen + counts[k] >= rank:
            low = EDGES_MS[k]
            if k + 1 >= len(EDGES_MS):
                return float(low)
            return low + (EDGES_MS[k + 1] - low) * (rank - seen) / counts[k]
        seen += counts[k]
    return float(EDGES_MS[max(counts)])
