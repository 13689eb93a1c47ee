"""Alert: a rule firing (or resolving) for one group, with the evidence that made it fire."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshscope.model.ids import record_id
from meshscope.model.record import Record


@dataclass(slots=True, kw_only=True)
class Alert(Record):
    kind = "alert"
    topic = "alerts"

    rule: str
    group_key: str  # e.g. "upstream_cluster=catalog"
    state: str  # "firing" or "resolved"
    window_s: float
    observed: float
    baseline: float | None = None
    first_seen: float  # epoch seconds
    last_seen: float
    sample_request_ids: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def time(self) -> float | None:
        return self.last_seen

    def compute_id(self) -> str:
        return record_id("alert", self.rule, self.group_key, self.state, f"{self.first_seen:.3f}")
