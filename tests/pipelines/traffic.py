"""Test traffic for the pipeline suites: access records as Envoy would log them, and a real webhook
receiver (an HTTP server on loopback) that keeps what it was sent."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from meshscope.model import AccessRecord


def access(n: int, *, cluster: str = "catalog", code: int = 200, t: float | None = None,
           attempts: int = 1, flags: tuple[str, ...] = (), tag: str = "r") -> AccessRecord:
    """The n-th access record of a run: unique request id ``{tag}-{n}``, deterministic id."""
    return AccessRecord(
        start_time=time.time() if t is None else t, node_id="gateway~10.10.0.6", node_cluster="gateway",
        log_name="als", request_id=f"{tag}-{n:08d}", trace_id=f"{n:016x}", method="GET",
        authority=f"{cluster}.mesh", path=f"/items/{n}", route_name=f"route-{cluster}",
        response_code=code, response_flags=list(flags), attempt_count=attempts,
        upstream_cluster=cluster, upstream_host="10.10.0.8:3000", downstream_remote="172.18.0.1:57536",
        duration_ms=3.0,
    )


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 collecting the JSON bodies POSTed to it (Alertmanager webhooks)."""

    def __init__(self, ssl_context=None) -> None:
        self.payloads: list[dict] = []
        self.arrived: list[float] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.headers.append(dict(self.headers))
                receiver.payloads.append(json.loads(body))
                receiver.arrived.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, status: str | None = None) -> list[dict]:
        """Every alert of every payload received, optionally of one status."""
        return [a for p in self.payloads for a in p["alerts"] if status is None or a["status"] == status]


async def publish_stream(bus, records: list[AccessRecord], *, batch: int = 100, per_second: float = 2000,
                         give_up_after: float = 60.0) -> int:
    """Publish like a collector: paced batches, each kept and sent again until the bus acknowledges
    it (BusUnavailable). Returns how many attempts failed."""
    import asyncio

    from meshscope.pipelines.bus.base import BusUnavailable

    failures = 0
    deadline = time.monotonic() + give_up_after
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        while True:
            try:
                await bus.publish("access", chunk)
                break
            except BusUnavailable:
                failures += 1
                assert time.monotonic() < deadline, "the bus never came back"
                await asyncio.sleep(0.2)
        await asyncio.sleep(len(chunk) / per_second)
    return failures


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll an async predicate until it returns a truthy value (returned) or fail after timeout."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(interval)
