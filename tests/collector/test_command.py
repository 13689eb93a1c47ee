"""`meshscope collector` as a real process: serves both ports and /healthz, stops cleanly on SIGTERM,
and a port already taken is a one-line error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.accesslog.v3 import als_pb2_grpc

from tests.collector.als_messages import http_message
from tests.conftest import free_port

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _start(data_dir: Path, als_port: int, zipkin_port: int) -> subprocess.Popen:
    env = {**os.environ, "MESHSCOPE_BUS": "memory", "PYTHONPATH": str(ROOT), "MESHSCOPE_OTLP_GRPC_PORT": "0",
           "MESHSCOPE_OTLP_HTTP_PORT": "0"}
    return subprocess.Popen(
        [*MESHSCOPE, "collector", "--als-port", str(als_port), "--zipkin-port", str(zipkin_port),
         "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )


@pytest.mark.slow
def test_serves_and_stops_on_sigterm(data_dir):
    als_port, zipkin_port = free_port(), free_port()
    proc = _start(data_dir, als_port, zipkin_port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{zipkin_port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "collector did not start"
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        with grpc.insecure_channel(f"127.0.0.1:{als_port}") as channel:
            als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter([http_message(3)]), timeout=10)
        spans = b'[{"traceId": "463ac35c9f6413ad", "id": "463ac35c9f6413ad", "kind": "SERVER"}]'
        assert httpx.post(f"http://127.0.0.1:{zipkin_port}/api/v2/spans", content=spans).status_code == 202
        metrics = httpx.get(f"http://127.0.0.1:{zipkin_port}/metrics").text
        assert 'meshscope_collector_published_total{protocol="http"} 3.0' in metrics
        assert 'meshscope_collector_published_total{protocol="zipkin_json"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("which", ["als", "zipkin"])
def test_port_in_use_is_a_one_line_error(data_dir, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(data_dir, *((port, free_port()) if which == "als" else (free_port(), port)))
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("meshscope: ") and f"could not listen on 127.0.0.1:{port}" in last
