"""Records from the receivers to the bus, durably: acknowledged by the bus, or fsync'ed to the spool.

``submit`` returns only once its records are safe (bus ack or spool fsync), so a receiver that awaits
it acknowledges nothing it could still lose; the bus must be durable itself (Kafka, or the in-process
bus with its write-ahead log). When the bus fails, the publisher switches to the spool (new records
queue behind the spooled ones, keeping their order) and a replay task drains the spool into the bus
once it answers again. Memory is bounded by ``max_inflight`` records and disk by the spool's size:
past either, ``submit`` waits up to ``max_wait`` seconds (the gRPC stream stops being read) or, with
``wait=False``, at once raises Backpressure (the Zipkin receiver answers 503, the gRPC stream fails).
A spool that cannot be written (disk full) is Backpressure too, and ``readiness`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from meshscope.collector.intake import IntakeCheck, IntakeLimits
from meshscope.collector.spool import Spool, SpoolFull
from meshscope.pipelines.bus import Bus, BusUnavailable
from prometheus_client import CollectorRegistry, Counter, Gauge

from meshscope.model import Record

log = logging.getLogger(__name__)


class Backpressure(Exception):
    """The collector is holding as much as it may: the sender should retry later."""


class PublisherMetrics:
    """The collector's Prometheus counters, in a registry of its own (several collectors per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("meshscope_collector_received", "records received", ["protocol"], registry=r)
        self.published = Counter("meshscope_collector_published", "records acknowledged by the bus",
                                 ["protocol"], registry=r)
        self.spooled = Counter("meshscope_collector_spooled", "records written to the disk spool",
                               ["protocol"], registry=r)
        self.rejected = Counter("meshscope_collector_rejected", "messages or requests refused (bad input, "
                                "backpressure)", ["protocol", "reason"], registry=r)
        self.replayed = Counter("meshscope_collector_replayed", "spooled records replayed to the bus",
                                registry=r)
        self.spool_bytes = Gauge("meshscope_collector_spool_bytes", "spooled bytes not yet replayed",
                                 registry=r)
        self.inflight = Gauge("meshscope_collector_inflight", "records held in memory", registry=r)
        self.intake = Counter("meshscope_collector_intake", "records intake fixed or refused (time outside "
                              "the window, request id, field or entry size)", ["protocol", "action"],
                              registry=r)


class Publisher:
    """Publishes record batches to a Bus with acknowledgement, spooling to disk when it cannot."""

    def __init__(
        self,
        bus: Bus,
        spool_dir: Path,
        *,
        metrics: PublisherMetrics | None = None,
        max_inflight: int = 50_000,
        max_spool_bytes: int = 1024**3,
        publish_timeout: float = 5.0,
        retry_interval: float = 0.5,
        max_wait: float = 10.0,
        intake: IntakeLimits | None = None,
    ) -> None:
        self.bus = bus
        self.spool = Spool(spool_dir, max_bytes=max_spool_bytes)
        self.metrics = metrics or PublisherMetrics()
        self.max_inflight = max_inflight
        self.publish_timeout = publish_timeout
        self.retry_interval = retry_interval
        self.max_wait = max_wait
        self.intake = IntakeCheck(intake, count=lambda p, a, n: self.metrics.intake.labels(p, a).inc(n))
        self.bus_error: str | None = None  # why the bus refused last (None once it acknowledges again)
        self.refusing: str | None = None  # why records were last refused (disk full, spool full)
        self._refused_at = 0.0
        self._inflight = 0
        self._room = asyncio.Condition()
        self._spool_lock = asyncio.Lock()
        self._spool_wake = asyncio.Event()
        self._replayer: asyncio.Task | None = None
        if self.spool:
            self._spool_wake.set()  # records left by a previous run: replay them first

    async def start(self) -> None:
        self._replayer = asyncio.create_task(self._replay_loop(), name="collector-spool-replay")

    async def stop(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        self.spool.close()

    @property
    def degraded(self) -> bool:
        """True while records wait in the spool (the bus was down or slow)."""
        return bool(self.spool)

    #: how long after a refusal readiness still says "not ready" (senders retry within it)
    REFUSAL_MEMORY = 10.0

    def readiness(self) -> tuple[str, str | None]:
        """("ok" | "degraded" | "not ready", the reason): not ready while records are being refused."""
        if self.refusing and time.monotonic() - self._refused_at < self.REFUSAL_MEMORY:
            return "not ready", self.refusing
        if self.spool:
            return "degraded", f"{self.spool.pending_bytes} bytes spooled on disk: the bus is not " \
                               f"acknowledging ({self.bus_error or 'catching up'})"
        return "ok", None

    def _refuse(self, protocol: str, reason: str, why: str, cause: BaseException | None = None) -> None:
        self.metrics.rejected.labels(protocol, reason).inc()
        self.refusing, self._refused_at = why, time.monotonic()
        log.warning("refusing records: %s", why)
        raise Backpressure(why) from cause

    async def submit(self, topic: str, records: Sequence[Record], protocol: str, *,
                     wait: bool = True, history: bool = False) -> None:
        """Return once every record is acknowledged by the bus or fsync'ed to the spool (``history``:
        an imported log, whose old times the intake window must not clamp)."""
        if not records:
            return
        self.metrics.received.labels(protocol).inc(len(records))
        records = self.intake.apply(records, protocol, history=history)
        if not records:
            return
        n = len(records)
        await self._reserve(n, protocol, wait)
        try:
            if not self.spool:
                try:
                    async with asyncio.timeout(self.publish_timeout):  # no task per batch, as wait_for
                        await self.bus.publish(topic, records)
                    self.metrics.published.labels(protocol).inc(n)
                    self.bus_error = self.refusing = None
                    return
                except (BusUnavailable, TimeoutError) as exc:
                    self.bus_error = str(exc) or "no answer within the publish timeout"
                    log.warning("bus did not acknowledge %d %s records (%s): spooling", n, topic, exc)
                except Exception as exc:  # a bus bug must not lose what the sender was told is safe
                    self.bus_error = repr(exc)
                    log.exception("bus failed unexpectedly on %d %s records: spooling", n, topic)
            await self._to_spool(topic, list(records), protocol, wait)
            self.refusing = None
        finally:
            await self._release(n)

    # ---- memory bound ------------------------------------------------------------------------
    async def _reserve(self, n: int, protocol: str, wait: bool) -> None:
        async with self._room:
            # one batch larger than the whole bound still passes alone, else it could never go
            if self._inflight and self._inflight + n > self.max_inflight:
                why = f"{self._inflight} records in flight (limit {self.max_inflight})"
                if not wait:
                    self._refuse(protocol, "backpressure", why)
                try:
                    room = self._room.wait_for(
                        lambda: self._inflight == 0 or self._inflight + n <= self.max_inflight)
                    await asyncio.wait_for(room, self.max_wait)
                except TimeoutError as exc:
                    self._refuse(protocol, "backpressure", f"{why} for {self.max_wait:g} s", exc)
            self._inflight += n
            self.metrics.inflight.set(self._inflight)

    async def _release(self, n: int) -> None:
        async with self._room:
            self._inflight -= n
            self.metrics.inflight.set(self._inflight)
            self._room.notify_all()

    # ---- spool -------------------------------------------------------------------------------
    async def _to_spool(self, topic: str, records: list[Record], protocol: str, wait: bool) -> None:
        give_up = time.monotonic() + (self.max_wait if wait else 0.0)
        while True:
            try:
                async with self._spool_lock:
                    await asyncio.to_thread(self.spool.append, topic, records)
                break
            except SpoolFull as exc:
                if time.monotonic() >= give_up:
                    self._refuse(protocol, "spool_full", f"{exc}; the bus is not acknowledging "
                                 f"({self.bus_error or 'unknown'})", exc)
                await asyncio.sleep(self.retry_interval)  # the replay task frees room
            except OSError as exc:  # disk full or failing: nothing is acknowledged from memory
                self._refuse(protocol, "disk", f"cannot write the spool in {self.spool.dir}: "
                             f"{exc.strerror or exc} (the bus: {self.bus_error or 'unknown'})", exc)
        self.metrics.spooled.labels(protocol).inc(len(records))
        self.metrics.spool_bytes.set(self.spool.pending_bytes)
        self._spool_wake.set()

    async def _replay_loop(self) -> None:
        """Drain the spool into the bus in order; back off while the bus refuses."""
        while True:
            await self._spool_wake.wait()
            try:
                async with self._spool_lock:
                    batch = await asyncio.to_thread(self.spool.read)
                if batch is None:
                    self._spool_wake.clear()
                    if self.spool:  # only a torn tail or an unfinished writer segment left
                        self._spool_wake.set()
                        await asyncio.sleep(self.retry_interval)
                    continue
                try:
                    await asyncio.wait_for(self.bus.publish(batch.topic, batch.records), self.publish_timeout)
                except (BusUnavailable, TimeoutError) as exc:
                    self.bus_error = str(exc) or "no answer within the publish timeout"
                    log.info("spool replay waiting for the bus: %s", exc)
                    await asyncio.sleep(self.retry_interval)
                    continue
                async with self._spool_lock:
                    await asyncio.to_thread(self.spool.commit, batch)
                self.metrics.replayed.inc(len(batch.records))
                self.metrics.spool_bytes.set(self.spool.pending_bytes)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad spool line must not kill replay forever; keep trying, loudly
                log.exception("spool replay failed")
                await asyncio.sleep(self.retry_interval)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the spool is empty (for shutdown and tests); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.spool and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self.spool
