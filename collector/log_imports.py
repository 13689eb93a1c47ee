"""Imported access logs (``POST /api/logs``) onto the bus the way live records go: the collector's
publisher (its intake checks without the bound on old times, the bus's durable acknowledgement, the
spool when the bus does not answer), then the pipeline's store and alert engine.

Under ``meshscope up`` the collector in the process lends its publisher; a standalone ``meshscope api``
with a Kafka bus configured owns one (``LogImports.own``) with a spool of its own in the data directory,
so it never shares the collector's spool when both run on one host.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshscope.collector.intake import IntakeLimits
from meshscope.collector.publisher import Publisher, PublisherMetrics
from meshscope.pipelines.bus import ACCESS, Bus

from meshscope.errors import UserError
from meshscope.model import AccessRecord
from meshscope.settings import Settings

PROTOCOL = "log_import"  # the protocol label of imported records in the collector's metrics


def intake_limits(settings: Settings) -> IntakeLimits:
    """The intake window and size limits of the settings; a bad policy is a UserError."""
    s = settings
    try:
        return IntakeLimits(max_ahead=s.intake_max_ahead_s, max_behind=s.intake_max_behind_s,
                            time_policy=s.intake_time_policy, max_field=s.intake_max_field,
                            max_entry=s.intake_max_entry)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


class LogImports:
    """``await imports.publish(records)`` returns once the bus (or the spool) holds them; Backpressure
    when the publisher cannot take them now (the API answers 503, a retry dedupes)."""

    def __init__(self, publisher: Publisher, *, owned: bool = False) -> None:
        self.publisher = publisher
        self._owned = owned

    @classmethod
    def own(cls, settings: Settings, bus: Bus, *, publish_timeout: float = 5.0) -> LogImports:
        """A publisher of its own over ``bus`` (the caller starts and stops the bus), spooling in
        ``data_dir/import-spool``."""
        publisher = Publisher(bus, settings.data_dir / "import-spool", metrics=PublisherMetrics(),
                              publish_timeout=publish_timeout, intake=intake_limits(settings))
        return cls(publisher, owned=True)

    @property
    def metrics(self) -> PublisherMetrics:
        return self.publisher.metrics

    async def start(self) -> None:
        if self._owned:
            await self.publisher.start()

    async def stop(self) -> None:
        if self._owned:
            await self.publisher.drain(5.0)  # the bus may still take what waits in the spool
            await self.publisher.stop()

    async def publish(self, records: Sequence[AccessRecord]) -> None:
        await self.publisher.submit(ACCESS, records, PROTOCOL, history=True)
