"""One contract for every Store: SqliteStore (a file in tmp) and ElasticsearchStore (real osmem
server on loopback) must answer the same questions the same way."""

from __future__ import annotations

import asyncio
import time

import pytest
from meshscope.pipelines.store.base import AccessQuery, AccessSearch, Store, StoreUnavailable
from meshscope.pipelines.store.elasticsearch import ElasticsearchStore
from meshscope.pipelines.store.sqlite import SqliteStore

from meshscope.model import AccessRecord, Alert, Connection, Exchange, Flow, Hop, Span
from meshscope.settings import Settings
from tests.pipelines.search_server import *  # noqa: F403 - the search_server / es_settings fixtures

NOW = time.time() // 60 * 60  # whole minute: window boundaries below are predictable
RID = "6f1c2a3e-9d1b-4c7a-8e2f-0a1b2c3d4e5f"  # the id as the app saw it (version digit 4)
RID_GATEWAY = RID[:14] + "9" + RID[15:]  # Envoy's sampling digit on the gateway hop
RID_SIDECAR = RID[:14] + "b" + RID[15:]
TRACE = "80f198ee56343ba864fe8b2a57d3eff7"


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
async def store(request, data_dir) -> Store:
    if request.param == "sqlite":
        s: Store = SqliteStore(Settings(data_dir=data_dir))
    else:
        s = ElasticsearchStore(request.getfixturevalue("es_settings"), retry_for_s=2.0, refresh="wait_for")
    await s.start()
    yield s
    await s.stop()


def access(i: int, **kw) -> AccessRecord:
    base = dict(
        start_time=NOW + i,
        node_id=f"gateway-{i % 2}",
        node_cluster="istio-ingressgateway",
        request_id=f"00000000-0000-4000-8000-{i:012d}",
        trace_id=f"{i:032x}",
        method="GET",
        authority="shop.example",
        path=f"/item/{i}",
        route_name="default",
        response_code=200,
        upstream_cluster="outbound|8080||webapp",
        attempt_count=1,
    )
    base.update(kw)
    return AccessRecord(**base)


def span(
    span_id: str,
    *,
    trace_id: str = TRACE,
    service: str = "istio-ingressgateway",
    name: str = "ingress",
    ts: float = NOW,
    duration: int = 5000,
    remote: str | None = "webapp",
    tags: dict | None = None,
    parent: str | None = None,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        name=name,
        span_kind="CLIENT",
        timestamp=int(ts * 1e6),
        duration=duration,
        local_endpoint={"serviceName": service},
        remote_endpoint={"serviceName": remote} if remote else None,
        tags=tags or {},
        annotations=[{"timestamp": int(ts * 1e6), "value": "ws"}],
    )


def exchange(rid: str, t: float, capture: str = "node.pcap") -> Exchange:
    return Exchange(
        exchange_type="http",
        conn=Connection(src="172.18.0.1", sport=57536, dst="10.10.0.6", dport=8080, capture=capture),
        request_time=t,
        method="GET",
        uri="/",
        host="shop.example",
        status=200,
        headers={"x-request-id": rid},
    )


def alert(rule: str, group: str, state: str, first: float, last: float) -> Alert:
    return Alert(
        rule=rule,
        group_key=group,
        state=state,
        window_s=60,
        observed=12,
        baseline=1,
        first_seen=first,
        last_seen=last,
        sample_request_ids=[RID],
    )


async def test_writes_are_idempotent(store):
    records = [access(i) for i in range(50)] + [
        span("a1"),
        exchange(RID, NOW),
        alert("r", "g", "firing", NOW, NOW),
    ]
    await store.write(records)
    await store.write(records)  # a replay
    await store.write(records[10:20] + [access(100)])  # partly a replay
    assert await store.count("access") == 51
    assert [await store.count(k) for k in ("span", "exchange", "alert", "flow")] == [1, 1, 1, 0]
    nodes = {n["node_id"]: n for n in await store.node_ids()}
    assert {k: v["records"] for k, v in nodes.items()} == {"gateway-0": 26, "gateway-1": 25}
    assert nodes["gateway-0"]["first_seen"] == pytest.approx(NOW)
    assert nodes["gateway-0"]["last_seen"] == pytest.approx(NOW + 100)
    assert nodes["gateway-1"]["node_cluster"] == "istio-ingressgateway"


async def test_refuses_what_is_not_a_record(store):
    with pytest.raises(ValueError):
        await store.write([access(1), {"start_time": 1}])  # type: ignore[list-item]
    assert await store.count("access") == 0  # nothing of a refused batch is written


async def test_refuses_a_record_with_a_field_of_the_wrong_type(store):
    """A malformed record is refused (ValueError, so the indexer dead-letters it), never a crash."""
    bad = span("s1")
    bad.trace_id = 12345  # type: ignore[assignment]
    with pytest.raises(ValueError):
        await store.write([bad])


async def test_request_id_lookup_finds_every_hop_whatever_the_sampling_digit(store):
    gateway = access(1, request_id=RID_GATEWAY, node_id="gateway")
    sidecar = access(2, request_id=RID_SIDECAR.upper(), node_id="webapp-sidecar")
    await store.write([sidecar, gateway, access(3)])
    for asked in (RID, RID_GATEWAY, RID_SIDECAR.upper(), RID[:14] + "a" + RID[15:]):
        found = await store.access_by_request_id(asked)
        assert [r.node_id for r in found] == ["gateway", "webapp-sidecar"]  # in time order
    assert found[1] == sidecar  # the record comes back whole
    assert await store.access_by_request_id("00000000-0000-4000-8000-999999999999") == []
    assert await store.access_by_request_id("") == []


async def test_spans_by_trace_id_and_by_request_id(store):
    root = span("a1", tags={"guid:x-request-id": RID_GATEWAY, "http.status_code": "200"})
    child = span(
        "b2",
        parent="a1",
        ts=NOW + 0.01,
        service="webapp",
        name="webapp",
        tags={"guid:x-request-id": RID_SIDECAR},
    )
    await store.write([child, root, span("c3", trace_id="1" * 32)])
    assert [s.span_id for s in await store.spans_by_trace_id(TRACE.upper())] == ["a1", "b2"]
    assert [s.span_id for s in await store.spans_by_request_id(RID)] == ["a1", "b2"]
    assert (await store.spans_by_trace_id(TRACE))[0] == root


async def test_exchanges_and_flows_by_request_id(store):
    hop = Hop(
        kind="l7-proxy", src="172.18.0.1:57536", dst="10.10.0.9:8080", request_ids=[RID_GATEWAY, RID_SIDECAR]
    )
    nat = Hop(kind="nat-dnat", src="172.18.0.1:57536", dst="10.10.0.6:8080")
    flow = Flow(hops=[nat, hop], request_id=RID, start=NOW, captures=["node.pcap"])
    other = Flow(
        hops=[
            Hop(
                kind="app-call",
                src="10.10.0.9:1",
                dst="10.10.0.8:3000",
                request_ids=["00000000-0000-4000-8000-000000000001"],
            )
        ],
        start=NOW,
    )
    await store.write(
        [
            exchange(RID_SIDECAR, NOW + 1),
            exchange(RID_GATEWAY, NOW, "gw.pcap"),
            exchange("other-id", NOW),
            flow,
            other,
        ]
    )
    found = await store.exchanges_by_request_id(RID)
    assert [e.conn.capture for e in found] == ["gw.pcap", "node.pcap"]
    assert await store.flows_by_request_id(RID_SIDECAR) == [flow]
    assert [f.id for f in await store.flows_by_request_id("00000000-0000-9000-8000-000000000001")] == [
        other.id
    ]


async def test_listing_filters_and_pages(store):
    records = [
        access(
            i,
            response_code=503 if i % 5 == 0 else 200,
            upstream_cluster="catalog" if i % 2 else "webapp",
            authority="a.example" if i < 20 else "b.example",
        )
        for i in range(30)
    ]
    await store.write(records)
    seen, cursor = [], None
    while True:
        page = await store.list_access(AccessQuery(limit=7, cursor=cursor))
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [r.start_time for r in seen] == sorted((r.start_time for r in records), reverse=True)
    assert len({r.id for r in seen}) == 30

    async def ids(**kw) -> set[str]:
        return {r.id for r in (await store.list_access(AccessQuery(limit=100, **kw))).items}

    assert await ids(status_class=5) == {r.id for r in records if r.response_code == 503}
    assert await ids(upstream_cluster="catalog", status_class=2) == {
        r.id for r in records if r.upstream_cluster == "catalog" and r.response_code == 200
    }
    assert await ids(authority="b.example", start=NOW + 25, end=NOW + 28) == {r.id for r in records[25:28]}
    assert await ids(node_id="gateway-1") == {r.id for r in records[1::2]}
    with pytest.raises(ValueError):
        await store.list_access(AccessQuery(cursor="not a cursor"))


def search_set() -> list[AccessRecord]:
    """Twenty records varied along every field the search page filters on."""
    return [
        access(
            i,
            node_id="gateway-0" if i < 10 else "sidecar-1",
            node_cluster="istio-ingressgateway" if i < 10 else "webapp",
            upstream_cluster="outbound|3000||catalog" if i % 2 else "outbound|8080||webapp",
            route_name="api" if i % 3 == 0 else "default",
            path=f"/api/v1/items/{i}" if i % 4 == 0 else f"/static/{i}.css",
            authority="a.example" if i < 15 else "b.example",
            method="POST" if i % 5 == 0 else "GET",
            response_code=(503 if i % 7 == 0 else 404 if i == 8 else 200) if i != 19 else None,
            response_flags=["UF", "URX"] if i == 14 else ["NR"] if i == 8 else [],
            attempt_count=3 if i in (14, 15) else 1,
            duration_ms=float(i * 10),
            request_id=RID_GATEWAY if i == 6 else f"00000000-0000-4000-8000-{i:012d}",
            trace_id=TRACE if i in (6, 7) else f"{i:032x}",
        )
        for i in range(20)
    ]


async def test_search_by_each_filter(store):
    records = search_set()
    await store.write(records)

    async def found(**kw) -> list[int]:
        page = await store.search_access(AccessSearch(limit=100, **kw))
        return sorted(int(r.start_time - NOW) for r in page.items)

    assert await found() == list(range(20))
    assert await found(start=NOW + 5, end=NOW + 8) == [5, 6, 7]
    assert await found(node_id="sidecar-1", end=NOW + 12) == [10, 11]
    assert await found(node_cluster="istio-ingressgateway") == list(range(10))
    assert await found(upstream_cluster="outbound|3000||catalog") == list(range(1, 20, 2))
    assert await found(route_name="api") == [0, 3, 6, 9, 12, 15, 18]
    assert await found(path_prefix="/api/v1/") == [0, 4, 8, 12, 16]
    assert await found(path_prefix="/api/v1/items/1") == [12, 16]
    assert await found(authority="b.example") == [15, 16, 17, 18, 19]
    assert await found(method="POST") == [0, 5, 10, 15]
    assert await found(status_class=5) == [0, 7, 14]
    assert await found(status_class=4) == [8]
    assert await found(status=503, node_id="sidecar-1") == [14]
    assert await found(response_flag="URX") == [14]
    assert await found(response_flag="U") == []  # a whole flag, not a part of one
    assert await found(retried=True) == [14, 15]
    assert await found(min_duration_ms=175) == [18, 19]
    for rid in (RID, RID_GATEWAY, RID_SIDECAR.upper()):  # any sampling digit
        assert await found(request_id=rid) == [6]
    assert await found(request_id="") == []
    assert await found(trace_id=TRACE.upper()) == [6, 7]
    assert await found(trace_id=TRACE, method="GET", status_class=2) == [6]
    page = await store.search_access(AccessSearch(limit=4, authority="a.example"))
    more = await store.search_access(AccessSearch(limit=4, authority="a.example", cursor=page.next_cursor))
    assert [r.start_time - NOW for r in page.items + more.items] == [14, 13, 12, 11, 10, 9, 8, 7]


async def test_search_histogram_by_status_class(store):
    await store.write([*search_set(), access(99, start_time=NOW - 3600)])
    buckets = await store.access_histogram(AccessSearch(start=NOW, end=NOW + 20), 10)
    assert [(b.start - NOW, b.counts) for b in buckets] == [
        (0, {"2xx": 7, "4xx": 1, "5xx": 2}),
        (10, {"2xx": 8, "5xx": 1, "none": 1}),
    ]
    narrowed = await store.access_histogram(AccessSearch(node_cluster="webapp", status_class=5), 5)
    assert [(b.start - NOW, b.counts) for b in narrowed] == [(10, {"5xx": 1})]
    assert await store.access_histogram(AccessSearch(request_id=""), 5) == []
    with pytest.raises(ValueError):
        await store.access_histogram(AccessSearch(), 0)


async def test_search_values_for_autocomplete(store):
    await store.write(search_set())
    assert await store.search_values("authority") == ["a.example", "b.example"]  # most frequent first
    assert await store.search_values("authority", "b") == ["b.example"]
    assert await store.search_values("upstream_cluster", "outbound|3") == ["outbound|3000||catalog"]
    assert await store.search_values("node_id") == ["gateway-0", "sidecar-1"]
    assert await store.search_values("node_cluster", "web") == ["webapp"]
    assert await store.search_values("method", limit=1) == ["GET"]
    assert set(await store.search_values("response_flags")) == {"UF", "URX", "NR"}
    assert await store.search_values("response_flags", "UR") == ["URX"]
    assert await store.search_values("response_code", "5") == ["503"]
    assert await store.search_values("route_name", start=NOW + 10, end=NOW + 13) == ["default", "api"]
    assert await store.search_values("authority", start=NOW + 15) == ["b.example"]
    with pytest.raises(ValueError):
        await store.search_values("doc")


async def test_traffic_edges_for_the_service_graph(store):
    records = [
        access(
            i,
            node_cluster="istio-ingressgateway",
            upstream_cluster="outbound|8080||webapp",
            duration_ms=float(i + 1),
            response_code=503 if i < 5 else 200,
            attempt_count=2 if i == 7 else 1,
        )
        for i in range(100)
    ] + [
        access(200 + i, node_cluster="webapp", upstream_cluster="outbound|3000||catalog", duration_ms=4.0)
        for i in range(3)
    ]
    records.append(access(999, start_time=NOW - 7200, node_cluster="old"))
    await store.write(records)
    edges = await store.traffic_edges(NOW, NOW + 1000)
    got = [(e.source, e.target, e.count, e.count_5xx, e.count_retried) for e in edges]
    assert got == [
        ("istio-ingressgateway", "outbound|8080||webapp", 100, 5, 1),
        ("webapp", "outbound|3000||catalog", 3, 0, 0),
    ]
    assert edges[0].p99_ms == pytest.approx(99, abs=1.5)  # Elasticsearch's percentiles interpolate
    assert edges[1].p99_ms == pytest.approx(4)


async def test_aggregates_per_window_and_group(store):
    records = [
        access(
            i,
            start_time=NOW + i,
            response_code=502 if i in (3, 4, 12) else 200,
            attempt_count=2 if i == 5 else 1,
            response_flags=["URX"] if i == 14 else [],
            upstream_cluster="catalog" if i < 15 else "webapp",
            route_name="r1" if i % 2 else "r2",
        )
        for i in range(20)
    ]
    records.append(access(99, start_time=NOW - 3600))  # outside the range asked for
    await store.write(records)
    aggs = await store.aggregates(NOW, NOW + 20, 10, ["upstream_cluster"])
    got = [
        (a.window_start - NOW, a.group["upstream_cluster"], a.count, a.count_5xx, a.count_retried)
        for a in aggs
    ]
    assert got == [(0, "catalog", 10, 2, 1), (10, "catalog", 5, 1, 1), (10, "webapp", 5, 0, 0)]
    both = await store.aggregates(NOW, NOW + 20, 20, ["upstream_cluster", "route_name"])
    assert {(a.group["upstream_cluster"], a.group["route_name"]): a.count for a in both} == {
        ("catalog", "r1"): 7,
        ("catalog", "r2"): 8,
        ("webapp", "r1"): 3,
        ("webapp", "r2"): 2,
    }
    by_authority = await store.aggregates(NOW, NOW + 20, 60, ["authority"])
    assert [(a.group, a.count) for a in by_authority] == [({"authority": "shop.example"}, 20)]
    with pytest.raises(ValueError):
        await store.aggregates(NOW, NOW + 20, 10, ["doc"])


async def test_alert_filters(store):
    await store.write(
        [
            alert("5xx-spike", "upstream_cluster=catalog", "firing", NOW, NOW + 10),
            alert("5xx-spike", "upstream_cluster=catalog", "resolved", NOW, NOW + 70),
            alert("5xx-spike", "upstream_cluster=webapp", "firing", NOW + 100, NOW + 110),
            alert("retry-spike", "upstream_cluster=catalog", "firing", NOW - 1000, NOW - 900),
        ]
    )
    assert [a.state for a in await store.alerts(rule="5xx-spike", group_key="upstream_cluster=catalog")] == [
        "resolved",
        "firing",
    ]  # newest first
    assert {a.group_key for a in await store.alerts(state="firing", start=NOW)} == {
        "upstream_cluster=catalog",
        "upstream_cluster=webapp",
    }
    assert [a.rule for a in await store.alerts(end=NOW - 500)] == ["retry-spike"]
    assert len(await store.alerts(limit=2)) == 2


async def test_zipkin_queries(store):
    t2 = "2" * 32
    await store.write(
        [
            span(
                "a1",
                service="Istio-IngressGateway",
                name="Ingress",
                tags={"http.status_code": "503", "error": "true"},
            ),
            span(
                "b2",
                parent="a1",
                service="webapp",
                name="GET /items",
                remote="catalog",
                duration=200_000,
                ts=NOW + 0.001,
            ),
            span(
                "c3",
                trace_id=t2,
                service="webapp",
                name="GET /cart",
                remote=None,
                ts=NOW - 30,
                tags={"http.status_code": "200"},
            ),
            span("d4", trace_id="3" * 32, service="webapp", name="old", remote=None, ts=NOW - 7200),
        ]
    )
    assert await store.service_names() == ["istio-ingressgateway", "webapp"]
    assert await store.span_names("WEBAPP") == ["get /cart", "get /items", "old"]
    assert await store.remote_service_names("istio-ingressgateway") == ["webapp"]
    assert await store.remote_service_names("webapp") == ["catalog"]
    end_ms, hour = int(NOW * 1000) + 1000, 3_600_000

    async def traces(**kw) -> list[list[str]]:
        args = dict(
            service=None,
            span_name=None,
            end_ts_ms=end_ms,
            lookback_ms=hour,
            min_duration_us=None,
            max_duration_us=None,
            tags={},
            limit=10,
        )
        args.update(kw)
        return [[s.span_id for s in t] for t in await store.find_traces(**args)]

    assert await traces() == [["a1", "b2"], ["c3"]]  # newest first, whole traces
    assert await traces(service="webapp", span_name="get /cart") == [["c3"]]
    assert await traces(tags={"http.status_code": "503"}) == [["a1", "b2"]]
    assert await traces(tags={"error": None}) == [["a1", "b2"]]
    assert await traces(tags={"ws": None, "http.status_code": "200"}) == [["c3"]]  # annotation value
    assert await traces(min_duration_us=100_000) == [["a1", "b2"]]
    assert await traces(max_duration_us=100_000, service="webapp") == [["c3"]]
    assert await traces(lookback_ms=3 * hour) == [["a1", "b2"], ["c3"], ["d4"]]
    assert await traces(limit=1) == [["a1", "b2"]]
    assert await traces(end_ts_ms=end_ms - 20_000) == [["c3"]]


async def test_retention_deletes_only_old_records(store):
    old, new = NOW - 10 * 86400, NOW
    await store.write(
        [
            access(1, start_time=old),
            access(2, start_time=new),
            span("o", ts=old),
            span("n", ts=new),
            alert("r", "g", "firing", old, old),
            alert("r", "g", "firing", new, new),
            exchange(RID, old),
            exchange(RID, new),
        ]
    )
    assert await store.apply_retention(now=NOW) > 0
    assert [r.start_time for r in (await store.list_access(AccessQuery())).items] == [new]
    assert [s.span_id for s in await store.spans_by_trace_id(TRACE)] == ["n"]
    assert [a.last_seen for a in await store.alerts()] == [new]
    assert [e.request_time for e in await store.exchanges_by_request_id(RID)] == [new]
    assert [n["records"] for n in await store.node_ids()] == [1]
    assert await store.apply_retention(now=NOW) == 0


@pytest.mark.elasticsearch
@pytest.mark.slow
async def test_search_server_cut_mid_write_loses_nothing_after_retry(search_server, es_settings):
    """The network path dies while bulk writes are in flight: the writer gets StoreUnavailable;
    once it is back, writing the same batches again stores every record exactly once."""
    batches = [[access(b * 2000 + i) for i in range(2000)] for b in range(8)]
    async with ElasticsearchStore(es_settings, retry_for_s=1.5) as store:
        started = asyncio.Event()

        async def writer() -> None:
            for batch in batches:
                started.set()
                await store.write(batch)

        task = asyncio.create_task(writer())
        await started.wait()
        await asyncio.sleep(0.3)
        search_server.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await task
        finally:
            search_server.resume()
        stored_while_cut = await store.count("access")
        assert stored_while_cut < 16000  # cut part-way (usually after some batches got through)
        for batch in batches:  # the indexer's retry: everything again, from the first batch
            await store.write(batch)
        assert await store.count("access") == 16000
        nodes = await store.node_ids()
        assert sum(n["records"] for n in nodes) == 16000
        for i in (0, 7999, 15999):
            assert len(await store.access_by_request_id(f"00000000-0000-4000-8000-{i:012d}")) == 1


@pytest.mark.elasticsearch
async def test_search_server_killed_is_unavailable_then_recovers(search_server, es_settings):
    async with ElasticsearchStore(es_settings, retry_for_s=1.0) as store:
        await store.write([access(1)])
        search_server.kill_backend()
        try:
            with pytest.raises(StoreUnavailable):
                await store.write([access(2)])
            with pytest.raises(StoreUnavailable):
                await store.access_by_request_id(RID)
        finally:
            search_server.restart_backend()
        await store.start()  # osmem kept nothing: templates again
        await store.write([access(2)])
        assert await store.count("access") == 1


async def test_sqlite_keeps_records_across_a_restart_and_reads_while_writing(data_dir):
    settings = Settings(data_dir=data_dir)
    async with SqliteStore(settings) as store:
        await store.write([access(i) for i in range(10)])
        big = [access(i) for i in range(10, 20_010)]
        writing = asyncio.create_task(store.write(big))
        seen = await store.count("access")  # WAL: a reader answers during the write, never half of a batch
        await writing
        assert seen in (10, 20_010)
    async with SqliteStore(settings) as store:
        assert await store.count("access") == 20_010
        assert [r.path for r in await store.access_by_request_id(big[-1].request_id)] == [big[-1].path]


async def test_sqlite_histogram_rollup_counts_each_record_once(data_dir):
    """The per-10-second rollup behind the histogram stays equal to the records after replays,
    partial replays and retention that cuts a slot in two (checked against the raw scan: 5 s buckets)."""
    records = [
        access(i, start_time=NOW + i * 0.7, response_code=503 if i % 4 == 0 else 200,
               upstream_cluster="catalog" if i % 3 else "webapp")
        for i in range(100)
    ]
    async with SqliteStore(Settings(data_dir=data_dir)) as store:
        await store.write(records)
        await store.write(records[:30])  # a replay
        await store.write(records[20:40] + [access(500, start_time=NOW + 65.5)])  # partly one

        async def both(**kw) -> tuple[dict, dict]:
            query = AccessSearch(start=NOW - 3.3, end=NOW + 200, **kw)
            rolled = await store.access_histogram(query, 10)  # whole slots from the rollup
            raw = await store.access_histogram(query, 5)  # 5 s buckets: the access table only
            by_ten: dict[float, dict] = {}
            for b in raw:
                into = by_ten.setdefault(b.start // 10 * 10, {})
                for k, n in b.counts.items():
                    into[k] = into.get(k, 0) + n
            return {b.start: b.counts for b in rolled}, by_ten

        for kw in ({}, {"upstream_cluster": "catalog"}, {"status_class": 5}, {"node_id": "gateway-1"}):
            rolled, raw = await both(**kw)
            assert rolled == raw and rolled, kw
        assert sum(sum(c.values()) for c in (await both())[0].values()) == 101
        await store.apply_retention(now=NOW + 33.5 + store.settings.retention_days * 86400)
        rolled, raw = await both()
        assert rolled == raw and sum(sum(c.values()) for c in rolled.values()) == await store.count("access")


async def test_sqlite_file_of_an_older_release_gains_the_search_columns(data_dir):
    """An access table without path, duration and flags columns, nor a rollup: opening adds and fills them."""
    import sqlite3

    from meshscope.pipelines.store.sqlite import ACCESS_COLUMNS, TABLES, access_row

    settings = Settings(data_dir=data_dir)
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(settings.db_path)
    old.executescript(TABLES.replace("path TEXT, duration_ms REAL, flags TEXT,", ""))
    columns = ACCESS_COLUMNS[: ACCESS_COLUMNS.index("doc") + 1]
    records = search_set()
    old.executemany(
        f"INSERT INTO access ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [access_row(r)[: len(columns)] for r in records],
    )
    old.commit()
    old.close()
    async with SqliteStore(settings) as store:
        async def found(**kw) -> list[int]:
            page = await store.search_access(AccessSearch(limit=100, **kw))
            return sorted(int(r.start_time - NOW) for r in page.items)

        assert await found(path_prefix="/api/v1/items/1") == [12, 16]
        assert await found(response_flag="URX") == [14]
        assert await found(min_duration_ms=175) == [18, 19]
        buckets = await store.access_histogram(AccessSearch(start=NOW, end=NOW + 20), 10)
        assert sum(sum(b.counts.values()) for b in buckets) == 20
