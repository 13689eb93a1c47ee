"""SqliteStore: the embedded store, one SQLite file in WAL mode.

Every record is kept whole as JSON (orjson) next to the columns the readers query, under its
deterministic id with INSERT OR IGNORE, so a replayed batch is never duplicated. sqlite3 blocks,
so all work runs on dedicated threads: one writer connection (each batch one transaction) and
one reader connection (WAL lets it read while the writer writes).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from meshscope.pipelines.store import sqlite_rollup as rollup
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
    percentile_of_counts,
    record_time,
    service_of,
    since,
    span_query_terms,
    status_class_name,
    tag_terms,
    trace_id_key,
)

from meshscope.errors import UserError
from meshscope.model import AccessRecord, Alert, Exchange, Flow, Record, Span, normalize_request_id
from meshscope.settings import Settings

T = TypeVar("T")

# Tables first, indexes last: benchmarks/bench_store.py bulk-loads a large file between the two.
TABLES = """
-- Uniqueness is on (time, id) and (trace id, id), not id alone: a record's id is derived from
-- those values, so duplicates are still caught, and the unique index doubles as the time (trace)
-- index. One random-keyed index less per row is a third more records per second.
CREATE TABLE IF NOT EXISTS access (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, start_time REAL NOT NULL,
    request_id_norm TEXT, trace_id TEXT, response_code INTEGER, upstream_cluster TEXT,
    route_name TEXT, authority TEXT, node_id TEXT, node_cluster TEXT, method TEXT, protocol TEXT,
    retried INTEGER NOT NULL, doc BLOB NOT NULL, path TEXT, duration_ms REAL, flags TEXT,
    UNIQUE (start_time, id));
CREATE TABLE IF NOT EXISTS span (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, trace_id TEXT NOT NULL, request_id_norm TEXT,
    service TEXT, remote_service TEXT, name TEXT, ts INTEGER, duration INTEGER, q TEXT,
    doc BLOB NOT NULL, UNIQUE (trace_id, id));
CREATE TABLE IF NOT EXISTS exchange (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, request_id_norm TEXT, time REAL,
    doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS flow (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, start REAL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS flow_request (
    request_id_norm TEXT NOT NULL, flow_id TEXT NOT NULL, PRIMARY KEY (request_id_norm, flow_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, rule TEXT NOT NULL, group_key TEXT NOT NULL,
    state TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS node (
    node_id TEXT PRIMARY KEY, node_cluster TEXT, records INTEGER NOT NULL,
    first_seen REAL, last_seen REAL);
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS access_rid ON access (request_id_norm) WHERE request_id_norm IS NOT NULL;
CREATE INDEX IF NOT EXISTS access_trace ON access (trace_id) WHERE trace_id IS NOT NULL;
-- 2xx/3xx queries are served as well by the time index: only error codes are worth an entry
CREATE INDEX IF NOT EXISTS access_code ON access (response_code, start_time) WHERE response_code >= 400;
CREATE INDEX IF NOT EXISTS access_cluster ON access (upstream_cluster, start_time);
-- the search page: path prefixes as index ranges (with what a histogram of them reads); durations for the
-- share of a minimum duration that the rollup's duration buckets cannot tell (sqlite_rollup.py); the
-- few records with response flags, newest first
DROP INDEX IF EXISTS access_path;
CREATE INDEX IF NOT EXISTS access_path_time ON access (path, start_time, response_code, duration_ms);
DROP INDEX IF EXISTS access_slow;
CREATE INDEX IF NOT EXISTS access_duration ON access (duration_ms, start_time, response_code);
CREATE INDEX IF NOT EXISTS access_flagged ON access (start_time) WHERE flags IS NOT NULL;
CREATE INDEX IF NOT EXISTS span_rid ON span (request_id_norm) WHERE request_id_norm IS NOT NULL;
CREATE INDEX IF NOT EXISTS span_service ON span (service, ts);
CREATE INDEX IF NOT EXISTS span_ts ON span (ts);
CREATE INDEX IF NOT EXISTS span_names ON span (service, name);
CREATE INDEX IF NOT EXISTS span_remote ON span (service, remote_service);
CREATE INDEX IF NOT EXISTS exchange_rid ON exchange (request_id_norm) WHERE request_id_norm IS NOT NULL;
CREATE INDEX IF NOT EXISTS exchange_time ON exchange (time);
CREATE INDEX IF NOT EXISTS flow_start ON flow (start);
CREATE INDEX IF NOT EXISTS alert_seen ON alert (last_seen);
CREATE INDEX IF NOT EXISTS alert_rule ON alert (rule, group_key, last_seen);
"""

ACCESS_COLUMNS = (
    "id", "start_time", "request_id_norm", "trace_id", "response_code", "upstream_cluster",
    "route_name", "authority", "node_id", "node_cluster", "method", "protocol", "retried", "doc",
    "path", "duration_ms", "flags",
)
# columns added after the first release (the search page filters on them): ALTER TABLE adds them to
# an older file and fills them from each row's document
_LATER_ACCESS_COLUMNS = {
    "path": ("TEXT", "CAST(doc AS TEXT) ->> '$.path'"),
    "duration_ms": ("REAL", "CAST(doc AS TEXT) ->> '$.duration_ms'"),
    "flags": ("TEXT", "(SELECT ',' || group_concat(value, ',') || ','"
                      " FROM json_each(CAST(doc AS TEXT), '$.response_flags'))"),
}


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def access_row(r: AccessRecord) -> tuple:
    """The access table row of a record, in ACCESS_COLUMNS order (also used by the benchmark)."""
    retried = (r.attempt_count or 1) > 1 or "URX" in r.response_flags
    return (
        r.id, r.start_time, normalize_request_id(r.request_id), r.trace_id and r.trace_id.lower(),
        r.response_code, r.upstream_cluster, r.route_name, r.authority, r.node_id, r.node_cluster,
        r.method, r.protocol, retried, orjson.dumps(r), r.path, r.duration_ms, flags_text(r.response_flags),
    )


def flags_text(flags: Sequence[str]) -> str | None:
    """Response flags as one column: ``,UF,URX,`` (each flag between commas, so LIKE '%,UF,%' finds one)."""
    return "," + ",".join(flags) + "," if flags else None


def _span_row(s: Span) -> tuple:
    return (
        s.id, s.trace_id.lower(), s.request_id_norm, service_of(s.local_endpoint),
        service_of(s.remote_endpoint), s.name and s.name.lower(), s.timestamp, s.duration,
        orjson.dumps(span_query_terms(s)).decode(), orjson.dumps(s),
    )


def _exchange_row(e: Exchange) -> tuple:
    return (e.id, e.request_id_norm, record_time(e), orjson.dumps(e))


def _flow_row(f: Flow) -> tuple:
    return (f.id, f.start, orjson.dumps(f))


def _alert_row(a: Alert) -> tuple:
    return (a.id, a.rule, a.group_key, a.state, a.first_seen, a.last_seen, orjson.dumps(a))


# kind -> (insert statement, row builder); flows also get one flow_request row per request id
_WRITES: dict[str, tuple[str, Callable[[Any], tuple]]] = {
    "access": (_insert("access", ACCESS_COLUMNS), access_row),
    "span": (_insert("span", ("id", "trace_id", "request_id_norm", "service", "remote_service", "name",
                              "ts", "duration", "q", "doc")), _span_row),
    "exchange": (_insert("exchange", ("id", "request_id_norm", "time", "doc")), _exchange_row),
    "flow": (_insert("flow", ("id", "start", "doc")), _flow_row),
    "alert": (_insert("alert", ("id", "rule", "group_key", "state", "first_seen", "last_seen", "doc")),
              _alert_row),
}
_FLOW_REQUEST = _insert("flow_request", ("request_id_norm", "flow_id"))
# Node accounting counts only the access rows a transaction really inserted, so a replay never
# inflates it. Usually that is every row, summed in Python; after a partial replay, the rows
# with seq above the previous maximum. Either is cheaper than a per-row trigger.
_NODE_MERGE = """
ON CONFLICT (node_id) DO UPDATE SET records = records + excluded.records,
    node_cluster = excluded.node_cluster, first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)"""
_NODE_ADD = "INSERT INTO node VALUES (?, ?, ?, ?, ?)" + _NODE_MERGE
_NODE_ADD_SINCE = (
    "INSERT INTO node SELECT node_id, max(node_cluster), count(*), min(start_time), max(start_time)"
    " FROM access WHERE seq > ? GROUP BY node_id" + _NODE_MERGE
)
_A_START, _A_NODE, _A_CLUSTER = (ACCESS_COLUMNS.index(c) for c in ("start_time", "node_id", "node_cluster"))


def _node_totals(rows: list[tuple]) -> list[tuple]:
    """(node_id, node_cluster, records, first_seen, last_seen) per node over access rows."""
    totals: dict[str, list] = {}
    for row in rows:
        t, node = row[_A_START], row[_A_NODE]
        entry = totals.get(node)
        if entry is None:
            totals[node] = [node, row[_A_CLUSTER], 1, t, t]
        else:
            entry[1] = row[_A_CLUSTER]
            entry[2] += 1
            entry[3] = min(entry[3], t)
            entry[4] = max(entry[4], t)
    return [tuple(e) for e in totals.values()]


# (table, time column, seconds per unit) for retention
_RETENTION = (("access", "start_time", 1.0), ("span", "ts", 1e-6), ("exchange", "time", 1.0),
              ("flow", "start", 1.0), ("alert", "last_seen", 1.0))


def connect(path: str) -> sqlite3.Connection:
    """A connection tuned for this store: WAL, synchronous=NORMAL (durable at each checkpoint),
    explicit transactions (isolation_level=None)."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-131072")  # 128 MiB of page cache
    conn.execute("PRAGMA mmap_size=1073741824")
    # checkpoints run on a thread of their own (WalCheckpointer), never inside a writer's commit:
    # copying the log into the file and syncing it was half the cost of a write
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA journal_size_limit=268435456")  # the log file shrinks back after a reset
    return conn


class StoreDamaged(UserError):
    """The SQLite file failed its integrity check at open: a one-line message says what to do."""


def check_integrity(path: str) -> None:
    """``PRAGMA quick_check`` (and that the file is a database at all); StoreDamaged naming the file."""
    detail = None
    try:
        conn = connect(path)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        finally:
            conn.close()
        if rows != ["ok"]:
            first = " ".join(rows[0].replace("*** in database main ***", "").split())
            detail = first + (f" and {len(rows) - 1} more problems" if len(rows) > 1 else "")
    except sqlite3.DatabaseError as exc:
        detail = " ".join(str(exc).split())
    if detail is not None:
        raise StoreDamaged(
            f"the SQLite store {path} is damaged ({detail}): start with --repair to copy what is readable "
            "into a fresh file (the damaged one is kept beside it), or move it aside and start fresh")


def repair(path: str | os.PathLike) -> str:
    """Move a damaged store aside (``<name>.damaged-<time>``, with its -wal/-shm) and copy every row
    still readable into a fresh file; returns a one-line report."""
    path = str(path)
    aside = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    fresh = connect(path)
    fresh.executescript(TABLES + INDEXES)
    copied: dict[str, int] = {}
    lost: list[str] = []
    try:
        old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        tables = [r[0] for r in fresh.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not r[0].startswith("sqlite_")]
    except sqlite3.DatabaseError as exc:
        fresh.close()
        return f"{path}: nothing was readable ({exc}); started fresh, the damaged file is {aside}"
    for table in tables:
        n = 0
        try:
            cur = old.execute(f"SELECT * FROM {table}")  # noqa: S608 - names from our own schema
            fresh.execute("BEGIN")
            while rows := cur.fetchmany(1000):
                marks = ",".join("?" * len(rows[0]))
                fresh.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", rows)  # noqa: S608
                n += len(rows)
        except sqlite3.DatabaseError as exc:
            lost.append(f"{table} after {n} rows ({exc})")
        finally:
            if fresh.in_transaction:
                fresh.execute("COMMIT")
        copied[table] = n
    old.close()
    fresh.close()
    summary = ", ".join(f"{t} {n}" for t, n in copied.items() if n)
    return (f"{path}: repaired, rows kept: {summary or 'none'}"
            + (f"; unreadable: {'; '.join(lost)}" if lost else "") + f"; the damaged file is {aside}")


class WalCheckpointer:
    """Checkpoints the WAL every interval_s on its own connection and thread (PASSIVE: writers
    and readers go on meanwhile), and once more when stopped."""

    def __init__(self, path: str, interval_s: float = 1.0, max_wal_bytes: int = 512 * 2**20) -> None:
        self.path = path
        self.interval_s = interval_s
        self.max_wal_bytes = max_wal_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        conn = connect(self.path)
        try:
            while not self._stop.wait(self.interval_s):
                # under a steady stream of commits a PASSIVE checkpoint never lets the log start
                # over; past the limit, RESTART makes writers wait until it has (a short stall)
                mode = "RESTART" if self._wal_bytes() > self.max_wal_bytes else "PASSIVE"
                try:
                    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
                except sqlite3.OperationalError:  # busy: the next round catches up
                    pass
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # never waits for a busy writer
        except sqlite3.Error:
            pass  # the next writer's open checkpoints whatever is left
        finally:
            conn.close()

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class SqliteStore(Store):
    """The embedded Store: settings.db_path, records older than settings.retention_days removable
    with apply_retention()."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.db_path
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        # two readers: a long aggregate does not hold up a request-id look-up
        self._reader = ThreadPoolExecutor(2, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._checkpointer: WalCheckpointer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = await self._on(self._writer, self._open_writer)
        self._checkpointer = WalCheckpointer(str(self.path))
        self._checkpointer.start()

    def _open_writer(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size > 0:
            check_integrity(str(self.path))
        conn = connect(str(self.path))
        conn.executescript(TABLES + rollup.TABLE)
        _add_later_columns(conn)
        conn.executescript(INDEXES)
        rollup.fill_if_missing(conn)
        return conn

    async def stop(self) -> None:
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.stop)
            self._checkpointer = None
        if self._wconn is not None:
            await self._on(self._writer, self._wconn.close)
        self._wconn = None
        readers, self._rconns = self._rconns, []
        for conn in readers:  # no read is running once the owner stops the store
            conn.close()

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError) as exc:
            raise ValueError(f"refused by the store: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc

    def _conn(self, writer: bool) -> sqlite3.Connection:
        """The writer connection, or this reader thread's own connection (opened on first use)."""
        if self._wconn is None:
            raise StoreUnavailable("SqliteStore is not started")
        if writer:
            return self._wconn
        conn = getattr(self._local, "conn", None)
        if conn is None or conn not in self._rconns:
            conn = self._local.conn = connect(str(self.path))
            self._rconns.append(conn)
        return conn

    # -- writer ------------------------------------------------------------------------------
    async def write(self, records: Sequence[Record]) -> None:
        check_kinds(records)
        if records:
            await self._on(self._writer, self._write, records)

    def _write(self, records: Sequence[Record]) -> None:
        by_kind: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            by_kind[r.kind].append(r)
        try:  # build every row before the transaction: a bad record refuses the whole batch
            rows = {kind: [_WRITES[kind][1](r) for r in rs] for kind, rs in by_kind.items()}
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"refused: malformed record: {exc}") from exc
        flow_requests = [(rid, f.id) for f in by_kind.get("flow", ()) for rid in flow_request_ids(f)]
        conn = self._conn(writer=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, kind_rows in rows.items():
                if kind == "access":
                    self._write_access(conn, kind_rows)
                else:
                    conn.executemany(_WRITES[kind][0], kind_rows)
            if flow_requests:
                conn.executemany(_FLOW_REQUEST, flow_requests)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_access(conn: sqlite3.Connection, rows: list[tuple]) -> None:
        before_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM access").fetchone()[0]
        before_changes = conn.total_changes
        conn.executemany(_WRITES["access"][0], rows)
        inserted = conn.total_changes - before_changes
        if inserted == len(rows):
            conn.executemany(_NODE_ADD, _node_totals(rows))
            rollup.add_rows(conn, rows, ACCESS_COLUMNS)
        elif inserted:
            conn.execute(_NODE_ADD_SINCE, (before_seq,))
            rollup.add_since(conn, before_seq)

    async def apply_retention(self, now: float | None = None) -> int:
        cutoff = since(now, self.settings.retention_days)
        return await self._on(self._writer, self._retain, cutoff)

    def _retain(self, cutoff: float) -> int:
        conn = self._conn(writer=True)
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, column, unit in _RETENTION:
                deleted += conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff / unit,)).rowcount
            conn.execute("DELETE FROM flow_request WHERE flow_id NOT IN (SELECT id FROM flow)")
            rollup.retain(conn, cutoff)
            # node accounting follows what is still stored
            conn.execute("DELETE FROM node")
            conn.execute(
                "INSERT INTO node SELECT node_id, max(node_cluster), count(*), min(start_time),"
                " max(start_time) FROM access GROUP BY node_id"
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return deleted

    # -- reader ------------------------------------------------------------------------------
    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self._on(self._reader, lambda: self._conn(writer=False).execute(sql, params).fetchall())

    async def _docs(self, cls: type[T], sql: str, params: Sequence[Any]) -> list[T]:
        return [cls.from_json(row[0]) for row in await self._query(sql, params)]  # type: ignore[attr-defined]

    async def count(self, kind: str) -> int:
        """How many records of one kind are stored (tests and the pipeline's progress report)."""
        if kind not in _WRITES:
            raise ValueError(f"unknown record kind {kind!r}")
        return (await self._query(f"SELECT count(*) FROM {kind}"))[0][0]

    async def _by_request_id(self, cls: type[T], sql: str, request_id: str) -> list[T]:
        """Records whose normalised request id equals the one asked for (sql has one parameter)."""
        key = normalize_request_id(request_id)
        return await self._docs(cls, sql, (key,)) if key else []

    async def access_by_request_id(self, request_id: str) -> list[AccessRecord]:
        sql = "SELECT doc FROM access WHERE request_id_norm = ? ORDER BY start_time, seq"
        return await self._by_request_id(AccessRecord, sql, request_id)

    async def spans_by_trace_id(self, trace_id: str) -> list[Span]:
        return await self._docs(
            Span, "SELECT doc FROM span WHERE trace_id = ? ORDER BY ts, seq", (trace_id.lower(),)
        )

    async def spans_by_request_id(self, request_id: str) -> list[Span]:
        sql = "SELECT doc FROM span WHERE request_id_norm = ? ORDER BY ts, seq"
        return await self._by_request_id(Span, sql, request_id)

    async def exchanges_by_request_id(self, request_id: str) -> list[Exchange]:
        sql = "SELECT doc FROM exchange WHERE request_id_norm = ? ORDER BY time, seq"
        return await self._by_request_id(Exchange, sql, request_id)

    async def flows_by_request_id(self, request_id: str) -> list[Flow]:
        sql = (
            "SELECT f.doc FROM flow_request r JOIN flow f ON f.id = r.flow_id"
            " WHERE r.request_id_norm = ? ORDER BY f.start, f.seq"
        )
        return await self._by_request_id(Flow, sql, request_id)

    async def list_access(self, query: AccessQuery) -> Page:
        """Newest first; the cursor is the (start_time, id) of the last item (keyset paging)."""
        return await self.search_access(as_search(query))

    async def search_access(self, query: AccessSearch) -> Page:
        """Newest first, paged as list_access."""
        where, params = _search_filters(query)
        if where is None:
            return Page([])
        before = decode_cursor(query.cursor)[0] if query.cursor else None
        # the rollup tells which slots hold the newest matches: only those are read
        want = query.limit + 1
        window = await self._on(
            self._reader, lambda: rollup.newest_window(self._conn(writer=False), query, before, want)
        )
        if window is not None:
            lo, hi = window
            if hi is not None and lo >= hi:
                return Page([])
            _condition(where, params, "start_time >= ?", lo)
            _condition(where, params, "start_time < ?", hi)
        return await self._access_page(where, params, query.limit, query.cursor, _index_for(query))

    async def _access_page(
        self, where: list[str], params: list[Any], limit: int, cursor: str | None, index: str | None = None
    ) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if cursor:
            key = decode_cursor(cursor)
            where.append("(start_time, id) < (?, ?)")
            params += key[:2]
        order = " ORDER BY start_time DESC, id DESC LIMIT ?"
        hint = f" INDEXED BY {index}" if index else ""
        sql = "SELECT id, start_time, doc FROM access" + hint + _where(where) + order
        rows = await self._query(sql, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][1], rows[-1][0]) if more else None
        return Page([AccessRecord.from_json(r[2]) for r in rows], next_cursor)

    async def access_histogram(self, query: AccessSearch, bucket_s: float) -> list[HistogramBucket]:
        if bucket_s <= 0:
            raise ValueError("bucket_s must be positive")
        parts: list[tuple[str, list[Any]]] = []
        rest = [query]
        if rollup.usable(query, bucket_s):  # whole 10-second slots from the rollup, the rest from access
            sql, params, rest = rollup.histogram_parts(query, bucket_s)
            parts.append((sql, params))
        for part in rest:
            if part.start is not None and part.end is not None and part.start >= part.end:
                continue
            where, params = _search_filters(part)
            if where is None:
                return []
            sql = (
                "SELECT CAST(start_time / ? AS INTEGER) AS w, response_code / 100 AS c, count(*) FROM access"
                + _where(where) + " GROUP BY w, c"
            )
            parts.append((sql, [bucket_s, *params]))
        buckets: dict[int, HistogramBucket] = {}
        for sql, params in parts:
            for w, c, n in await self._query(sql, params):
                bucket = buckets.setdefault(w, HistogramBucket(start=w * bucket_s))
                name = status_class_name(c * 100 if c is not None else None)
                bucket.counts[name] = bucket.counts.get(name, 0) + n
        return [buckets[w] for w in sorted(buckets)]

    async def search_values(
        self, field: str, prefix: str = "", start: float | None = None, end: float | None = None,
        limit: int = 20,
    ) -> list[str]:
        """From the node table for proxies; otherwise from the time range, or the newest 50,000 records
        when none is given (a DISTINCT over a million unindexed rows would take a second)."""
        check_value_field(field)
        if field in ("node_id", "node_cluster"):
            rows = await self._query(
                f"SELECT {field}, sum(records) FROM node WHERE {field} IS NOT NULL AND {field} != ''"
                f" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1000"
            )
            counted = [(str(v), n) for v, n in rows]
        else:
            column = {"response_flags": "flags"}.get(field, field)
            where: list[str] = [f"{column} IS NOT NULL"]
            params: list[Any] = []
            _condition(where, params, "start_time >= ?", start)
            _condition(where, params, "start_time < ?", end)
            source = "access"
            if start is None and end is None:
                source = f"(SELECT {column} FROM access ORDER BY start_time DESC LIMIT 50000)"
            sql = f"SELECT {column}, count(*) FROM {source}{_where(where)} GROUP BY 1"
            rows = await self._query(sql, params)
            counted = []
            for value, n in rows:
                values = value.strip(",").split(",") if field == "response_flags" else [value]
                counted += [(str(v), n) for v in values]
        totals: dict[str, int] = {}
        for value, n in counted:
            if value.startswith(prefix):
                totals[value] = totals.get(value, 0) + n
        return [v for v, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))][:limit]

    async def traffic_edges(self, start: float, end: float) -> list[TrafficEdge]:
        """One scan grouped by edge and whole milliseconds; p99 from those counts (1 ms resolution). Over
        many records (a busy hour): the whole 10-second slots from the detailed rollup, p99 interpolated
        in its duration buckets, and only the partial slots at either end scanned."""
        rolled = await self._on(
            self._reader, lambda: rollup.traffic_rows(self._conn(writer=False), start, end)
        )
        if rolled is None:
            return _edges(await self._query(_TRAFFIC, (start, end)), {})
        rows, lo, hi = rolled
        scanned = [*await self._query(_TRAFFIC, (start, lo)), *await self._query(_TRAFFIC, (hi, end))]
        buckets: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        for src, dst, dur, n, _, _ in rows:
            buckets[(src, dst)][dur] = buckets[(src, dst)].get(dur, 0) + n
        for src, dst, ms, n, _, _ in scanned:
            dur = rollup.duration_bucket(ms)
            buckets[(src, dst)][dur] = buckets[(src, dst)].get(dur, 0) + n
        return _edges(
            [(src, dst, None, n, n5, nr) for src, dst, _, n, n5, nr in [*rows, *scanned]], buckets
        )

    async def aggregates(
        self, start: float, end: float, window_s: float, group_by: Sequence[str]
    ) -> list[WindowAggregate]:
        """Windows aligned on multiples of window_s since the epoch (as date_histogram does)."""
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        groups = check_group_by(group_by)
        cols = "".join(f", coalesce({g}, '')" for g in groups)
        sql = (
            f"SELECT CAST(start_time / ? AS INTEGER) AS w{cols}, count(*),"
            " sum(response_code BETWEEN 500 AND 599), sum(retried)"
            f" FROM access WHERE start_time >= ? AND start_time < ? GROUP BY w{cols} ORDER BY w{cols}"
        )
        rows = await self._query(sql, (window_s, start, end))
        n = len(groups)
        return [
            WindowAggregate(
                window_start=row[0] * window_s, group=dict(zip(groups, row[1 : 1 + n], strict=True)),
                count=row[n + 1], count_5xx=row[n + 2] or 0, count_retried=row[n + 3] or 0,
            )
            for row in rows
        ]

    async def alerts(
        self, rule: str | None = None, group_key: str | None = None, state: str | None = None,
        start: float | None = None, end: float | None = None, limit: int = 100,
    ) -> list[Alert]:
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("rule = ?", rule), ("group_key = ?", group_key), ("state = ?", state),
                              ("last_seen >= ?", start), ("first_seen < ?", end)):
            _condition(where, params, clause, value)
        sql = "SELECT doc FROM alert" + (" WHERE " + " AND ".join(where) if where else "")
        return await self._docs(Alert, sql + " ORDER BY last_seen DESC, seq DESC LIMIT ?", [*params, limit])

    # -- Zipkin v2 read API --------------------------------------------------------------------
    async def service_names(self) -> list[str]:
        rows = await self._query("SELECT DISTINCT service FROM span WHERE service IS NOT NULL ORDER BY 1")
        return [r[0] for r in rows]

    async def span_names(self, service: str) -> list[str]:
        rows = await self._query(
            "SELECT DISTINCT name FROM span WHERE service = ? AND name IS NOT NULL ORDER BY 1",
            (service.lower(),),
        )
        return [r[0] for r in rows]

    async def remote_service_names(self, service: str) -> list[str]:
        rows = await self._query(
            "SELECT DISTINCT remote_service FROM span"
            " WHERE service = ? AND remote_service IS NOT NULL ORDER BY 1",
            (service.lower(),),
        )
        return [r[0] for r in rows]

    async def find_traces(
        self, service: str | None, span_name: str | None, end_ts_ms: int, lookback_ms: int,
        min_duration_us: int | None, max_duration_us: int | None, tags: dict[str, str | None],
        limit: int,
    ) -> list[list[Span]]:
        """Traces with at least one span matching every condition, newest first."""
        where = ["ts >= ?", "ts <= ?"]
        params: list[Any] = [(end_ts_ms - lookback_ms) * 1000, end_ts_ms * 1000]
        for clause, value in (("service = ?", service.lower() if service else None),
                              ("name = ?", span_name.lower() if span_name else None),
                              ("duration >= ?", min_duration_us), ("duration <= ?", max_duration_us)):
            _condition(where, params, clause, value)
        for term in tag_terms(tags):
            where.append("EXISTS (SELECT 1 FROM json_each(span.q) WHERE value = ?)")
            params.append(term)
        ids = await self._query(
            f"SELECT trace_id FROM span WHERE {' AND '.join(where)}"
            " GROUP BY trace_id ORDER BY max(ts) DESC LIMIT ?",
            [*params, limit],
        )
        traces = [await self.spans_by_trace_id(row[0]) for row in ids]
        return [t for t in traces if t]

    async def node_ids(self) -> list[dict]:
        keys = ("node_id", "node_cluster", "records", "first_seen", "last_seen")
        rows = await self._query(f"SELECT {', '.join(keys)} FROM node ORDER BY node_id")
        return [dict(zip(keys, row, strict=True)) for row in rows]


_TRAFFIC = (
    "SELECT coalesce(node_cluster, ''), coalesce(upstream_cluster, ''), CAST(duration_ms AS INTEGER),"
    " count(*), sum(response_code BETWEEN 500 AND 599), sum(retried) FROM access"
    " WHERE start_time >= ? AND start_time < ? GROUP BY 1, 2, 3"
)


def _edges(rows: list[tuple], buckets: dict[tuple[str, str], dict[int, int]]) -> list[TrafficEdge]:
    """Map edges from (source, target, whole ms or None, requests, 5xx, retried) rows; each p99 from the
    edge's duration buckets where given (the rollup's), else from its millisecond counts."""
    edges: dict[tuple[str, str], TrafficEdge] = {}
    durations: dict[tuple[str, str], dict[float, int]] = defaultdict(dict)
    for src, dst, ms, n, n5, nr in rows:
        edge = edges.setdefault((src, dst), TrafficEdge(source=src, target=dst))
        edge.count += n
        edge.count_5xx += n5 or 0
        edge.count_retried += nr or 0
        if ms is not None:
            durations[(src, dst)][float(ms)] = n
    for key, edge in edges.items():
        if key in buckets:
            edge.p99_ms = rollup.bucket_quantile(buckets[key], 0.99)
        else:
            edge.p99_ms = percentile_of_counts(durations[key], 0.99)
    return sorted(edges.values(), key=lambda e: (e.source, e.target))


def _add_later_columns(conn: sqlite3.Connection) -> None:
    """Bring an access table written by an older release up to ACCESS_COLUMNS (one transaction)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(access)")}
    missing = [c for c in _LATER_ACCESS_COLUMNS if c not in have]
    if not missing:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for column in missing:
            conn.execute(f"ALTER TABLE access ADD COLUMN {column} {_LATER_ACCESS_COLUMNS[column][0]}")
        sets = ", ".join(f"{c} = {_LATER_ACCESS_COLUMNS[c][1]}" for c in missing)
        conn.execute(f"UPDATE access SET {sets}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _search_filters(query: AccessSearch) -> tuple[list[str] | None, list[Any]]:
    """WHERE clauses for an AccessSearch; None when it can match nothing (an empty request id)."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (("start_time >= ?", query.start), ("start_time < ?", query.end),
                          ("node_id = ?", query.node_id), ("node_cluster = ?", query.node_cluster),
                          ("upstream_cluster = ?", query.upstream_cluster),
                          ("route_name = ?", query.route_name), ("authority = ?", query.authority),
                          ("method = ?", query.method), ("response_code = ?", query.status),
                          ("duration_ms >= ?", query.min_duration_ms),
                          ("duration_ms < ?", query.max_duration_ms)):
        _condition(where, params, clause, value)
    if query.status_class is not None:
        where.append("response_code BETWEEN ? AND ?")
        params += [query.status_class * 100, query.status_class * 100 + 99]
    if (query.status_class or 0) >= 4 or (query.status or 0) >= 400:  # the partial access_code index applies
        where.append("response_code >= 400")
    if query.path_prefix:  # a range of the path index: every string that starts with the prefix
        where.append("path >= ? AND path < ?")
        params += [query.path_prefix, query.path_prefix + "\U0010ffff"]
    if query.response_flag:  # spelled out so the planner may use the partial access_flagged index
        where.append("flags IS NOT NULL AND instr(flags, ?) > 0")
        params.append(f",{query.response_flag},")
    if query.retried:
        where.append("retried = 1")
    if query.request_id is not None:
        key = normalize_request_id(query.request_id)
        if not key:
            return None, []
        where.append("request_id_norm = ?")
        params.append(key)
    if query.trace_id is not None:
        where.append("trace_id = ?")
        params.append(trace_id_key(query.trace_id))
    return where, params


def _index_for(query: AccessSearch) -> str | None:
    """The partial index that holds a search's few candidates (flagged or failed requests), which the
    planner, without statistics, would pass over for the time index; None: the planner's choice."""
    if query.request_id is not None or query.trace_id is not None or query.path_prefix:
        return None
    if query.response_flag:
        return "access_flagged"
    if (query.status_class or 0) >= 4 or (query.status or 0) >= 400:
        return "access_code"
    return None


def _where(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


def _condition(where: list[str], params: list[Any], clause: str, value: Any) -> None:
    """Add a one-parameter WHERE clause when its value is given (None means: no filter)."""
    if value is not None:
        where.append(clause)
        params.append(value)
