"""Bus topics: each record kind names its own (``Record.topic``) and its partition key."""

from meshscope.model import RECORD_TYPES, AccessRecord, Alert, Record, Span

ACCESS, SPANS, ALERTS = AccessRecord.topic, Span.topic, Alert.topic

TOPIC_OF: dict[type[Record], str] = {cls: cls.topic for cls in RECORD_TYPES.values() if cls.topic}
RECORD_OF: dict[str, type[Record]] = {v: k for k, v in TOPIC_OF.items()}


def partition_key(record: Record) -> bytes | None:
    key = record.partition_key()
    return key.encode() if key else None
