"""`meshscope api` under slow and idle clients: half a request head or a stalled body is closed after
the read timeout while real requests go on; a client that leaves mid-upload is one log line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process

pytestmark = [pytest.mark.slow]
MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(tmp_path):
    port = free_port()
    log = tmp_path / "api.log"
    # an upload a killed run left half-written: no status, never listed
    leftover = tmp_path / "data" / "pcaps" / ("ab" * 16)
    leftover.mkdir(parents=True)
    (leftover / "capture-0.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 100)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHSCOPE_DATA_DIR": str(tmp_path / "data"),
           "MESHSCOPE_HTTP_HEAD_TIMEOUT_S": "1", "MESHSCOPE_HTTP_BODY_TIMEOUT_S": "1",
           "MESHSCOPE_UPLOAD_MAX_COUNT": "3"}
    proc = subprocess.Popen([*MESHSCOPE, "api", "--port", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield port, log
        assert not leftover.exists()  # removed at start
    finally:
        stop_process(proc)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (recv returns b"" or resets) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_half_heads_and_stalled_bodies_are_closed(api):
    port, _ = api
    heads = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /api/records HTTP/1.1\r\nHost: x\r\n")  # never finished
        heads.append(s)
    body = socket.create_connection(("127.0.0.1", port))
    body.sendall(b"POST /api/pcaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\0" * 100)  # then nothing
    idle = socket.create_connection(("127.0.0.1", port))  # sends nothing at all
    started = time.monotonic()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/records", timeout=5).status_code == 200
        assert all(_closed_within(s, 5) for s in [*heads, body, idle])
        assert time.monotonic() - started < 8
        assert httpx.get(f"http://127.0.0.1:{port}/api/records", timeout=5).status_code == 200
    finally:
        for s in [*heads, body, idle]:
            s.close()


def test_idle_uploads_take_no_slot_and_stalled_ones_expire(api, tmp_path):
    port, _ = api
    pcaps = tmp_path / "data" / "pcaps"
    idle = []
    for _ in range(10):  # more than upload_max_count (3): headers, then no data
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /api/pcaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 100000\r\n\r\n")
        idle.append(s)
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"POST /api/pcaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: 100000\r\n\r\n\xd4\xc3\xb2\xa1" + b"\0" * 2000)
    try:
        time.sleep(0.5)
        assert len(list(pcaps.iterdir())) <= 1  # only the one that sent data holds a slot
        assert all(_closed_within(s, 5) for s in [*idle, stalled])
        time.sleep(0.5)
        assert list(pcaps.iterdir()) == []  # the stalled upload's folder is gone again
    finally:
        for s in [*idle, stalled]:
            s.close()


def test_a_client_gone_mid_upload_is_one_line(api):
    port, log = api
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/pcaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Length: 1000000\r\n\r\n" + b"\xd4\xc3\xb2\xa1" + b"\0" * 5000)
    time.sleep(0.3)
    s.close()
    time.sleep(1.0)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    text = log.read_text()
    assert "Traceback" not in text, text


async def test_a_disconnect_the_app_did_not_expect_is_one_log_line(caplog):
    """A route that reads its body when the client leaves raises ClientDisconnect: one line, no traceback."""
    import asyncio
    import logging

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from meshscope.serving import EmbeddedServer

    async def read_all(request: Request) -> Response:
        await request.body()
        return Response("ok")

    port = free_port()
    server = EmbeddedServer(Starlette(routes=[Route("/", read_all, methods=["POST"])]), "127.0.0.1", port,
                            lifespan="off")
    await server.start()
    try:
        with caplog.at_level(logging.INFO):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            await asyncio.sleep(0.5)
    finally:
        await server.stop()
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info]
