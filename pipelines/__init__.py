"""Pipelines: the bus, the stores, the indexer that moves records between them, and the alert engine."""
