"""Bus topics and the key each record is partitioned by."""

from meshscope.model import AccessRecord, Alert, Record, Span

ACCESS = "access"
SPANS = "spans"
ALERTS = "alerts"

TOPIC_OF: dict[type[Record], str] = {AccessRecord: ACCESS, Span: SPANS, Alert: ALERTS}
RECORD_OF: dict[str, type[Record]] = {v: k for k, v in TOPIC_OF.items()}


def partition_key(record: Record) -> bytes | None:
    """Access records by request id, spans by trace id: one request's records stay in order."""
    if isinstance(record, AccessRecord):
        key = record.request_id_norm or record.id
    elif isinstance(record, Span):
        key = record.trace_id
    else:
        key = record.id
    return key.encode() if key else None
