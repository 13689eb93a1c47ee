"""The httpbin-like demo upstream, served for real on a free port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
from meshscope.proxy.demo_upstream import serve

from tests.conftest import free_port


@pytest.fixture
def client(upstream):
    with httpx.Client(base_url=upstream.url, timeout=5) as c:
        yield c


def test_headers_echo(client):
    assert client.get("/headers", headers={"x-request-id": "abc"}).json()["headers"]["x-request-id"] == "abc"


def test_status_codes(client):
    assert client.get("/status/418").status_code == 418
    assert client.post("/status/201").status_code == 201
    assert client.get("/status/99").status_code == 400
    assert client.get("/status/nope").status_code == 422


def test_delay(client):
    started = time.monotonic()
    assert client.get("/delay/0.3").json()["delayed"] == 0.3
    assert time.monotonic() - started >= 0.3
    assert client.get("/delay/31").status_code == 400
    assert client.get("/delay/-1").status_code == 400


def test_flaky_fails_every_nth_call_per_key(client):
    assert [client.get("/flaky/3?key=a").status_code for _ in range(6)] == [200, 200, 503, 200, 200, 503]
    assert [client.get("/flaky/3?key=b").status_code for _ in range(3)] == [200, 200, 503]
    assert [client.get("/flaky/1?key=c").status_code for _ in range(2)] == [503, 503]
    assert client.get("/flaky/0").status_code == 400


def test_anything_echoes_the_request(client):
    body = client.put("/anything/x/y?q=1", content=b"hello").json()
    assert (body["method"], body["path"], body["args"], body["data"]) == (
        "PUT",
        "/anything/x/y",
        {"q": "1"},
        "hello",
    )
    assert body["origin"] == "127.0.0.1"


def test_seen_records_request_ids(client, upstream):
    for rid in ("r1", "r2"):
        client.get("/headers", headers={"x-request-id": rid})
    client.get("/status/200")
    assert upstream.seen_request_ids() == ["r1", "r2", None]
    seen = client.get("/_seen").json()
    assert seen["count"] == 3 and [e["x-request-id"] for e in seen["requests"]] == ["r1", "r2", None]
    assert client.get("/_seen?limit=1").json()["requests"][0]["path"] == "/status/200"
    client.delete("/_seen")
    assert upstream.seen() == []


async def test_serve_in_an_event_loop():
    port = free_port()
    task = asyncio.create_task(serve("127.0.0.1", port))
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            for _ in range(100):
                try:
                    response = await c.get(f"http://127.0.0.1:{port}/headers")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            assert response.status_code == 200
    finally:
        task.cancel()


def test_runs_standalone():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshscope.proxy.demo_upstream", "--port", str(port)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == f"demo upstream on http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/status/204").status_code == 204
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
