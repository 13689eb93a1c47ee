"""The bus interface: publish records with acknowledgement; consume them in batches, at least once."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from meshscope.model import Record


class BusUnavailable(Exception):
    """The bus did not acknowledge (down, slow past the timeout): the caller keeps the records."""


@dataclass(slots=True)
class Batch:
    """Records consumed from one topic; call ``commit()`` only after the store acknowledged them."""

    topic: str
    records: list[Record]
    _commit: object = field(default=None, repr=False)

    async def commit(self) -> None:
        if self._commit is not None:
            await self._commit()  # type: ignore[misc]


class Bus(abc.ABC):
    #: an acknowledgement survives this process (Kafka: the broker has it; in-process: only with its log)
    durable: bool = True

    @property
    def failure(self) -> str | None:
        """Why the bus could not take records last time, when it knows (None: no known problem)."""
        return None

    # True when programs other than meshscope's pipeline read the topics (Kafka): alerts are published
    # there too. The in-process bus keeps what no group has consumed, so nothing goes there unread.
    shared: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (a no-op for the in-process bus)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and disconnect."""

    @abc.abstractmethod
    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """Return once the bus has acknowledged every record; raise BusUnavailable otherwise."""

    @abc.abstractmethod
    def consume(self, topic: str, group: str, max_batch: int = 1000) -> AsyncIterator[Batch]:
        """Yield batches for a consumer group; uncommitted batches are delivered again."""

    def lag(self, topic: str, group: str) -> int | None:
        """Records on the topic the group has not committed yet (None when the bus cannot tell)."""
        return None

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
