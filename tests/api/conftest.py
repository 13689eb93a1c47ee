"""API test harness: the real app served by uvicorn on a free loopback port (in a thread), a real
SqliteStore in a temporary data dir, and a seeded request seen by a gateway and a sidecar."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from meshscope.pipelines.store.sqlite import SqliteStore

from meshscope.api import create_app
from meshscope.model import AccessRecord, Alert, Span
from meshscope.settings import Settings
from tests.conftest import free_port

RID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"  # as the client sent it (version digit 4)
RID_GW = RID[:14] + "9" + RID[15:]  # the sampling digit the gateway wrote
RID_SC = RID[:14] + "b" + RID[15:]
TRACE = "463ac35c9f6413ad48485a3953bb6124"
NOW = time.time()


@dataclass
class RunningApi:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def serve(settings: Settings) -> RunningApi:
    """Start the app on a free loopback port and wait until it answers."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("API server did not start")
        time.sleep(0.02)
    return RunningApi(f"http://127.0.0.1:{port}", settings, server, thread)


def settings_for(data_dir: Path, **changes) -> Settings:
    return Settings(data_dir=data_dir, **changes)


@pytest.fixture
def api_settings(data_dir) -> Settings:
    return settings_for(data_dir, upload_max_bytes=200_000, upload_max_count=5)


@pytest.fixture
def api(api_settings) -> Iterator[RunningApi]:
    running = serve(api_settings)
    try:
        yield running
    finally:
        running.stop()


def write_records(settings: Settings, records: list) -> None:
    """Write records through a second store of the configured kind, as the pipeline would (SQLite: a
    second connection to the same file; Elasticsearch: visible to searches before this returns)."""

    async def go() -> None:
        if settings.store == "elasticsearch":
            from meshscope.pipelines.store.elasticsearch import ElasticsearchStore

            store = ElasticsearchStore(settings, refresh="wait_for")
        else:
            store = SqliteStore(settings)
        async with store:
            await store.write(records)

    # in a thread of its own: the calling thread may already run an event loop (playwright's sync API)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def lab_records(t0: float = NOW) -> list:
    """One request through the ingress gateway and the webapp sidecar, its spans, and an alert."""
    gateway = AccessRecord(
        start_time=t0,
        duration_ms=12.5,
        node_id="router~10.10.0.6~istio-ingressgateway~istio-system",
        node_cluster="istio-ingressgateway",
        log_name="als",
        request_id=RID_GW,
        trace_id=TRACE,
        span_id="48485a3953bb6124",
        method="GET",
        authority="shop.local",
        path="/catalog",
        response_code=200,
        upstream_cluster="outbound|8080||webapp",
        upstream_host="10.10.0.9:8080",
        downstream_remote="172.18.0.1:57536",
        downstream_local="10.10.0.6:8080",
        upstream_local="10.10.0.6:46612",
        attempt_count=1,
    )
    sidecar = AccessRecord(
        start_time=t0 + 0.004,
        duration_ms=7.0,
        node_id="sidecar~10.10.0.9~webapp-1~shop",
        node_cluster="webapp",
        log_name="als",
        request_id=RID_SC,
        trace_id=TRACE,
        span_id="0000000000000002",
        method="GET",
        authority="shop.local",
        path="/catalog",
        response_code=200,
        upstream_cluster="inbound|8080||",
        upstream_host="127.0.0.1:8080",
        downstream_remote="10.10.0.6:46612",
        downstream_local="10.10.0.9:8080",
        attempt_count=1,
    )
    spans = [
        Span(
            trace_id=TRACE,
            span_id="48485a3953bb6124",
            name="shop.local:80/*",
            span_kind="CLIENT",
            timestamp=int(t0 * 1e6),
            duration=12500,
            local_endpoint={"serviceName": "istio-ingressgateway"},
            remote_endpoint={"serviceName": "webapp"},
            tags={"guid:x-request-id": RID_GW, "http.method": "GET"},
        ),
        Span(
            trace_id=TRACE,
            span_id="0000000000000002",
            parent_id="48485a3953bb6124",
            name="webapp.shop.svc.cluster.local:8080/*",
            span_kind="SERVER",
            timestamp=int((t0 + 0.004) * 1e6),
            duration=7000,
            local_endpoint={"serviceName": "webapp", "ipv4": "10.10.0.9"},
            tags={"guid:x-request-id": RID_SC, "http.status_code": "200"},
        ),
    ]
    alert = Alert(
        rule="5xx-spike",
        group_key="upstream_cluster=catalog",
        state="firing",
        window_s=60,
        observed=42,
        baseline=1,
        first_seen=t0 - 30,
        last_seen=t0,
        sample_request_ids=[RID],
    )
    return [gateway, sidecar, *spans, alert]


def wait_done(client: httpx.Client, upload_id: str, timeout: float = 90) -> dict:
    """Poll an upload until its analysis has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/pcaps/{upload_id}").raise_for_status().json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"upload {upload_id} not analysed within {timeout} s")
