"""Every filter of the search page, alone and combined, against both stores: the histogram and the paged
list must equal a plain count of the records. SQLite answers from its rollups (10-second slots, duration
buckets) and reads only the slots they name; these cases put minimum durations on and between bucket
edges, ranges that cut slots, matches that are rare, and none at all."""

from __future__ import annotations

import random
from dataclasses import fields

from meshscope.pipelines.store.base import AccessSearch
from meshscope.pipelines.store.indexed import status_class_name
from meshscope.pipelines.store.sqlite_rollup import EDGES_MS

from meshscope.model import AccessRecord
from tests.pipelines.search_server import *  # noqa: F403 - the search_server / es_settings fixtures
from tests.pipelines.test_store_contract import NOW, access, store  # noqa: F401 - store: the fixture

COUNT = 1200
CLUSTERS = ("outbound|3000||catalog", "outbound|8080||webapp", "outbound|80||ext")
START, END = NOW + 3.3, NOW + 1200 - 4.1  # neither on a 10-second slot edge


def records() -> list[AccessRecord]:
    rng = random.Random(18)
    out = []
    for i in range(COUNT):
        code = rng.choice([200] * 12 + [404, 503, 500, None])
        out.append(access(
            i, start_time=NOW + i * 0.99 + rng.random() * 0.5,
            node_id=rng.choice(["gateway-0", "gateway-1", "sidecar-2"]),
            node_cluster=rng.choice(["istio-ingressgateway", "webapp"]),
            upstream_cluster=rng.choice(CLUSTERS),
            route_name=rng.choice(["default", "api", None]),
            authority=rng.choice(["a.example", "b.example"]),
            method=rng.choice(["GET", "GET", "POST"]),
            path=rng.choice(["/api/v1/items/", "/static/"]) + str(i),
            response_code=code,
            response_flags=(
                ["URX"] if i % 97 == 0 else ["UF", "URX"] if i % 131 == 0 else ["NR"] if code == 404 else []
            ),
            attempt_count=2 if i % 53 == 0 else 1,
            # bucket edges exactly, just under them, and in between; some without a duration
            duration_ms=None if i % 89 == 0 else rng.choice([*EDGES_MS, 9.99, 0.4, 333.0, 1500.5, 75000.0]),
        ))
    return out


def matches(r: AccessRecord, q: AccessSearch) -> bool:
    code = r.response_code
    return all((
        q.start is None or r.start_time >= q.start,
        q.end is None or r.start_time < q.end,
        q.node_id is None or r.node_id == q.node_id,
        q.node_cluster is None or r.node_cluster == q.node_cluster,
        q.upstream_cluster is None or r.upstream_cluster == q.upstream_cluster,
        q.route_name is None or r.route_name == q.route_name,
        q.authority is None or r.authority == q.authority,
        q.method is None or r.method == q.method,
        q.path_prefix is None or (r.path or "").startswith(q.path_prefix),
        q.status is None or code == q.status,
        q.status_class is None or (code is not None and code // 100 == q.status_class),
        q.response_flag is None or q.response_flag in r.response_flags,
        not q.retried or r.retried,
        q.min_duration_ms is None or (r.duration_ms is not None and r.duration_ms >= q.min_duration_ms),
    ))


CASES = [
    {}, {"node_id": "gateway-1"}, {"node_cluster": "webapp"}, {"upstream_cluster": "outbound|80||ext"},
    {"route_name": "api"}, {"authority": "b.example"}, {"method": "POST"},
    {"path_prefix": "/api/v1/items/1"}, {"status": 404}, {"status_class": 5},
    {"response_flag": "URX"}, {"response_flag": "UF"}, {"retried": True},
    {"min_duration_ms": 100}, {"min_duration_ms": 9.99}, {"min_duration_ms": 333}, {"min_duration_ms": 0.5},
    {"min_duration_ms": 70000},
    {"node_id": "gateway-0", "min_duration_ms": 10},
    {"node_id": "gateway-0", "min_duration_ms": 12.5, "status_class": 2},
    {"upstream_cluster": "outbound|3000||catalog", "status_class": 5, "min_duration_ms": 50},
    {"route_name": "default", "authority": "a.example", "method": "GET", "response_flag": "NR"},
    {"path_prefix": "/static/", "min_duration_ms": 1500},
    {"response_flag": "UF", "node_id": "sidecar-2", "retried": True},
    {"authority": "nowhere.example"}, {"response_flag": "UT"}, {"status": 418},
]


async def test_histogram_and_pages_equal_a_plain_count(store):  # noqa: F811 - the fixture
    stored = records()
    await store.write(stored)
    for case in CASES:
        await check(store, stored, case)


async def check(store, stored: list[AccessRecord], case: dict) -> None:  # noqa: F811 - the fixture
    query = AccessSearch(start=START, end=END, **case)
    expected = sorted(
        (r for r in stored if matches(r, query)), key=lambda r: (r.start_time, r.id), reverse=True
    )

    for bucket_s in (60, 30):  # whole slots (from a rollup) and 30-second bars
        counted: dict[tuple[float, str], int] = {}
        for r in expected:
            key = (r.start_time // bucket_s * bucket_s, status_class_name(r.response_code))
            counted[key] = counted.get(key, 0) + 1
        buckets = await store.access_histogram(AccessSearch(**vars_of(query)), bucket_s)
        got = {(b.start, k): n for b in buckets for k, n in b.counts.items()}
        assert got == counted, (bucket_s, case)

    seen: list[str] = []
    cursor = None
    for _ in range(COUNT):  # bounded: at most one page per record
        page = await store.search_access(AccessSearch(**vars_of(query), limit=37, cursor=cursor))
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [r.id for r in expected], case


def vars_of(query: AccessSearch) -> dict:
    return {f.name: getattr(query, f.name) for f in fields(query) if f.name not in ("limit", "cursor")}


async def test_sqlite_map_of_many_records_from_the_rollup(data_dir, monkeypatch):
    """Over many records the service map counts from the detailed rollup (the partial slots at either
    end scanned): the same counts as the exact scan, and a p99 inside the exact p99's duration bucket."""
    from meshscope.pipelines.store import sqlite_rollup
    from meshscope.pipelines.store.sqlite import SqliteStore

    from meshscope.settings import Settings

    async with SqliteStore(Settings(data_dir=data_dir)) as sqlite:
        await sqlite.write(records())
        exact = await sqlite.traffic_edges(START, END)
        monkeypatch.setattr(sqlite_rollup, "EXACT_MAP_RECORDS", 0)
        rolled = await sqlite.traffic_edges(START, END)
    assert len(exact) == len(rolled) >= 6
    for e, r in zip(exact, rolled, strict=True):
        assert (e.source, e.target, e.count, e.count_5xx, e.count_retried) == (
            r.source, r.target, r.count, r.count_5xx, r.count_retried)
        k = sqlite_rollup.duration_bucket(e.p99_ms)
        assert sqlite_rollup.EDGES_MS[k] <= r.p99_ms <= sqlite_rollup.EDGES_MS[min(k + 1, len(EDGES_MS) - 1)]
