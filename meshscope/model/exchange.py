"""Exchange: one HTTP/1 request/response, HTTP/2 stream (gRPC call), TLS or QUIC handshake or DNS lookup
seen in a capture."""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b as _blake2b

from meshscope.model.ids import NONE_PART, normalize_request_id
from meshscope.model.record import Record


@dataclass(slots=True, kw_only=True)
class Connection:
    """The TCP connection an exchange travelled on, as one capture point saw it."""

    src: str
    sport: int
    dst: str
    dport: int
    capture: str = ""  # capture file (or upload) it was seen in
    interface: str | None = None  # interface name or index when the capture records it
    client_isn: int | None = None  # initial sequence numbers: kept across a NAT hop
    server_isn: int | None = None
    syn_time: float | None = None
    handshake_seen: bool = False
    transport: str = "tcp"  # "tcp", or "udp" (DNS, QUIC)
    # who the ends are, where known: client.pod, server.namespace, client.pid, client.command, …
    # (decoders.pod_labels: ptcpdump's packet comments, a kubectl listing of pod and service IPs)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


@dataclass(slots=True, kw_only=True)
class H2Stream:
    """What an HTTP/2 stream adds to a request/response (:method, :path, :authority, :status are the
    exchange's method, uri, host and status)."""

    scheme: str | None = None  # :scheme
    trailers: dict[str, str] = field(default_factory=dict)  # response trailers (HEADERS after the DATA)
    end_time: float | None = None  # the stream's last frame either way
    ended: str | None = None  # "END_STREAM", "RST_STREAM CANCEL by client", "GOAWAY …", "capture end", …
    pushed_by: int | None = None  # a server push: the stream its PUSH_PROMISE came on
    undecoded_headers: int = 0  # header fields whose HPACK table entry the capture never saw


@dataclass(slots=True, kw_only=True)
class GrpcCall:
    """A gRPC call on an HTTP/2 stream (content-type application/grpc*)."""

    service: str | None = None  # from :path /package.Service/Method
    method: str | None = None
    status: str | None = None  # by name: "OK", "UNAVAILABLE", … (trailers, or a trailers-only response)
    status_code: int | None = None
    message: str | None = None  # grpc-message, percent-decoded
    timeout: str | None = None  # grpc-timeout as sent ("100m")
    encoding: str | None = None  # grpc-encoding
    request_messages: int = 0  # length-prefixed messages each way
    response_messages: int = 0
    request_sizes: list[int] = field(default_factory=list)  # the first few messages' lengths
    response_sizes: list[int] = field(default_factory=list)
    compressed: bool = False  # a message had its compressed flag set


@dataclass(slots=True, kw_only=True)
class DnsAttempt:
    """One name a lookup tried before its last (a search-domain expansion answered NXDOMAIN)."""

    name: str
    qtype: str
    rcode: str | None = None  # None: never answered
    query_time: float | None = None
    answer_time: float | None = None
    retries: int = 0


@dataclass(slots=True, kw_only=True)
class DnsQuery:
    """What a DNS lookup adds to an Exchange: the last name tried and its answer; ``attempts``
    are the names tried before it (search-domain expansion), in order."""

    id: int  # transaction id of the last query
    name: str
    qtype: str  # "A", "AAAA", "SRV", … or the number
    rcode: str | None = None  # "NOERROR", "NXDOMAIN", "SERVFAIL", …; None: no answer captured
    answers: list[str] = field(default_factory=list)  # "A 10.0.0.8", "CNAME x.example", …
    retries: int = 0  # the same query sent again before its answer
    lookup: str | None = None  # the name asked for, before expansion (the attempts' common start)
    attempts: list[DnsAttempt] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class QuicInitial:
    """What a QUIC connection's client Initial shows (the TLS fields are the exchange's own)."""

    version: str  # "1", "2", "draft-29" or the hex number
    dcid: str  # the client's first destination connection id, hex (the Initial keys come from it)
    client_packets: int = 0  # QUIC packets seen each way on the connection, Initials included
    server_packets: int = 0


@dataclass(slots=True, kw_only=True)
class Exchange(Record):
    kind = "exchange"

    exchange_type: str  # "http" (HTTP/1 or HTTP/2), "tls" (also QUIC's) or "dns"
    conn: Connection
    index: int = 0  # position on its connection (0, 1, 2 … for keep-alive; the stream id on HTTP/2)
    request_time: float | None = None
    response_time: float | None = None
    # HTTP
    method: str | None = None
    uri: str | None = None
    host: str | None = None
    http_version: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # identifying request headers, lower-cased
    response_headers: dict[str, str] = field(default_factory=dict)
    request_body_bytes: int = 0
    response_body_bytes: int = 0
    # Istio peer metadata (decoded x-envoy-peer-metadata)
    peer_workload: str | None = None
    peer_namespace: str | None = None
    # the same, from the response's x-envoy-peer-metadata (the upstream workload that answered)
    server_peer_workload: str | None = None
    server_peer_namespace: str | None = None
    # TLS
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    tls_offered_versions: list[str] = field(default_factory=list)
    tls_version: str | None = None  # chosen by the ServerHello
    # decryption from a key log: "decrypted" (also on the HTTP exchanges read through it), "no key",
    # "wrong key", "handshake not captured", "unsupported cipher suite …"; None when no key log was given
    tls_decryption: str | None = None
    tls_cipher_suite: str | None = None
    tls_client_identity: str | None = None  # SPIFFE ids from the certificates (URI SAN)
    tls_server_identity: str | None = None
    # HTTP/2 (one stream) and gRPC on top of it; None on HTTP/1 and TLS exchanges
    protocol: str | None = None  # "h2" or "grpc"
    stream_id: int | None = None
    h2: H2Stream | None = None
    grpc: GrpcCall | None = None
    # DNS (exchange_type "dns") and QUIC (a "tls" exchange whose conn.transport is "udp")
    dns: DnsQuery | None = None
    quic: QuicInitial | None = None
    tunnel: str | None = None  # carried inside an HTTP CONNECT tunnel: "CONNECT host:port"
    # damage seen on this exchange (gaps, truncation)
    damage: list[str] = field(default_factory=list)

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @property
    def request_id_norm(self) -> str | None:
        return normalize_request_id(self.request_id)

    def time(self) -> float | None:
        return self.request_time or self.response_time or self.conn.syn_time

    def compute_id(self) -> str:
        # record_id("exchange", c.capture, c.interface, c.src, c.sport, c.dst, c.dport, c.client_isn,
        # c.syn_time, self.exchange_type, self.index, self.request_time), its text written out in
        # f-strings: an id is made for every decoded exchange (tests/model check both give the same).
        # The 5-tuple and its ISN name one connection: a reused port pair is another connection.
        return exchange_id(connection_id_hash(self.conn), self.exchange_type, self.index, self.request_time)


def connection_id_hash(c: Connection):
    """blake2b fed with a connection's part of its exchanges' ids: the decoders keep one per
    connection and finish a copy for each exchange (exchange_id), instead of hashing it all again."""
    n = NONE_PART
    return _blake2b(
        f"exchange\x1e{c.capture}\x1e{n if c.interface is None else c.interface}\x1e{c.src}\x1e{c.sport}"
        f"\x1e{c.dst}\x1e{c.dport}\x1e{n if c.client_isn is None else c.client_isn}"
        f"\x1e{n if c.syn_time is None else c.syn_time}\x1e".encode(), digest_size=16)


def exchange_id(conn_hash, exchange_type: str, index: int, request_time: float | None) -> str:
    """Exchange.compute_id from its connection's connection_id_hash()."""
    h = conn_hash.copy()
    t = NONE_PART if request_time is None else request_time
    h.update(f"{exchange_type}\x1e{index}\x1e{t}\x1e".encode())
    return h.hexdigest()
