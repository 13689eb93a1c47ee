"""The Elasticsearch-API server for the tests: the real osmem-server (in memory) behind a tiny
loopback bridge.

The elasticsearch 8/9 client speaks ``application/vnd.elasticsearch+json; compatible-with=N`` and
insists on an ``X-Elastic-Product: Elasticsearch`` response header; osmem answers plain JSON and
names itself OpenSearch. The bridge rewrites those two things and nothing else, here in the test
harness only, so the product code keeps the stock client. It also lets a test cut the network
path (``pause``/``resume``) while osmem keeps its data, or kill and restart osmem itself
(``kill_backend``/``restart_backend``: osmem is in memory, so that loses what it held).

Fixtures (import them with ``from tests.pipelines.search_server import *``):
``search_server`` (one per session) and ``es_settings`` (Settings with a fresh index prefix).
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshscope.settings import Settings
from tests.conftest import free_port, need

__all__ = ["SearchServer", "es_settings", "search_server"]

_COMPAT = re.compile(r"application/vnd\.elasticsearch\+([\w-]+)\s*;\s*compatible-with\s*=\s*\d+")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _plain_media_type(value: str) -> str:
    return _COMPAT.sub(r"application/\1", value)


class _Bridge(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connects (timeouts) when several clients start at once

    def __init__(self, port: int, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open_sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _BridgeHandler)

    def cut(self) -> None:
        """Stop listening and drop every open connection, as a dead server would."""
        self.shutdown()
        self.server_close()
        with self.lock:
            for s in self.open_sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open_sockets.clear()


class _BridgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Bridge

    def setup(self) -> None:
        super().setup()
        # headers and body leave in separate writes: without this, delayed ACKs add 40 ms each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.open_sockets.add(self.connection)
        self.upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        with self.server.lock:
            self.server.open_sockets.discard(self.connection)
        if self.upstream is not None:
            self.upstream.close()
        super().finish()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: _plain_media_type(v) if k.lower() in ("accept", "content-type") else v
            for k, v in self.headers.items()
            if k.lower() not in _HOP_BY_HOP
        }
        try:
            if self.upstream is None:
                port = self.server.upstream_port
                self.upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                self.upstream.connect()
                self.upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.upstream.request(self.command, self.path, body, headers)
            resp = self.upstream.getresponse()
            data = resp.read()
        except OSError:
            # the server is gone: the client must see a dead connection, not an HTTP answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP:
                self.send_header(k, v)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


class SearchServer:
    """osmem-server on a free loopback port behind the bridge; ``url`` stays the same throughout."""

    def __init__(self) -> None:
        from osmem_server import OsmemServer, resolve_binary

        self._osmem_cls = OsmemServer
        self.binary = resolve_binary()
        self.backend_port = free_port()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = None
        self._bridge: _Bridge | None = None

    def start(self) -> SearchServer:
        self.restart_backend()
        self.resume()
        return self

    def restart_backend(self) -> None:
        """Start osmem (empty: it keeps nothing across a restart) on the same backend port."""
        self.backend = self._osmem_cls.start(
            freeze=False, japanese=False, addr=f"127.0.0.1:{self.backend_port}", binary=self.binary
        )

    def kill_backend(self) -> None:
        if self.backend is not None:
            self.backend.process.kill()
            self.backend.process.wait()
            self.backend = None

    def pause(self) -> None:
        """Make the server unreachable (connections refused and reset); osmem keeps its data."""
        if self._bridge is not None:
            self._bridge.cut()
            self._bridge = None

    def resume(self) -> None:
        if self._bridge is None:
            self._bridge = _Bridge(self.port, self.backend_port)
            threading.Thread(target=self._bridge.serve_forever, daemon=True, name="search-bridge").start()

    def close(self) -> None:
        self.pause()
        if self.backend is not None:
            self.backend.close()
            self.backend = None


@pytest.fixture(scope="session")
def search_server():
    """One osmem-server for the session (tests isolate themselves by index prefix)."""
    try:
        from osmem_server import resolve_binary

        resolve_binary()
        found = True
    except Exception:  # noqa: BLE001 - any failure to locate it means: not installed
        found = False
    need(found, "needs osmem-server (pip install osmem-server)")
    server = SearchServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def es_settings(search_server, data_dir) -> Settings:
    """Settings for ElasticsearchStore on the session server with an index prefix of its own."""
    search_server.resume()
    return Settings(
        data_dir=data_dir, store="elasticsearch", elasticsearch_url=search_server.url,
        elasticsearch_index_prefix=f"t{uuid.uuid4().hex[:10]}-",
    )
