"""The one place where configuration picks implementations: which bus and which store to run.

Implementations are imported lazily, so the embedded pair never imports aiokafka or elasticsearch.
"""

from __future__ import annotations

import importlib

from meshscope.pipelines.bus.base import Bus
from meshscope.pipelines.store.base import Store

from meshscope.errors import UserError
from meshscope.settings import Settings

BUSES = {
    "memory": "meshscope.pipelines.bus.memory:MemoryBus",
    "kafka": "meshscope.pipelines.bus.kafka:KafkaBus",
}
STORES = {
    "sqlite": "meshscope.pipelines.store.sqlite:SqliteStore",
    "elasticsearch": "meshscope.pipelines.store.elasticsearch:ElasticsearchStore",
}


def _load(kind: str, choices: dict[str, str], name: str) -> type:
    target = choices.get(name)
    if target is None:
        raise UserError(f"unknown {kind} {name!r}: choose one of {', '.join(sorted(choices))}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_bus(settings: Settings) -> Bus:
    """The bus named by ``settings.bus``: "memory" (in-process, its write-ahead log in the data
    directory) or "kafka" (aiokafka)."""
    cls = _load("bus", BUSES, settings.bus)
    return cls.from_settings(settings)


def make_store(settings: Settings) -> Store:
    """The store named by ``settings.store``: "sqlite" (WAL file) or "elasticsearch".

    A store class is built with ``from_settings(settings)`` when it has one, else ``cls(settings)``.
    """
    cls = _load("store", STORES, settings.store)
    if hasattr(cls, "from_settings"):
        return cls.from_settings(settings)
    return cls(settings)
