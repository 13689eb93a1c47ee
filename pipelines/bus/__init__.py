"""The bus between collector and pipeline: an interface (base.py) and one file per implementation.
Its door is the collector's way into pipelines (DESIGN.md: collector → bus)."""

from meshscope.pipelines.bus.base import Batch, Bus, BusUnavailable
from meshscope.pipelines.bus.topics import ACCESS, ALERTS, RECORD_OF, SPANS, TOPIC_OF, partition_key

__all__ = ["ACCESS", "ALERTS", "Batch", "Bus", "BusUnavailable", "RECORD_OF", "SPANS", "TOPIC_OF",
           "partition_key"]
