"""Per-10-second counts of access records for SqliteStore, kept at write time so the search page's
histogram of a million records is a read of a few hundred rows instead of a scan of a million.

One row per (10-second slot, proxy, its cluster, upstream cluster, method, response code, retried):
the dimensions the page's common filters use. A histogram whose filters are all among them, with buckets
a multiple of 10 s, is answered from here; its partial first and last slots, and every other search,
from the access table itself."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from meshscope.pipelines.store.base import AccessSearch

SLOT_S = 10
TABLE = """
CREATE TABLE IF NOT EXISTS access_rollup (
    slot INTEGER NOT NULL, node_id TEXT NOT NULL, node_cluster TEXT NOT NULL,
    upstream_cluster TEXT NOT NULL, method TEXT NOT NULL, response_code INTEGER NOT NULL,
    retried INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (slot, upstream_cluster, node_id, method, response_code, retried, node_cluster))
    WITHOUT ROWID;
"""
_KEY = "slot, upstream_cluster, node_id, method, response_code, retried, node_cluster"
_MERGE = f" ON CONFLICT ({_KEY}) DO UPDATE SET n = n + excluded.n"
_INSERT = (
    "INSERT INTO access_rollup"
    " (slot, node_id, node_cluster, upstream_cluster, method, response_code, retried, n)"
)
_ADD = (
    _INSERT + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)" + _MERGE
)
_FROM_ACCESS = (
    _INSERT
    + f" SELECT CAST(start_time / {SLOT_S} AS INTEGER), coalesce(node_id, ''), coalesce(node_cluster, ''),"
    " coalesce(upstream_cluster, ''), coalesce(method, ''), coalesce(response_code, 0), retried, count(*)"
    " FROM access WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6, 7" + _MERGE
)


def add_rows(conn: sqlite3.Connection, rows: Sequence[tuple], columns: Sequence[str]) -> None:
    """Count freshly inserted access rows (in ACCESS_COLUMNS order), summed in Python first."""
    at = {c: columns.index(c) for c in
          ("start_time", "node_id", "node_cluster", "upstream_cluster", "method", "response_code", "retried")}
    counts: dict[tuple, int] = {}
    for r in rows:
        key = (int(r[at["start_time"]] // SLOT_S), r[at["node_id"]] or "", r[at["node_cluster"]] or "",
               r[at["upstream_cluster"]] or "", r[at["method"]] or "", r[at["response_code"]] or 0,
               int(bool(r[at["retried"]])))
        counts[key] = counts.get(key, 0) + 1
    conn.executemany(_ADD, [(*k, n) for k, n in counts.items()])


def add_since(conn: sqlite3.Connection, seq: int) -> None:
    """Count the access rows with seq above ``seq`` (after a partial replay)."""
    conn.execute(_FROM_ACCESS.format(where="seq > ?"), (seq,))


def fill_if_missing(conn: sqlite3.Connection) -> None:
    """An access table from before the rollup existed: count all of it once."""
    if conn.execute("SELECT 1 FROM access_rollup LIMIT 1").fetchone():
        return
    if not conn.execute("SELECT 1 FROM access LIMIT 1").fetchone():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_FROM_ACCESS.format(where="1"))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def retain(conn: sqlite3.Connection, cutoff: float) -> None:
    """After the access rows before cutoff went: drop their slots and recount the slot cut in two."""
    edge = int(cutoff // SLOT_S)
    conn.execute("DELETE FROM access_rollup WHERE slot <= ?", (edge,))
    where = "start_time >= ? AND start_time < ?"
    conn.execute(_FROM_ACCESS.format(where=where), (edge * SLOT_S, (edge + 1) * SLOT_S))


def usable(query: AccessSearch, bucket_s: float) -> bool:
    """Whether the rollup can answer this histogram: every filter is one of its dimensions."""
    others = (query.route_name, query.path_prefix, query.authority, query.response_flag,
              query.min_duration_ms, query.request_id, query.trace_id)
    return (
        query.start is not None and query.end is not None and bucket_s >= SLOT_S and bucket_s % SLOT_S == 0
        and all(v is None for v in others)
    )


def histogram_sql(query: AccessSearch, bucket_s: float) -> tuple[str, list[Any], float, float]:
    """SQL over whole slots inside [start, end) and the [lo, hi) it covers (the rest comes from access)."""
    assert query.start is not None and query.end is not None
    lo = math.ceil(query.start / SLOT_S) * SLOT_S
    hi = max(lo, math.floor(query.end / SLOT_S) * SLOT_S)
    where = ["slot >= ?", "slot < ?"]
    params: list[Any] = [lo // SLOT_S, hi // SLOT_S]
    for column, value in (("node_id", query.node_id), ("node_cluster", query.node_cluster),
                          ("upstream_cluster", query.upstream_cluster), ("method", query.method),
                          ("response_code", query.status)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.status_class is not None:
        where.append("response_code BETWEEN ? AND ?")
        params += [query.status_class * 100, query.status_class * 100 + 99]
    if query.retried:
        where.append("retried = 1")
    sql = (
        f"SELECT CAST(slot * {SLOT_S} / ? AS INTEGER) AS w, response_code / 100 AS c, sum(n)"
        f" FROM access_rollup WHERE {' AND '.join(where)} GROUP BY w, c"
    )
    return sql, [bucket_s, *params], float(lo), float(hi)
