"""`meshscope api` and `meshscope pipeline` started while the search server (osmem) is unreachable: the API
serves and answers 503 on store queries, the pipeline waits; both work once the server is back.
The search path is cut at the test bridge (connections refused), as a cluster that is down would be."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from meshscope.pipelines.bus.kafka import KafkaBus
from meshscope.pipelines.store.elasticsearch import ElasticsearchStore

from meshscope.settings import Settings
from tests.conftest import free_port, stop_process
from tests.pipelines.traffic import access
from tests.stack.test_up import MESHSCOPE, _wait_for

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]


def _settings(tmp_path: Path, search_server, **changes) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(data_dir=tmp_path, store="elasticsearch", elasticsearch_url=search_server.url,
                    elasticsearch_index_prefix=f"down{run}-", kafka_topic_prefix=f"down{run}.",
                    elasticsearch_retry_s=2.0, **changes)


def _env(settings: Settings) -> dict[str, str]:
    names = ("data_dir", "store", "elasticsearch_url", "elasticsearch_index_prefix", "elasticsearch_retry_s",
             "bus", "kafka_bootstrap", "kafka_topic_prefix")
    return {**os.environ, **{f"MESHSCOPE_{n.upper()}": str(getattr(settings, n)) for n in names}}


def test_api_answers_503_while_search_is_down_then_serves(tmp_path, search_server):
    settings = _settings(tmp_path, search_server)
    store = ElasticsearchStore(settings, refresh="wait_for")

    async def seed() -> None:
        await store.start()
        await store.write([access(i) for i in range(3)])
        await store.stop()

    asyncio.run(seed())
    port = free_port()
    search_server.pause()
    proc = subprocess.Popen([*MESHSCOPE, "api", "--port", str(port), "--log-level", "warning"],
                            env=_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        def answers() -> int | None:
            try:
                return api.get("/healthz").status_code
            except httpx.TransportError:
                assert proc.poll() is None, "the API exited while the search server was down"
                return None

        assert _wait_for(answers, 60, "the API to serve with the search server down") == 200
        down = api.get("/api/records")
        assert down.status_code == 503 and "store unavailable" in down.json()["detail"]
        search_server.resume()
        up = api.get("/api/records")
        assert up.status_code == 200 and len(up.json()["items"]) == 3
    finally:
        search_server.resume()
        api.close()
        stop_process(proc)
    # uvicorn shuts down cleanly on SIGTERM and then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), proc.stderr.read()[-2000:]


@pytest.mark.kafka
def test_pipeline_waits_for_search_then_indexes(tmp_path, search_server, tansu):
    settings = _settings(tmp_path, search_server, bus="kafka", kafka_bootstrap=tansu.bootstrap)
    records = [access(i) for i in range(200)]

    async def publish() -> None:
        bus = KafkaBus.from_settings(settings)
        await bus.start()
        await bus.publish("access", records)
        await bus.stop()

    async def stored() -> int:
        store = ElasticsearchStore(settings)
        await store.start()
        try:
            await store.es.indices.refresh(index=store.pattern("access"))
            return await store.count("access")
        finally:
            await store.stop()

    asyncio.run(publish())
    log = tmp_path / "pipeline.log"
    search_server.pause()
    proc = subprocess.Popen([*MESHSCOPE, "pipeline"], env=_env(settings), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "store not reachable yet, waiting" in log.read_text(), 60,
                  "the pipeline to say it waits for the store")
        assert proc.poll() is None, log.read_text()[-2000:]
        search_server.resume()
        _wait_for(lambda: asyncio.run(stored()) == len(records), 90, "the records in the search server")
    finally:
        search_server.resume()
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
