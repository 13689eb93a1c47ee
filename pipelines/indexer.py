"""The indexer: moves records bus → store in batches, and runs the alert engine as they pass.

One consumer per topic in the ``meshscope-indexer`` group. A batch is committed on the bus only
after the store acknowledged it (at-least-once; deterministic ids make redelivery harmless), and the
next batch is not fetched before that, so a slow store backs the bus up to the publisher. A store
that is down is retried with exponential backoff; records the store refuses (ValueError) are split
out (bisecting the batch) and appended to the dead-letter file ``<data_dir>/deadletter/<topic>.jsonl``.
``Pipeline`` bundles indexer, alert engine and outbox for ``meshscope pipeline`` and ``meshscope up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from meshscope.pipelines.alerts.alertmanager import AlertmanagerNotifier
from meshscope.pipelines.alerts.engine import AlertEngine
from meshscope.pipelines.alerts.notify import WebhookNotifier
from meshscope.pipelines.alerts.outbox import AlertOutbox, count_from_zero
from meshscope.pipelines.alerts.rules import Rule, load_rules
from meshscope.pipelines.bus.base import Bus, BusUnavailable
from meshscope.pipelines.bus.topics import ACCESS, SPANS
from meshscope.pipelines.counters import TrafficCounters
from meshscope.pipelines.store.base import StoreUnavailable, StoreWriter
from prometheus_client import Counter, Gauge, Histogram

from meshscope.model import AccessRecord, Alert, Record
from meshscope.settings import Settings

log = logging.getLogger("meshscope.indexer")

GROUP = "meshscope-indexer"
# records this far behind the wall clock are stored but not alerted on: an imported log's past must not
# page anyone (nor turn the engine's event clock back); live records arrive within seconds
ALERT_MAX_AGE = 15 * 60.0
INDEXED = Counter("meshscope_indexer_records", "Records written to the store (indexed)", ["topic"])
FAILURES = Counter("meshscope_indexer_store_failures", "Store writes that failed and were retried", ["topic"])
DEADLETTERED = Counter("meshscope_indexer_deadlettered", "Records the store refused (dead-lettered)",
                       ["topic"])
LAG = Gauge("meshscope_indexer_lag_records", "Records on the bus not yet committed by the indexer", ["topic"])
AGE = Gauge("meshscope_indexer_record_age_seconds", "Wall time minus the newest indexed record's time",
            ["topic"])
RATE = Gauge("meshscope_indexer_records_per_second", "Indexing throughput over the last batches", ["topic"])
BATCH_SECONDS = Histogram("meshscope_indexer_batch_seconds", "Time to store one batch", ["topic"])


class Indexer:
    """Consume ``topics`` from the bus and write them to the store; feed access records to ``engine``."""

    def __init__(self, bus: Bus, store: StoreWriter, deadletter_dir: Path, *,
                 topics: Sequence[str] = (ACCESS, SPANS), group: str = GROUP, max_batch: int = 5000,
                 engine: AlertEngine | None = None, outbox: AlertOutbox | None = None,
                 max_backoff: float = 30.0, write_records: bool = True) -> None:
        self.bus = bus
        self.store = store
        self.deadletter_dir = Path(deadletter_dir)
        self.topics = list(topics)
        self.group = group
        self.max_batch = max_batch
        self.engine = engine
        self.outbox = outbox
        self.max_backoff = max_backoff
        self.write_records = write_records  # False: an alert-only worker, records are only watched
        # per-cluster traffic counters; an alert-only worker watches what the index workers count
        self.traffic = TrafficCounters() if write_records else None
        for topic in self.topics:  # every series at 0 from the start: increase() sees the first change
            for metric in (INDEXED, FAILURES, DEADLETTERED, LAG, BATCH_SECONDS):
                metric.labels(topic)
        self.stats = {"indexed": 0, "observed": 0, "batches": 0, "store_failures": 0, "deadlettered": 0,
                      "commit_failures": 0}

    async def run(self) -> None:
        """Index every topic until cancelled."""
        await asyncio.gather(*(self.run_topic(t) for t in self.topics))

    async def run_topic(self, topic: str) -> None:
        rate_from, rate_count = time.monotonic(), 0
        async for batch in self.bus.consume(topic, self.group, self.max_batch):
            started = time.monotonic()
            if self.traffic is not None and topic == ACCESS:
                self.traffic.observe(batch.records)
            if self.engine is not None and topic == ACCESS:
                # alerts see records as they arrive, not once a slow store has taken them
                self.engine.observe(batch.records)
                if self.outbox is not None:
                    self.outbox.put(self.engine.evaluate())
            if self.write_records:
                await self.write(topic, batch.records)
            self.stats["observed"] += len(batch.records)
            try:
                await batch.commit()
            except BusUnavailable as exc:  # stored already: a redelivery is deduplicated by id
                self.stats["commit_failures"] += 1
                log.warning("commit of %d %s records failed: %s", len(batch.records), topic, exc)
            done = time.monotonic()
            BATCH_SECONDS.labels(topic).observe(done - started)
            self.stats["batches"] += 1
            rate_count += len(batch.records)
            if done - rate_from >= 1.0:
                RATE.labels(topic).set(rate_count / (done - rate_from))
                rate_from, rate_count = done, 0
            self._gauge_lag(topic, batch.records)

    def _gauge_lag(self, topic: str, records: Sequence[Record]) -> None:
        lag = self.bus.lag(topic, self.group)
        if lag is not None:
            LAG.labels(topic).set(lag)
        if records and isinstance(records[-1], AccessRecord):
            AGE.labels(topic).set(max(0.0, time.time() - records[-1].start_time))

    async def write(self, topic: str, records: Sequence[Record]) -> None:
        """Store records, retrying with exponential backoff while the store is unavailable and
        dead-lettering the ones it refuses; returns once every record is stored or dead-lettered."""
        delay = 0.1
        while True:
            try:
                stored = len(records) - await self._write_or_split(topic, records)
                INDEXED.labels(topic).inc(stored)
                self.stats["indexed"] += stored
                return
            except StoreUnavailable as exc:
                self.stats["store_failures"] += 1
                FAILURES.labels(topic).inc()
                log.warning("store unavailable (%d %s records held, retry in %.1f s): %s",
                            len(records), topic, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _write_or_split(self, topic: str, records: Sequence[Record]) -> int:
        """A refused batch is halved until the refused records are found; the rest is stored.
        Returns how many records were dead-lettered."""
        try:
            await self.store.write(records)
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - ValueError is the contract; anything else a record
            # tripped in the store is handled the same way, so one bad record never stops indexing
            if len(records) == 1:
                self._deadletter(topic, records[0], exc)
                return 1
            half = len(records) // 2
            return (await self._write_or_split(topic, records[:half])
                    + await self._write_or_split(topic, records[half:]))
        return 0

    def _deadletter(self, topic: str, record: Record, error: Exception) -> None:
        self.deadletter_dir.mkdir(parents=True, exist_ok=True)
        entry = {"time": time.time(), "topic": topic, "kind": record.kind, "error": repr(error),
                 "record": record.to_dict()}
        with open(self.deadletter_dir / f"{topic}.jsonl", "ab") as out:
            out.write(orjson.dumps(entry) + b"\n")
        self.stats["deadlettered"] += 1
        DEADLETTERED.labels(topic).inc()
        log.error("store refused %s record %s (dead-lettered): %s", topic, record.id, error)


def read_deadletters(deadletter_dir: Path, topic: str) -> list[dict]:
    """The dead-lettered entries of a topic, oldest first (for inspection and replay)."""
    path = Path(deadletter_dir) / f"{topic}.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


ALERT_GROUP = "meshscope-alerts"
ROLES = ("all", "index", "alert")


class Pipeline:
    """Indexer + alert engine + alert outbox over a bus and a store the caller owns (started already).

    ``meshscope pipeline`` runs one on its own; ``meshscope up`` embeds one next to the collector and
    the API, sharing their bus and store. ``role`` splits the work for Kafka: any number of "index"
    workers share the partitions of the indexer group, and one "alert" worker (its own group) sees
    every access record, so each rule counts a cluster's whole traffic; "all" does both.
    """

    def __init__(self, settings: Settings, bus: Bus, store: StoreWriter, *,
                 rules: Sequence[Rule] | None = None, group: str | None = None, max_batch: int = 5000,
                 tick: float = 0.5, role: str = "all") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown pipeline role {role!r}: choose one of {', '.join(ROLES)}")
        self.settings = settings
        if role == "index":
            rules = []
        self.engine = AlertEngine(load_rules(settings.alert_rules) if rules is None else rules,
                                  max_age=ALERT_MAX_AGE)
        external_url = f"http://{settings.host}:{settings.api_port}"
        self.notifier = WebhookNotifier(settings.alert_webhooks, external_url=external_url)
        self.alertmanager = AlertmanagerNotifier.from_settings(settings, external_url=external_url)
        count_from_zero([r.name for r in self.engine.rules])
        self.indexer = Indexer(
            bus, store, Path(settings.data_dir) / "deadletter", max_batch=max_batch,
            group=group or (ALERT_GROUP if role == "alert" else GROUP),
            topics=(ACCESS,) if role == "alert" else (ACCESS, SPANS),
            engine=None if role == "index" else self.engine, write_records=role != "alert",
        )
        self.bus = bus
        self.outbox = AlertOutbox(self.indexer.write, [self.notifier, self.alertmanager],
                                  publish=self._publish_alerts if bus.shared else None)
        self.indexer.outbox = self.outbox
        self.role = role
        self.tick = tick
        self._tasks: list[asyncio.Task] = []

    def expect_clusters(self, clusters: Sequence[str]) -> None:
        """Upstream clusters known before their traffic (the proxy's configuration): their request, 5xx
        and retried counters start at 0 now, so Prometheus sees even their first burst whole."""
        if self.indexer.traffic is not None:
            self.indexer.traffic.expect(clusters)

    async def _publish_alerts(self, topic: str, alerts: Sequence[Alert], attempts: int = 5) -> None:
        """Put alerts on the bus's alerts topic for other consumers; a bus that stays down loses them
        there (they are stored and notified all the same), with a log line, never an error."""
        delay = 0.2
        for attempt in range(attempts):
            try:
                await self.bus.publish(topic, alerts)
                return
            except BusUnavailable as exc:
                if attempt + 1 == attempts:
                    log.error("%d alert(s) not published on the bus topic %r: %s", len(alerts), topic, exc)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.indexer.max_backoff)

    async def start(self) -> None:
        """Start indexing, the alert timer and the outbox in the running loop."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self.indexer.run(), name="meshscope-indexer"),
            asyncio.create_task(self.outbox.run(), name="meshscope-alert-outbox"),
            asyncio.create_task(self._ticker(), name="meshscope-alert-tick"),
            asyncio.create_task(self.alertmanager.run(), name="meshscope-alertmanager-resend"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def crashed(self) -> BaseException:
        """Wait until one of the pipeline's tasks dies on an error; return that error."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                return task.exception()  # type: ignore[return-value]
        return RuntimeError("a pipeline task ended")

    async def _ticker(self) -> None:
        """Close windows without new records: resolutions and quiet-time spikes need the clock too."""
        while True:
            await asyncio.sleep(self.tick)
            self.outbox.put(self.engine.evaluate())

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop consuming; give alerts already raised ``drain_timeout`` seconds to be stored and sent."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        indexer, outbox, ticker, resend = tasks
        for task in (indexer, ticker, resend):
            task.cancel()
        for task in (indexer, ticker, resend):
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a crash was logged already
                await task
        if not outbox.done():
            try:
                await asyncio.wait_for(self.outbox.drain(), drain_timeout)
            except TimeoutError:
                log.warning("alerts not yet stored or sent at shutdown were dropped")
        outbox.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await outbox
        await self.notifier.aclose()
        await self.alertmanager.aclose()

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())
