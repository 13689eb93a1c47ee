"""AccessRecord: one entry of an Envoy access log (HTTP or TCP), as the collector received it."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshscope.model.ids import access_id, normalize_request_id, record_id
from meshscope.model.record import Record

# the one entry Envoy writes when a request or connection ends (None: Envoy did not set the type)
FINAL_LOG_TYPES = frozenset({None, "NotSet", "DownstreamEnd", "TcpConnectionEnd", "UdpSessionEnd"})


@dataclass(slots=True, kw_only=True)
class AccessRecord(Record):
    kind = "access"
    topic = "access"
    # every field is an atom (str, number, None) or a list of str: a record is never part of a reference
    # cycle, so records built from rows (model/rows.py) are left to reference counting alone
    acyclic = True

    start_time: float  # epoch seconds
    protocol: str = "HTTP"  # "HTTP" or "TCP"
    duration_ms: float | None = None
    # which proxy logged it
    node_id: str = ""
    node_cluster: str = ""
    log_name: str = ""
    # request identity
    request_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    sampled: str | None = None
    # HTTP
    method: str | None = None
    scheme: str | None = None
    authority: str | None = None
    path: str | None = None
    route_name: str | None = None
    user_agent: str | None = None
    x_forwarded_for: str | None = None
    response_code: int | None = None
    response_flags: list[str] = field(default_factory=list)
    response_code_details: str | None = None
    attempt_count: int | None = None
    # upstream / addresses ("ip:port")
    upstream_cluster: str | None = None
    upstream_host: str | None = None
    upstream_failure_reason: str | None = None
    downstream_remote: str | None = None
    downstream_local: str | None = None
    upstream_local: str | None = None
    # TLS
    sni: str | None = None
    tls_version: str | None = None
    ja3: str | None = None
    # volume and timings
    request_bytes: int | None = None
    response_bytes: int | None = None
    upstream_duration_ms: float | None = None  # time to last upstream byte received
    # added by the collector (additive): HTTP version, cipher, stream and connection detail
    protocol_version: str | None = None  # "HTTP/1.1", "HTTP/2", ...
    tls_cipher: int | None = None  # IANA cipher suite number
    stream_id: str | None = None
    connection_termination_details: str | None = None
    # Envoy's AccessLogType ("DownstreamEnd", "TcpConnectionEnd", "DownstreamPeriodic", "UpstreamEnd" …);
    # None when Envoy did not say. Entries other than the final one get ids of their own (see compute_id)
    access_log_type: str | None = None
    # what the collector's intake changed, and why (a clamped time, a request id not kept, a cut field)
    notes: list[str] = field(default_factory=list)
    # how the sending proxy proved its identity to the collector: "mtls:<cert name>", "token", None (open)
    node_auth: str | None = None

    @property
    def request_id_norm(self) -> str | None:
        return normalize_request_id(self.request_id)

    @property
    def retried(self) -> bool:
        return (self.attempt_count or 1) > 1 or "URX" in self.response_flags

    def time(self) -> float | None:
        return self.start_time

    def partition_key(self) -> str | None:
        return self.request_id_norm or self.id

    def compute_id(self) -> str:
        if self.access_log_type in FINAL_LOG_TYPES:
            return access_id(self.node_id, self.log_name, self.protocol, self.start_time,
                             self.downstream_remote, self.upstream_local, self.request_id, self.path)
        # a periodic or per-upstream entry shares its request's start and addresses: keep it
        # apart from the final entry (and from the other periodic ones, by how long it had run)
        return record_id("access", self.node_id, self.log_name, self.protocol, f"{self.start_time:.6f}",
                         self.downstream_remote, self.upstream_local, self.request_id, self.path,
                         self.access_log_type, self.duration_ms)

