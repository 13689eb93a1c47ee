"""The alert outbox: every firing and resolution is logged, stored as an Alert record and sent to the
notifiers (webhooks, Alertmanager), in the background so slow receivers never hold up indexing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from meshscope.pipelines.alerts.notify import log_alert
from prometheus_client import Counter

from meshscope.model import Alert

log = logging.getLogger("meshscope.alerts")

ALERTS = Counter("meshscope_alerts", "Alerts raised by the engine (firings, re-notifications, resolutions)",
                 ["rule", "state"])

Writer = Callable[[str, Sequence[Alert]], Awaitable[None]]


class Notifier(Protocol):
    urls: list[str]

    async def send(self, alerts: Sequence[Alert]) -> None: ...


def count_from_zero(rules: Sequence[str]) -> None:
    """Create every rule's firing and resolved series at 0, so increase() sees the first alert."""
    for rule in rules:
        for state in ("firing", "resolved"):
            ALERTS.labels(rule, state)


class AlertOutbox:
    """Queue alerts with ``put``; ``run`` stores them through ``write`` (the indexer's retrying,
    dead-lettering writer, given the topic name) and posts them to the notifiers; ``publish`` (optional)
    puts them on the bus's alerts topic for other consumers."""

    def __init__(self, write: Writer, notifiers: Sequence[Notifier] = (),
                 publish: Writer | None = None) -> None:
        self.write = write
        self.notifiers = list(notifiers)
        self.publish = publish
        self.handled: list[Alert] = []  # the latest alerts handled, newest last
        self._queue: asyncio.Queue[list[Alert]] = asyncio.Queue()

    def put(self, alerts: Sequence[Alert]) -> None:
        """Log alerts now; store and send them in the background."""
        if alerts:
            for a in alerts:
                log_alert(a)
                ALERTS.labels(a.rule, a.state).inc()
            self._queue.put_nowait(list(alerts))

    async def run(self) -> None:
        while True:
            alerts = await self._queue.get()
            try:
                jobs = [self.write("alerts", alerts)]
                jobs += [n.send(alerts) for n in self.notifiers if n.urls]
                if self.publish is not None:
                    jobs.append(self.publish("alerts", alerts))
                await asyncio.gather(*jobs)
                self.handled.extend(alerts)
                del self.handled[:-1000]
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every alert put so far is stored and sent (``run`` must be running)."""
        await self._queue.join()
