"""The in-process bus (embedded mode): one bounded log per topic, consumer groups with committed offsets.

Like a one-partition Kafka topic held in memory: each consumer group reads from its committed offset,
so a batch that was never committed is delivered again to the group's next consumer. Records below
every group's committed offset are dropped; when a topic holds ``capacity`` records nobody has
committed yet, ``publish`` waits (backpressure) and gives up with BusUnavailable after
``publish_timeout`` seconds, so the caller keeps its records.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from meshscope.pipelines.bus.base import Batch, Bus, BusUnavailable

from meshscope.model import Record


@dataclass(slots=True)
class _TopicLog:
    """One topic: records from offset ``base`` on, and each group's committed offset."""

    name: str
    records: deque = field(default_factory=deque)
    base: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def floor(self) -> int:
        """The lowest offset some group still needs (the end when no group has joined yet)."""
        return min(self.committed.values(), default=self.base)

    def trim(self) -> None:
        """Drop records every group has committed."""
        drop = self.floor() - self.base
        if drop > 0:
            if drop >= len(self.records):
                self.records.clear()
            else:
                for _ in range(drop):
                    self.records.popleft()
            self.base += drop

    def pending(self) -> int:
        return self.end - self.floor()

    def slice(self, start: int, count: int) -> list[Record]:
        i = start - self.base
        return list(islice(self.records, i, i + count))


class MemoryBus(Bus):
    """An asyncio bus inside one process; the embedded default."""

    def __init__(self, capacity: int = 200_000, publish_timeout: float = 10.0) -> None:
        self.capacity = capacity
        self.publish_timeout = publish_timeout
        self._topics: dict[str, _TopicLog] = {}

    def _log(self, topic: str) -> _TopicLog:
        log = self._topics.get(topic)
        if log is None:
            log = self._topics[topic] = _TopicLog(topic)
        return log

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """Append records once the topic has room; BusUnavailable when it stays full."""
        if not records:
            return
        log = self._log(topic)
        async with log.changed:
            if log.pending() >= self.capacity:
                try:
                    await asyncio.wait_for(
                        log.changed.wait_for(lambda: log.pending() < self.capacity), self.publish_timeout
                    )
                except TimeoutError as exc:
                    raise BusUnavailable(
                        f"in-process bus topic {topic!r} full ({log.pending()} records uncommitted) "
                        f"for {self.publish_timeout:g} s"
                    ) from exc
            log.records.extend(records)
            log.changed.notify_all()

    def consume(self, topic: str, group: str, max_batch: int = 1000) -> AsyncIterator[Batch]:
        """Join the group now (so records are held for it) and yield batches from its committed
        offset on, waiting for records when caught up."""
        log = self._log(topic)
        if group not in log.committed:
            log.committed[group] = log.base  # a new group starts at the oldest record still held
        return self._batches(log, group, max_batch)

    async def _batches(self, log: _TopicLog, group: str, max_batch: int) -> AsyncIterator[Batch]:
        position = log.committed[group]
        while True:
            async with log.changed:
                position = max(position, log.base)
                if position >= log.end:
                    await log.changed.wait_for(lambda p=position: p < log.end)
                records = log.slice(position, max_batch)
            end = position + len(records)
            position = end
            yield Batch(log.name, records, _commit=self._committer(log, group, end))

    def _committer(self, log: _TopicLog, group: str, end: int):
        async def commit() -> None:
            async with log.changed:
                if end > log.committed.get(group, 0):
                    log.committed[group] = end
                    log.trim()
                    log.changed.notify_all()  # wake publishers waiting for room

        return commit

    def lag(self, topic: str, group: str) -> int:
        """Records published to the topic that the group has not committed."""
        log = self._log(topic)
        return log.end - log.committed.get(group, log.base)

    def reset(self, topic: str, group: str, offset: int = 0) -> None:
        """Move a group's committed offset back (a replay); records already trimmed are gone."""
        log = self._log(topic)
        log.committed[group] = max(offset, log.base)
