"""The in-process bus (embedded mode): one bounded log per topic, consumer groups with committed offsets.

Like a one-partition Kafka topic held in memory: each consumer group reads from its committed offset,
so a batch that was never committed is delivered again to the group's next consumer. Records below
every group's committed offset are dropped; when a topic holds ``capacity`` records nobody has
committed yet, ``publish`` waits (backpressure) and gives up with BusUnavailable after
``publish_timeout`` seconds, so the caller keeps its records.

With ``wal_dir`` (what ``make_bus`` gives ``meshscope up``) every publish is first group-committed to
a write-ahead log on disk (``wal.py``), so an acknowledgement means the records survive a crash; the
log is read back at the next start and trimmed as groups commit. A log that cannot be written (disk
full) is BusUnavailable: nothing is acknowledged from memory alone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from meshscope.pipelines.bus.base import Batch, Bus, BusUnavailable
from meshscope.pipelines.bus.topics import RECORD_OF
from meshscope.pipelines.bus.wal import WalLocked, WalWriteFailed, WriteAheadLog

from meshscope.errors import UserError
from meshscope.model import Record
from meshscope.settings import Settings


@dataclass(slots=True)
class _TopicLog:
    """One topic: records from offset ``base`` on, and each group's committed offset."""

    name: str
    records: deque = field(default_factory=deque)
    base: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    reserved: int = 0  # records being written to the write-ahead log
    resume: dict[str, int] = field(default_factory=dict)  # groups' offsets read back from the log

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
        return self.end + self.reserved - self.floor()

    def slice(self, start: int, count: int) -> tuple[list[Record], int]:
        """Up to ``count`` records from ``start`` (damaged log lines left out) and the offset after them."""
        i = start - self.base
        taken = list(islice(self.records, i, i + count))
        return [r for r in taken if r is not None], start + len(taken)


class MemoryBus(Bus):
    """An asyncio bus inside one process; the embedded default (durable with ``wal_dir``)."""

    def __init__(self, capacity: int = 100_000, publish_timeout: float = 10.0,
                 wal_dir: Path | None = None) -> None:
        self.capacity = capacity
        self.publish_timeout = publish_timeout
        self.wal = WriteAheadLog(wal_dir) if wal_dir is not None else None
        self._topics: dict[str, _TopicLog] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryBus:
        """The embedded bus of ``meshscope up``: durable, its log in ``<data_dir>/bus``."""
        try:
            return cls(wal_dir=Path(settings.data_dir) / "bus")
        except WalLocked as exc:
            raise UserError(str(exc)) from exc

    @property
    def durable(self) -> bool:
        return self.wal is not None

    @property
    def failure(self) -> str | None:
        """Why the write-ahead log could not be written last time (None once a write succeeds)."""
        return self.wal.failure if self.wal is not None else None

    async def stop(self) -> None:
        if self.wal is not None:
            self.wal.close()

    def _log(self, topic: str) -> _TopicLog:
        log = self._topics.get(topic)
        if log is None:
            log = self._topics[topic] = _TopicLog(topic)
            if self.wal is not None and topic in RECORD_OF:
                found = self.wal.recover(topic, RECORD_OF[topic])
                log.base, log.records, log.resume = found.base, deque(found.records), found.committed
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
            if self.wal is None or topic not in RECORD_OF:
                log.records.extend(records)
                log.changed.notify_all()
                return
            log.reserved += len(records)
        try:
            # appended to memory by the log's flusher right after the fsync, in write order
            await self.wal.append(topic, records, then=log.records.extend)
        except WalWriteFailed as exc:
            raise BusUnavailable(str(exc)) from exc
        finally:
            log.reserved -= len(records)
        async with log.changed:
            log.changed.notify_all()

    def consume(self, topic: str, group: str, max_batch: int = 1000) -> AsyncIterator[Batch]:
        """Join the group now (so records are held for it) and yield batches from its committed
        offset on, waiting for records when caught up."""
        log = self._log(topic)
        if group not in log.committed:
            # a new group starts at the oldest record still held (or where it stopped last run)
            log.committed[group] = max(log.resume.get(group, log.base), log.base)
        return self._batches(log, group, max_batch)

    async def _batches(self, log: _TopicLog, group: str, max_batch: int) -> AsyncIterator[Batch]:
        position = log.committed[group]
        while True:
            async with log.changed:
                position = max(position, log.base)
                if position >= log.end:
                    await log.changed.wait_for(lambda p=position: p < log.end)
                records, end = log.slice(position, max_batch)
            position = end
            yield Batch(log.name, records, _commit=self._committer(log, group, end))

    def _committer(self, log: _TopicLog, group: str, end: int):
        async def commit() -> None:
            async with log.changed:
                if end > log.committed.get(group, 0):
                    log.committed[group] = end
                    log.trim()
                    if self.wal is not None and log.name in RECORD_OF:
                        self.wal.committed(log.name, log.committed)
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
