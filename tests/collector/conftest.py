"""Fixtures for the collector tests: a running Collector on free ports over a real MemoryBus, and a
reader that drains a bus topic in the background."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from meshscope.collector.server import Collector
from meshscope.pipelines.bus.memory import MemoryBus

from meshscope.settings import Settings
from tests.conftest import free_port


class TopicReader:
    """Consumes one topic into ``records`` (committing each batch) until closed."""

    def __init__(self, bus, topic: str, group: str = "collector-tests") -> None:
        self.records: list = []
        self._task = asyncio.create_task(self._run(bus, topic, group))

    async def _run(self, bus, topic: str, group: str) -> None:
        async for batch in bus.consume(topic, group):
            self.records.extend(batch.records)
            await batch.commit()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list:
        """Wait until at least ``count`` records arrived (or the timeout); return them all."""
        return await self.wait_until(lambda records: len(records) >= count, timeout)

    async def wait_until(self, done, timeout: float = 10.0) -> list:
        """Wait until ``done(records)`` holds (or the timeout); return every record read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self.records) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.records

    async def settle(self, quiet: float = 0.5, timeout: float = 10.0) -> list:
        """Wait until nothing new arrived for ``quiet`` seconds; return everything read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen, since = -1, loop.time()
        while loop.time() < deadline:
            if len(self.records) != seen:
                seen, since = len(self.records), loop.time()
            elif loop.time() - since >= quiet:
                break
            await asyncio.sleep(0.02)
        return self.records

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def running(data_dir):
    """(collector, bus) listening on free loopback ports, stopped afterwards."""
    settings = Settings(data_dir=data_dir, als_port=free_port(), zipkin_port=free_port(),
                        otlp_grpc_port=0, otlp_http_port=0)
    bus = MemoryBus()
    collector = Collector(settings, bus)
    await collector.start()
    try:
        yield collector, bus
    finally:
        await collector.stop()


@pytest.fixture
async def access_reader(running):
    reader = TopicReader(running[1], "access")
    yield reader
    await reader.close()


@pytest.fixture
async def span_reader(running):
    reader = TopicReader(running[1], "spans")
    yield reader
    await reader.close()
