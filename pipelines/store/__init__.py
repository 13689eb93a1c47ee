"""The stores behind one interface (base.py): SQLite embedded, Elasticsearch scale-out."""

from meshscope.pipelines.store.base import (
    VALUE_FIELDS,
    AccessQuery,
    AccessSearch,
    HistogramBucket,
    Page,
    Store,
    StoreReader,
    StoreUnavailable,
    StoreWriter,
    TrafficEdge,
)

__all__ = [
    "VALUE_FIELDS", "AccessQuery", "AccessSearch", "HistogramBucket", "Page", "Store", "StoreReader",
    "StoreUnavailable", "StoreWriter", "TrafficEdge",
]
