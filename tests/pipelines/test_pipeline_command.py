"""`meshscope pipeline` as a user runs it: rule checks, clear one-line errors, and a real run against
a Tansu broker into SQLite that serves Prometheus metrics and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from meshscope.pipelines.bus.kafka import KafkaBus
from meshscope.pipelines.store.sqlite import SqliteStore

from meshscope.settings import Settings
from tests.conftest import free_port
from tests.pipelines.traffic import access, wait_for

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]


def meshscope(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*MESHSCOPE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_check_rules_and_one_line_errors(tmp_path):
    ok = meshscope("pipeline", "--check-rules")
    assert ok.returncode == 0 and "upstream-5xx-spike" in ok.stdout and "upstream-retry-spike" in ok.stdout
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {name: x, type: spike, timeframe: 1m, spike_height: 0.5}\n")
    refused = meshscope("pipeline", "--check-rules", "--rules", str(bad))
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line == "meshscope: rule 'x'.spike_height: expected a number ≥ 1, got 0.5"
    embedded = meshscope("pipeline", env={"MESHSCOPE_BUS": "memory"})
    assert embedded.returncode == 2 and "meshscope up" in embedded.stderr


@pytest.mark.kafka
@pytest.mark.slow
async def test_runs_kafka_to_sqlite_with_metrics_and_stops_on_sigterm(tansu, data_dir: Path):
    port = free_port()
    env = {**os.environ, "MESHSCOPE_BUS": "kafka", "MESHSCOPE_KAFKA_BOOTSTRAP": tansu.bootstrap,
           "MESHSCOPE_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([*MESHSCOPE, "pipeline", "--metrics-port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = SqliteStore(Settings(data_dir=data_dir))
    try:
        bus = KafkaBus(tansu.bootstrap)
        await bus.start()
        await bus.publish("access", [access(i) for i in range(200)])
        await bus.stop()

        async def created() -> bool:
            return store.path.exists()

        async def indexed() -> bool:
            return await store.count("access") == 200

        await wait_for(created, 30, "the pipeline to create its SQLite file")
        await store.start()
        await wait_for(indexed, 60, "the records in SQLite")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'meshscope_indexer_records_total{topic="access"} 200.0' in metrics
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "indexing and alerting: kafka → sqlite with 2 alert rule(s)" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await store.stop()
