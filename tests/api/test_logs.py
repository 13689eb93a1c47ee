"""Access-log import: ``POST /api/logs`` and ``meshscope logs import`` (through the API and --direct)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from meshscope.settings import Settings
from tests.api.conftest import serve, settings_for
from tests.collector.test_access_log_lines import ENVOY_LINE, ISTIO_LINE, JSON_LINE, RID, TCP_LINE
from tests.conftest import free_port
from tests.pipelines.conftest import tansu  # noqa: F401 - fixture

TOKEN = "logs-token-for-tests"


def lines(n: int, start: int = 0) -> str:
    """n distinct Istio-format lines (request ids differ in their last digits)."""
    return "".join(ISTIO_LINE.replace(RID, f"{RID[:-6]}{i:06d}") for i in range(start, start + n))


def test_post_logs_mixed_formats_prefixes_gzip_and_reimport(data_dir):
    running = serve(settings_for(data_dir))
    try:
        with running.client() as c:
            body = ("[pod/productpage-v1-abc/istio-proxy] " + ISTIO_LINE + "not a log line\n" + TCP_LINE
                    + ENVOY_LINE + JSON_LINE + "\n" + lines(30))
            r = c.post("/api/logs", params={"node_id": "upload"}, content=gzip.compress(body.encode()))
            assert r.status_code == 200, r.text
            report = r.json()
            assert report["records"] == report["stored"] == 34
            assert report["alerts"].startswith("alerts were not evaluated")  # no bus, no pipeline here
            assert report["failed"] == 1 and report["blank"] == 1
            assert report["errors"][0]["line"] == 2 and report["errors"][0]["text"] == "not a log line"
            assert report["by_format"] == {"istio": 32, "envoy": 1, "istio-json": 1}
            page = c.get("/api/records", params={"limit": 1000}).json()["items"]
            assert len(page) == 34
            by_node = {p["node_id"] for p in page}
            assert by_node == {"productpage-v1-abc", "upload"}
            prefixed = next(p for p in page if p["node_id"] == "productpage-v1-abc")
            assert prefixed["log_name"] == "istio-proxy" and prefixed["response_flags"] == ["UF", "URX"]
            # the same file again (plain this time, Content-Encoding gzip is not needed): nothing new
            again = c.post("/api/logs", params={"node_id": "upload"}, content=body.encode()).json()
            assert again["records"] == 34
            assert len(c.get("/api/records", params={"limit": 1000}).json()["items"]) == 34
            proxies = {p["node_id"]: p["records"] for p in c.get("/api/proxies").json()["items"]}
            assert proxies == {"productpage-v1-abc": 1, "upload": 33}
            # a custom format; a bad one is a 400 with a message; corrupt gzip is a 400
            fmt = "%START_TIME% %RESPONSE_CODE% %REQ(X-REQUEST-ID)%"
            got = c.post("/api/logs", params={"format": fmt, "node_id": "custom"},
                         content=b"2024-05-01T12:00:00Z 204 custom-id\n").json()
            assert got["by_format"] == {"custom": 1}
            assert c.get("/api/traces/custom-id").status_code == 200
            bad = c.post("/api/logs", params={"format": "no operators"}, content=b"x\n")
            assert bad.status_code == 400 and "no %OPERATOR%" in bad.json()["detail"]
            corrupt = c.post("/api/logs", content=gzip.compress(body.encode())[:200])
            assert corrupt.status_code == 400 and "gzip" in corrupt.json()["detail"]
    finally:
        running.stop()


def test_post_logs_needs_the_token_beyond_loopback(data_dir):
    running = serve(settings_for(data_dir, host="0.0.0.0", api_token=TOKEN))
    try:
        with running.client() as c:
            assert c.post("/api/logs", content=ISTIO_LINE.encode()).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            ok = c.post("/api/logs", content=ISTIO_LINE.encode(), headers=auth)
            assert ok.status_code == 200 and ok.json()["stored"] == 1
    finally:
        running.stop()


def meshscope(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshscope.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, input=stdin)


def test_cli_import_through_the_api_and_direct(data_dir, tmp_path):
    log = tmp_path / "access.log.gz"
    log.write_bytes(gzip.compress((lines(20) + "broken\n").encode()))
    running = serve(settings_for(data_dir, host="0.0.0.0", api_token=TOKEN))
    env = os.environ | {"MESHSCOPE_DATA_DIR": str(data_dir), "MESHSCOPE_API_TOKEN": TOKEN}
    try:
        out = meshscope(env, "logs", "import", str(log), "--api", running.url, "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert (report["file"], report["records"], report["failed"]) == (str(log), 20, 1)
        assert report["errors"] == [{"line": 21, "reason": report["errors"][0]["reason"], "text": "broken"}]
        text = meshscope(env, "logs", "import", str(log), "--api", running.url)
        assert "20 records (istio 20), 1 unreadable" in text.stdout and "line 21:" in text.stdout
        assert "alerts were not evaluated" in text.stdout  # this API has no bus to a pipeline
        wrong = meshscope(env | {"MESHSCOPE_API_TOKEN": "wrong"}, "logs", "import", str(log),
                          "--api", running.url)
        assert wrong.returncode == 2 and "refused the import (401)" in wrong.stderr
    finally:
        running.stop()
    # --direct: standard input, into the configured store; the first import's records are not doubled
    direct = meshscope(env, "logs", "import", "-", "--direct", "--node-id", "access.log.gz", "--json",
                       stdin=lines(25))
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["stored"] == 25
    assert json.loads(direct.stdout)["alerts"].startswith("alerts were not evaluated: --direct")
    records = meshscope(env, "records", "--limit", "1000", "--json")
    items = json.loads(records.stdout)["items"]
    assert len(items) == 25 and {i["node_id"] for i in items} == {"access.log.gz"}
    down = meshscope(env, "logs", "import", str(log), "--api", "http://127.0.0.1:9")
    assert down.returncode == 2 and "cannot reach the API" in down.stderr
    missing = meshscope(env, "logs", "import", str(tmp_path / "nope.log"), "--direct")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


RULES = """
rules:
  - {name: imported-5xx, type: threshold, metric: count, threshold: 10, timeframe: 30s,
     filter: {status_class: 5}, query_key: upstream_cluster, realert: 1h}
"""


def _dated(n: int, when: float, tag: str) -> str:
    """n Istio-format 503 lines at ``when`` (epoch seconds), request ids tagged."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
    return "".join(ISTIO_LINE.replace("2024-05-01T12:00:00.123Z", stamp).replace(RID, f"{tag}-{i:04d}")
                   for i in range(n))


async def test_imported_logs_take_the_bus_and_fire_the_live_alerts(data_dir, tmp_path):
    """Under ``meshscope up`` (collector, bus with its write-ahead log, pipeline and API in one process)
    ``POST /api/logs`` publishes like the live receivers: a 5xx burst dated now fires the alert; the
    same burst from yesterday is stored, with its old times kept, and fires nothing; a re-import stores
    nothing twice."""
    from meshscope.stack import Stack

    (tmp_path / "rules.yaml").write_text(RULES)
    settings = Settings(data_dir=data_dir, api_port=free_port(), zipkin_port=free_port(),
                        als_port=free_port(), otlp_grpc_port=0, otlp_http_port=0,
                        alert_rules=tmp_path / "rules.yaml")
    stack = Stack(settings, with_proxy=False)
    await stack.start()
    try:
        async with httpx.AsyncClient(base_url=stack.urls.api, timeout=30) as c:
            yesterday = time.time() - 86400
            old = await c.post("/api/logs", params={"node_id": "old"}, content=_dated(15, yesterday, "old"))
            assert old.status_code == 200 and old.json()["published"] == 15

            async def records() -> list:
                return (await c.get("/api/records", params={"limit": 1000})).json()["items"]

            async def alerts() -> list:
                return (await c.get("/api/alerts")).json()["items"]

            assert await _until(lambda: _count(records, 15))
            stored = await records()
            assert min(r["start_time"] for r in stored) == pytest.approx(yesterday, abs=1)  # not clamped
            await asyncio.sleep(1)
            assert await alerts() == []  # yesterday's burst pages nobody
            burst = _dated(12, time.time(), "now")
            now = await c.post("/api/logs", params={"node_id": "now"}, content=burst)
            assert now.json()["published"] == 12
            assert await _until(lambda: _nonempty(alerts))
            (fired,) = await alerts()
            assert fired["rule"] == "imported-5xx" and fired["state"] == "firing"
            assert all(rid.startswith("now-") for rid in fired["sample_request_ids"])
            again = await c.post("/api/logs", params={"node_id": "now"}, content=burst)
            assert again.json()["published"] == 12
            await asyncio.sleep(1)
            assert len(await records()) == 27
    finally:
        await stack.stop()


async def _until(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def _count(records, n: int) -> bool:
    return len(await records()) >= n


async def _nonempty(alerts) -> bool:
    return bool(await alerts())


@pytest.mark.kafka
@pytest.mark.slow
def test_standalone_api_imports_through_kafka_to_the_pipeline_and_its_alerts(data_dir, tmp_path,
                                                                             tansu):  # noqa: F811
    """The scale-out shape: ``meshscope api`` and ``meshscope pipeline`` as separate processes over a
    real Kafka-protocol broker (Tansu). ``POST /api/logs`` publishes to the bus with the collector's
    publisher; the pipeline stores the records and its alert rule fires on the imported 5xx burst. A
    broker that hangs mid-import does not lose the records: the API's spool holds them until it answers."""
    (tmp_path / "rules.yaml").write_text(RULES)
    api_port = free_port()
    env = os.environ | {"MESHSCOPE_BUS": "kafka", "MESHSCOPE_KAFKA_BOOTSTRAP": tansu.bootstrap,
                        "MESHSCOPE_DATA_DIR": str(data_dir),
                        "MESHSCOPE_ALERT_RULES": str(tmp_path / "rules.yaml")}
    logs = {name: tmp_path / f"{name}.log" for name in ("pipeline", "api")}
    procs = {name: subprocess.Popen([sys.executable, "-m", "meshscope.cli", *args], env=env,
                                    stdout=logs[name].open("w"), stderr=subprocess.STDOUT)
             for name, args in (("pipeline", ["pipeline"]), ("api", ["api", "--port", str(api_port)]))}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as c:
            _wait_until(lambda: "indexing and alerting" in logs["pipeline"].read_text(), 60, "the pipeline")
            _wait_until(lambda: _answers(c), 60, "the API")
            yesterday = _dated(15, time.time() - 86400, "old")
            old = c.post("/api/logs", params={"node_id": "old"}, content=yesterday)
            assert old.status_code == 200, old.text
            assert old.json()["published"] == 15 and "alerts" not in old.json()

            def records() -> list:
                return c.get("/api/records", params={"limit": 1000}).json()["items"]

            _wait_until(lambda: len(records()) == 15, 60, "the pipeline to store the imported records")
            assert c.get("/api/alerts").json()["items"] == []  # yesterday's burst pages nobody
            tansu.pause()  # a hung broker: the API's publisher spools after its publish timeout
            try:
                now = c.post("/api/logs", params={"node_id": "now"}, content=_dated(12, time.time(), "now"))
                assert now.status_code == 200 and now.json()["published"] == 12
            finally:
                tansu.resume()
            _wait_until(lambda: c.get("/api/alerts").json()["items"], 60, "the imported burst's alert")
            (fired,) = c.get("/api/alerts").json()["items"]
            assert fired["rule"] == "imported-5xx" and fired["state"] == "firing"
            assert all(rid.startswith("now-") for rid in fired["sample_request_ids"])
            _wait_until(lambda: len(records()) == 27, 60, "the spooled records replayed into the store")
            metrics = c.get("/metrics").text
            assert 'meshscope_collector_received_total{protocol="log_import"} 27.0' in metrics
            assert 'meshscope_collector_spooled_total{protocol="log_import"} 12.0' in metrics
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(60) for name, proc in procs.items()}
    # uvicorn shuts down cleanly on SIGTERM and then re-raises the signal it caught (exit -15)
    assert codes["pipeline"] == 0 and codes["api"] in (0, -signal.SIGTERM), \
        {n: p.read_text()[-2000:] for n, p in logs.items()}
    assert "Application shutdown complete" in logs["api"].read_text()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
