"""Pipelines: the bus, the stores, the indexer that moves records between them, and the alert engine.

The door: the app imports only the names below; the collector imports the bus's own door
(``meshscope.pipelines.bus``), the one dependency between components the design allows.
"""

from meshscope.doors import lazy_exports

_EXPORTS = {
    "AccessQuery": ".store", "Page": ".store", "Store": ".store", "StoreReader": ".store",
    "StoreUnavailable": ".store", "StoreWriter": ".store",
    "AccessSearch": ".store", "HistogramBucket": ".store", "TrafficEdge": ".store", "VALUE_FIELDS": ".store",
    "Bus": ".bus", "BusUnavailable": ".bus",
    "make_bus": ".wiring", "make_store": ".wiring",
    "Pipeline": ".indexer",
    "StoreDamaged": ".store.sqlite", "repair_sqlite": ".store.sqlite:repair",
    "Rule": ".alerts.rules", "load_rules": ".alerts.rules",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
