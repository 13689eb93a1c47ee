"""The stores behind one interface (base.py): SQLite embedded, Elasticsearch scale-out."""

from meshscope.pipelines.store.base import (
    AccessQuery,
    Page,
    Store,
    StoreReader,
    StoreUnavailable,
    StoreWriter,
)

__all__ = ["AccessQuery", "Page", "Store", "StoreReader", "StoreUnavailable", "StoreWriter"]
