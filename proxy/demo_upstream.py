"""A small httpbin-like upstream for demos and tests: /headers, /status/{code}, /delay/{seconds},
/flaky/{n}, /anything, and /_seen (the x-request-ids it received, newest last).

Standalone: ``python -m proxy.demo_upstream --port 18080``. In a test or `meshscope up`:
``with DemoUpstream(port=p) as up: ...`` (background thread) or ``await serve(host, port)``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import Counter, deque

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MAX_DELAY = 30.0


class Seen:
    """The last `limit` requests' x-request-id, path, attempt count and B3 trace id."""

    def __init__(self, limit: int = 10_000) -> None:
        self.entries: deque[dict] = deque(maxlen=limit)
        self.lock = threading.Lock()

    def add(self, request: Request) -> None:
        h = request.headers
        with self.lock:
            self.entries.append(
                {
                    "x-request-id": h.get("x-request-id"),
                    "path": request.url.path,
                    "method": request.method,
                    "x-envoy-attempt-count": h.get("x-envoy-attempt-count"),
                    "x-b3-traceid": h.get("x-b3-traceid"),
                    "x-b3-spanid": h.get("x-b3-spanid"),
                    "time": time.time(),
                }
            )

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.entries)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


def create_app(seen: Seen | None = None) -> FastAPI:
    """The demo upstream as a FastAPI app (its `Seen` log is at ``app.state.seen``)."""
    app = FastAPI(title="meshscope demo upstream", docs_url=None, redoc_url=None)
    app.state.seen = seen or Seen()
    calls: Counter[str] = Counter()
    calls_lock = threading.Lock()

    @app.middleware("http")
    async def record(request: Request, call_next):
        if request.url.path != "/_seen":
            app.state.seen.add(request)
        return await call_next(request)

    @app.get("/headers")
    async def headers(request: Request) -> dict:
        return {"headers": dict(request.headers)}

    @app.api_route("/status/{code}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
    async def status(code: int) -> JSONResponse:
        if not 100 <= code <= 599:
            return JSONResponse({"error": "status code must be 100..599"}, status_code=400)
        return JSONResponse({"status": code}, status_code=code)

    @app.get("/delay/{seconds}")
    async def delay(seconds: float, request: Request):
        if not 0 <= seconds <= MAX_DELAY:
            return JSONResponse({"error": f"delay must be 0..{MAX_DELAY:g} seconds"}, status_code=400)
        await asyncio.sleep(seconds)
        return {"delayed": seconds, "headers": dict(request.headers)}

    @app.get("/flaky/{n}")
    async def flaky(n: int, request: Request, key: str = "default") -> JSONResponse:
        """Every n-th call for `key` answers 503 (n=1: always); the others 200."""
        if n < 1:
            return JSONResponse({"error": "n must be >= 1"}, status_code=400)
        with calls_lock:
            calls[key] += 1
            count = calls[key]
        failed = count % n == 0
        body = {
            "key": key,
            "call": count,
            "failed": failed,
            "x-request-id": request.headers.get("x-request-id"),
        }
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.api_route("/anything{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def anything(request: Request, rest: str = "") -> dict:
        body = await request.body()
        return {
            "method": request.method,
            "path": request.url.path,
            "args": dict(request.query_params),
            "headers": dict(request.headers),
            "data": body.decode("utf-8", errors="replace"),
            "origin": request.client.host if request.client else None,
        }

    @app.get("/_seen")
    async def seen_requests(limit: int = 1000) -> dict:
        entries = app.state.seen.snapshot()
        return {"count": len(entries), "requests": entries[-limit:] if limit > 0 else []}

    @app.delete("/_seen")
    async def clear_seen() -> dict:
        app.state.seen.clear()
        return {"cleared": True}

    return app


def _server(host: str, port: int, app: FastAPI) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", proxy_headers=False
    )  # report the real peer, not X-Forwarded-For
    return uvicorn.Server(config)


async def serve(host: str = "127.0.0.1", port: int = 18080, app: FastAPI | None = None) -> None:
    """Serve the demo upstream until cancelled (for an asyncio program such as `meshscope up`)."""
    await _server(host, port, app or create_app()).serve()


class DemoUpstream:
    """The demo upstream in a background thread: ``with DemoUpstream(port=p) as up: up.seen()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 18080, app: FastAPI | None = None) -> None:
        self.host, self.port = host, port
        self.app = app or create_app()
        self._server = _server(host, port, self.app)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def seen(self) -> list[dict]:
        """What the upstream received so far (see `Seen`)."""
        return self.app.state.seen.snapshot()

    def seen_request_ids(self) -> list[str | None]:
        return [e["x-request-id"] for e in self.seen()]

    def start(self, timeout: float = 10.0) -> DemoUpstream:
        self._thread = threading.Thread(target=self._server.run, name="demo-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"demo upstream did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> DemoUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> DemoUpstream:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.demo_upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    print(f"demo upstream on http://{args.host}:{args.port}", flush=True)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
