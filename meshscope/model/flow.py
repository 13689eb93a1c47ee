"""Flow: an end-to-end path rebuilt from captures and logs, as ordered hops with their evidence."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshscope.model.ids import record_id
from meshscope.model.record import Record

HOP_KINDS = ("nat-dnat", "nat-snat", "l7-proxy", "app-call", "tls-passthrough", "dns-lookup")


@dataclass(slots=True, kw_only=True)
class Hop:
    kind: str  # one of HOP_KINDS
    src: str  # "ip:port" entering the hop
    dst: str  # "ip:port" leaving the hop
    src_name: str | None = None  # workload names where known
    dst_name: str | None = None
    start: float | None = None
    end: float | None = None
    nodeport: int | None = None
    sni: str | None = None
    request_ids: list[str] = field(default_factory=list)  # raw ids as seen on each side
    retries: int = 0
    evidence: dict = field(default_factory=dict)  # what links the two sides (seq numbers, ids, xff …)
    exchange_ids: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Flow(Record):
    kind = "flow"

    hops: list[Hop]
    request_id: str | None = None  # normalised
    client: str | None = None
    server: str | None = None
    start: float | None = None
    end: float | None = None
    captures: list[str] = field(default_factory=list)
    exchange_ids: list[str] = field(default_factory=list)

    def time(self) -> float | None:
        return self.start

    def compute_id(self) -> str:
        first = self.hops[0] if self.hops else None
        return record_id(
            "flow", self.request_id, first and first.src, first and first.dst, self.start, *self.captures
        )
