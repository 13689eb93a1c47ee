"""Span: a Zipkin v2 span as received (field names as in Zipkin's JSON model, snake_cased)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshscope.model.ids import normalize_request_id, record_id
from meshscope.model.record import Record


@dataclass(slots=True, kw_only=True)
class Span(Record):
    kind = "span"
    topic = "spans"

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str | None = None
    span_kind: str | None = None  # CLIENT, SERVER, PRODUCER, CONSUMER
    timestamp: int | None = None  # epoch microseconds
    duration: int | None = None  # microseconds
    local_endpoint: dict | None = None  # {"serviceName", "ipv4", "ipv6", "port"}
    remote_endpoint: dict | None = None
    annotations: list[dict] = field(default_factory=list)  # [{"timestamp", "value"}]
    tags: dict[str, str] = field(default_factory=dict)
    debug: bool = False
    shared: bool = False

    @property
    def request_id(self) -> str | None:
        return self.tags.get("guid:x-request-id")

    @property
    def request_id_norm(self) -> str | None:
        return normalize_request_id(self.request_id)

    @property
    def service_name(self) -> str | None:
        return (self.local_endpoint or {}).get("serviceName")

    def time(self) -> float | None:
        return self.timestamp / 1e6 if self.timestamp is not None else None

    def partition_key(self) -> str | None:
        return self.trace_id

    def compute_id(self) -> str:
        return record_id("span", self.trace_id, self.span_id, self.span_kind, self.shared, self.service_name)
