"""The bus between collector and pipeline: an interface (base.py) and one file per implementation."""

from pipelines.bus.base import Batch, Bus, BusUnavailable

__all__ = ["Batch", "Bus", "BusUnavailable"]
