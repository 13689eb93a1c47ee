"""Response models of the API (the OpenAPI schema); records themselves are the model's dataclasses."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from meshscope.model import AccessRecord, Alert, Exchange, Flow


class ErrorBody(BaseModel):
    detail: str | list = Field(description="what was wrong with the request")


class Health(BaseModel):
    status: str = Field(description='"ok"; with an embedded collector also "degraded" or "not ready"')
    store: str
    reason: str | None = Field(None, description="why the collector is degraded or not ready")
    collector: dict | None = Field(None, description="the embedded collector's health (meshscope up)")


class UploadedFile(BaseModel):
    name: str = Field(description="the client's file name, for display only")
    stored: str = Field(description="the name meshscope stored it under (generated)")
    size: int
    format: str | None


class CaptureSummary(BaseModel):
    name: str
    capture: str
    format: str
    link_types: list[str]
    packets: int
    bytes: int
    connections: int
    exchanges: int
    damage: list[str] = Field(description="what was damaged in the capture (truncation, gaps …): the "
                                          "first places")
    truncated: bool
    compression: str | None = Field(None, description="gzip, zstd, lz4, bzip2 or xz: sniffed and undone")
    damage_count: int = Field(0, description="every damaged place, also those beyond the examples in damage")
    snaplen: int | None = Field(None, description="bytes kept per packet, as the capture declares")
    cut_by_snaplen: int = Field(0, description="TCP segments whose payload the snaplen cut short")
    error: str | None = Field(None, description="why this capture could not be read (the others still were)")
    not_decoded: dict[str, int] = Field(
        {}, description="frames not decoded, by link type, encapsulation or protocol (\"PPP LCP\": 3)")


class UploadStatus(BaseModel):
    id: str
    state: str = Field(description="queued, analysing, done or failed")
    progress: float | None = Field(None, description="while analysing: the fraction of the bytes read")
    created: float
    finished: float | None = None
    files: list[UploadedFile]
    bytes: int
    error: str | None = None
    counts: dict[str, int] | None = None
    captures: list[CaptureSummary] = []
    keylog: bool = Field(False, description="a TLS key log came with the upload (used, then deleted)")


class UploadFlows(BaseModel):
    """An upload's analysis document (decoders.Analysis), led by the upload's id; narrowed by filters
    it also says by what (``filter``: "status 5xx, port 80")."""

    model_config = ConfigDict(extra="allow")

    id: str
    flows: list[Flow]
    exchanges: list[Exchange]
    captures: list[dict] = Field([], description="each capture's report, as `meshscope pcap analyze --json`")
    duplicates: int = Field(0, description="exchange copies folded away (one connection seen twice)")


class RecordsPage(BaseModel):
    items: list[AccessRecord]
    next_cursor: str | None = None


class AlertList(BaseModel):
    items: list[Alert]


class ProxyLossInfo(BaseModel):
    admin: str
    node_id: str | None
    reachable: bool
    written: int = Field(description="entries the proxy says it logged (logs_written)")
    dropped: int = Field(description="entries the proxy says it dropped (logs_dropped)")
    connect_failures: int
    arrived: int = Field(description="records of this proxy in meshscope's store")
    gap: int = Field(description="written - dropped - arrived: entries lost uncounted, or in flight")
    gap_settled: int | None = Field(None, description=(
        "the gap among entries written at least 10 s ago (by the counters of a read that old): what is "
        "lost, not in flight; null until the account has such a read"))
    restarts: int = Field(0, description="restarts of the proxy the account followed (their counts carried)")
    read_at: float | None = Field(None, description="the last read of the proxy's counters (epoch s)")
    unseen_since: list[float] = Field(default_factory=list, description=(
        "unknown: for each run that ended (or is down) between two reads, its last read; what it logged "
        "after that is counted by nobody"))
    unseen_seconds: float = Field(0.0, description="those windows' length in all")
    unseen_at_most: int = Field(0, description=(
        "entries those windows can have held (each run's peak logging rate x its window): the loss "
        "beyond written - dropped - arrived is at most this"))
    error: str | None = None


class ProxyInfo(BaseModel):
    node_id: str = Field(description="Envoy's node id; ``anonymous~PEER_IP~LOG_NAME`` for a proxy that "
                         "sent none")
    node_cluster: str | None = None
    role: str = Field("proxy", description="gateway, sidecar or proxy (from an Istio node id)")
    name: str | None = Field(None, description="the pod (Istio), the log name (anonymous), else the id")
    namespace: str | None = None
    ip: str | None = Field(None, description="the pod's address (Istio) or the stream's peer (anonymous)")
    records: int = Field(description="records received from this proxy")
    first_seen: float | None = None
    last_seen: float | None = None
    authenticated: bool = Field(False, description="its newest record came from a sender that proved its "
                                "identity (mTLS or the collector token); false: the node id is only a claim")
    auth: str | None = Field(None, description='how it proved it: "mtls:<certificate name>" or "token"')
    loss: ProxyLossInfo | None = Field(None, description="from the proxy's admin stats, when configured")


class ProxyList(BaseModel):
    items: list[ProxyInfo]
    unmatched_admins: list[ProxyLossInfo] = Field(
        default=[], description="configured admin addresses whose node has sent no records"
    )


class ZipkinEndpoint(BaseModel):
    model_config = ConfigDict(extra="allow")
    serviceName: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    port: int | None = None


class ZipkinAnnotation(BaseModel):
    timestamp: int
    value: str


class ZipkinSpan(BaseModel):
    """A span in Zipkin's JSON v2 shape."""

    traceId: str
    id: str
    parentId: str | None = None
    name: str | None = None
    kind: str | None = None
    timestamp: int | None = None
    duration: int | None = None
    localEndpoint: ZipkinEndpoint | None = None
    remoteEndpoint: ZipkinEndpoint | None = None
    annotations: list[ZipkinAnnotation] | None = None
    tags: dict[str, str] | None = None
    debug: bool | None = None
    shared: bool | None = None


class DependencyLink(BaseModel):
    parent: str
    child: str
    callCount: int
    errorCount: int = 0


class HistogramBar(BaseModel):
    start: float = Field(description="epoch seconds; the bar covers [start, start + bucket_s)")
    counts: dict[str, int] = Field(description='matching records by status class: "2xx" … "5xx", "none"')


class Histogram(BaseModel):
    start: float
    end: float
    bucket_s: int
    total: int
    bars: list[HistogramBar] = Field(description="in time order; empty buckets left out")


class GraphNode(BaseModel):
    id: str = Field(description="a workload (proxy cluster) or an upstream service")
    kind: str = Field(description="workload (its proxy sent records) or service (seen only as upstream)")
    inbound: int = Field(0, description="requests into it in the range")
    inbound_5xx: int = 0
    health: str = "healthy"


class GraphEdge(BaseModel):
    source: str
    target: str
    cluster: str = Field(description="the Envoy upstream cluster, as logged")
    requests: int
    rate: float = Field(description="requests per second over the range")
    error_ratio: float = Field(description="share of 5xx responses, 0..1")
    retried_ratio: float = Field(description="share of retried requests, 0..1")
    p99_ms: float | None = None
    health: str = Field(description="healthy, degraded or failing (by 5xx ratio)")


class ServiceGraph(BaseModel):
    start: float
    end: float
    nodes: list[GraphNode]
    edges: list[GraphEdge]
