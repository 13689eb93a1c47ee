"""The alert outbox: every firing and resolution is logged, stored as an Alert record and sent to the
webhooks, in the background so slow receivers never hold up indexing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from meshscope.pipelines.alerts.notify import WebhookNotifier, log_alert
from prometheus_client import Counter

from meshscope.model import Alert

log = logging.getLogger("meshscope.alerts")

ALERTS = Counter("meshscope_alerts", "Alert notifications (firings, re-notifications, resolutions)",
                 ["rule", "state"])

Writer = Callable[[str, Sequence[Alert]], Awaitable[None]]


class AlertOutbox:
    """Queue alerts with ``put``; ``run`` stores them through ``write`` (the indexer's retrying,
    dead-lettering writer, given the topic name) and posts them to the webhooks."""

    def __init__(self, write: Writer, notifier: WebhookNotifier | None = None) -> None:
        self.write = write
        self.notifier = notifier
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
                if self.notifier is not None and self.notifier.urls:
                    jobs.append(self.notifier.send(alerts))
                await asyncio.gather(*jobs)
                self.handled.extend(alerts)
                del self.handled[:-1000]
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every alert put so far is stored and sent (``run`` must be running)."""
        await self._queue.join()
