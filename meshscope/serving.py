"""Serve an ASGI app with uvicorn inside a running asyncio program (the embedding program owns signals)."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import uvicorn

from meshscope.settings import Settings
from meshscope.slow_clients import quiet_disconnects, uvicorn_options


class EmbeddedServer:
    """``await EmbeddedServer(app, host, port).start()`` returns once the port listens; ``stop()`` ends it."""

    def __init__(self, app: object, host: str, port: int, *, name: str = "http",
                 lifespan: str = "on", settings: Settings | None = None) -> None:
        # read timeouts on request heads and bodies; a client gone mid-request is one log line
        config = uvicorn.Config(quiet_disconnects(app), host=host, port=port, log_level="warning",
                                access_log=False, lifespan=lifespan, **uvicorn_options(settings))
        self.name, self.host, self.port = name, host, port
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.task: asyncio.Task | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self.task = asyncio.create_task(self.server.serve(), name=f"{self.name}-server")
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.server.started:
            if self.task.done() or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise OSError(f"{self.name}: could not listen on {self.host}:{self.port}")
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.task, timeout)
            self.task = None


def guarded_http(settings: Settings) -> dict:
    """The collector's keywords for its HTTP receivers (Zipkin, OTLP/HTTP): the same read timeouts
    and quiet disconnects as the API (``Collector(settings, bus, **guarded_http(settings))``)."""
    return {"http_options": uvicorn_options(settings), "wrap_http": quiet_disconnects}


def settle_heap() -> None:
    """For a long-running server (``up``, ``collector``), once everything is imported:
    that heap lives as long as the process, so it leaves the garbage collector's generations
    (``gc.freeze``), and young collections run every 10,000 container allocations instead of 700.
    The collector builds several containers per record; at full rate the collections cost about a
    fifteenth of its CPU (gc callbacks around benchmarks/bench_collector.py's path), nearly all of
    it spent re-reading records that reference counting frees anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
