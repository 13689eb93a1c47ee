"""Decoded exchanges parked on disk while stitching works on their facts.

A million-packet capture yields over a hundred thousand exchanges; held whole they would cost
~2.5 KB each. ``ExchangeSpool`` writes each one as a JSON line to an anonymous temporary file
and keeps only ``ExchangeFacts`` — what stitching and the flow graphs read — in memory. The
spool iterates as Exchanges again, streams its JSON without re-parsing, and pickles as a plain
list (the API hands an analysis from a worker process to the server).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from meshscope.model import Connection, DnsQuery, Exchange, GrpcCall, QuicInitial

# request headers stitching reads (ids, forwarding chain, trace context, proxy marks)
STITCH_HEADERS = tuple((
    "x-request-id", "x-forwarded-for", "x-envoy-attempt-count", "x-envoy-expected-rq-timeout-ms",
    "x-envoy-decorator-operation", "x-envoy-internal", "b3", "x-b3-traceid", "x-b3-spanid",
    "x-b3-parentspanid", "x-b3-sampled", "x-forwarded-proto", "x-envoy-external-address",
))


# the headers that identify a request or say who handled it; the rest is dropped on reading
REQUEST_HEADERS = frozenset((
    "host", "user-agent", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert",
    "x-envoy-attempt-count", "x-envoy-expected-rq-timeout-ms", "x-envoy-original-path", "x-envoy-internal",
    "x-envoy-decorator-operation", "x-envoy-peer-metadata-id", "x-envoy-retry-on", "b3", "traceparent",
    "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
    "x-ot-span-context", "content-length", "transfer-encoding", "connection", "x-envoy-external-address",
))
RESPONSE_HEADERS = frozenset((
    "server", "content-type", "content-length", "transfer-encoding", "connection", "x-request-id",
    "x-envoy-upstream-service-time", "x-envoy-peer-metadata-id", "x-envoy-overloaded", "retry-after",
))



def slim(ex: Exchange) -> Exchange:
    """Keep only the identifying headers of a freshly decoded exchange (peer metadata is decoded
    already into peer_workload/peer_namespace)."""
    if ex.headers:
        ex.headers = {k: v for k, v in ex.headers.items() if k in REQUEST_HEADERS}
    if ex.response_headers:
        ex.response_headers = {k: v for k, v in ex.response_headers.items() if k in RESPONSE_HEADERS}
    return ex


@dataclass(slots=True, eq=False)
class ExchangeFacts:
    """What stitching and the graphs need of an Exchange (same attribute names, so either will do)."""

    id: str
    exchange_type: str
    conn: Connection
    index: int
    request_time: float | None
    response_time: float | None
    method: str | None
    uri: str | None
    host: str | None
    status: int | None
    reason: str | None
    sni: str | None
    tls_version: str | None
    peer_workload: str | None
    peer_namespace: str | None
    server_peer_workload: str | None
    server_peer_namespace: str | None
    headers: dict[str, str] = field(default_factory=dict)
    alpn: list[str] = field(default_factory=list)
    tls_offered_versions: list[str] = field(default_factory=list)
    protocol: str | None = None  # HTTP/2 and gRPC: what the graphs label a stream with
    stream_id: int | None = None
    grpc: GrpcCall | None = None
    tls_decryption: str | None = None  # set when a key log was given (decoders.tls_decrypting_analyzer)
    dns: DnsQuery | None = None  # a DNS lookup (its answers and attempts: the graphs draw them)
    quic: QuicInitial | None = None
    tunnel: str | None = None  # inside an HTTP CONNECT tunnel
    tls_client_identity: str | None = None  # SPIFFE ids of a mesh leg's ends: the graphs label them
    tls_server_identity: str | None = None

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @classmethod
    def of(cls, ex: Exchange) -> ExchangeFacts:
        """The facts of one exchange; repeated strings (methods, hosts, addresses, header names) are
        shared, since the same few values recur across a capture."""
        h = ex.headers
        c = ex.conn
        c.src, c.dst = _intern(c.src), _intern(c.dst)  # same values: only the copies are dropped
        return cls(id=ex.id, exchange_type=ex.exchange_type, conn=c, index=ex.index,
                   request_time=ex.request_time, response_time=ex.response_time,
                   method=_intern(ex.method), uri=ex.uri, host=_intern(ex.host), status=ex.status,
                   reason=_intern(ex.reason), sni=_intern(ex.sni), tls_version=_intern(ex.tls_version),
                   peer_workload=_intern(ex.peer_workload), peer_namespace=_intern(ex.peer_namespace),
                   server_peer_workload=_intern(ex.server_peer_workload),
                   server_peer_namespace=_intern(ex.server_peer_namespace),
                   headers={name: _intern(h[name]) if name in _SHARED_VALUES else h[name]
                            for name in STITCH_HEADERS if name in h},
                   alpn=ex.alpn or _NONE, tls_offered_versions=ex.tls_offered_versions or _NONE,
                   protocol=ex.protocol, stream_id=ex.stream_id, grpc=_slim_grpc(ex.grpc),
                   tls_decryption=ex.tls_decryption, dns=ex.dns, quic=ex.quic, tunnel=ex.tunnel,
                   tls_client_identity=ex.tls_client_identity, tls_server_identity=ex.tls_server_identity)


    @staticmethod
    def conn_tuple(c: Connection) -> tuple:
        """A connection as a plain, hashable tuple (conn_of() gives it back); addresses interned."""
        return (sys.intern(c.src), c.sport, sys.intern(c.dst), c.dport, c.capture, c.interface, c.client_isn,
                c.server_isn, c.syn_time, c.handshake_seen, c.transport,
                tuple(c.labels.items()) if c.labels else ())

    @staticmethod
    def conn_of(t: tuple) -> Connection:
        # named one by one, not zipped into a dict: one per connection received from a decode worker
        (src, sport, dst, dport, capture, interface, client_isn, server_isn, syn_time, handshake_seen,
         transport, labels) = t
        return Connection(src=src, sport=sport, dst=dst, dport=dport, capture=capture, interface=interface,
                          client_isn=client_isn, server_isn=server_isn, syn_time=syn_time,
                          handshake_seen=handshake_seen, transport=transport, labels=dict(labels))

    @staticmethod
    def tuple_of(ex: Exchange, conn_key: int) -> tuple:
        """The facts of an exchange as a plain tuple, its connection given as a key into a list of
        Connections (from_tuple()): what a decode worker sends, each connection once, cheap to
        pickle. Repeated strings are interned, so that one pickled batch carries each of them once."""
        h, intern = ex.headers, sys.intern
        return (ex.id, ex.exchange_type, conn_key,
                ex.index, ex.request_time, ex.response_time, ex.method and intern(ex.method), ex.uri,
                ex.host and intern(ex.host), ex.status, ex.reason and intern(ex.reason),
                ex.sni and intern(ex.sni), ex.tls_version, ex.peer_workload, ex.peer_namespace,
                ex.server_peer_workload, ex.server_peer_namespace,
                {name: intern(h[name]) if name in _SHARED_VALUES else h[name]
                 for name in STITCH_HEADERS if name in h},
                ex.alpn or _NONE, ex.tls_offered_versions or _NONE, ex.protocol, ex.stream_id,
                _slim_grpc(ex.grpc), ex.tls_decryption, ex.dns, ex.quic, ex.tunnel, ex.tls_client_identity,
                ex.tls_server_identity)

    @classmethod
    def from_tuple(cls, t: tuple, conns: list[Connection]) -> ExchangeFacts:
        """Back from tuple_of(); ``conns`` holds the Connections its keys name, shared among their
        exchanges."""
        return cls(t[0], t[1], conns[t[2]], *t[3:])


_NONE: list[str] = []  # shared by every exchange without ALPN/versions; facts are never changed
_SHARED_VALUES = frozenset(("x-forwarded-for", "x-b3-sampled", "x-envoy-attempt-count", "x-envoy-internal",
                            "x-envoy-expected-rq-timeout-ms", "x-envoy-decorator-operation"))


def _slim_grpc(call: GrpcCall | None) -> GrpcCall | None:
    """What stitching and the graphs read of a gRPC call (service, method, status), no lists of its own."""
    if call is None:
        return None
    return GrpcCall(service=_intern(call.service), method=_intern(call.method), status=call.status,
                    request_sizes=_NONE, response_sizes=_NONE)


def _intern(value: str | None) -> str | None:
    if value is None:
        return None
    return sys.intern(value if type(value) is str else str(value))  # a str subclass (pyshark's) cannot be


class ExchangeSpool:
    """Exchanges on disk as JSON lines, in the order written; iterating gives Exchanges back."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="meshscope-exchanges-")
        self.ids: list[str] = []  # in the order written
        self.skip: set[str] = set()  # ids left out when reading back (copies folded away)

    def park(self, exchanges: Iterable[Exchange]) -> Iterator[ExchangeFacts]:
        """Write each exchange to the spool and pass on its facts."""
        write = self._file.write
        for ex in exchanges:
            write(orjson.dumps(ex) + b"\n")
            self.ids.append(ex.id)
            yield ExchangeFacts.of(ex)

    def park_batches(self, batches: Iterable[tuple[bytes, list[ExchangeFacts]]]) -> Iterator[ExchangeFacts]:
        """Like park(), for exchanges already serialised: each batch is their JSON lines (each
        ending in a newline) and their facts, in the same order."""
        write = self._file.write
        for lines, facts in batches:
            write(lines)
            self.ids.extend(f.id for f in facts)
            yield from facts

    def __len__(self) -> int:
        return len(self.ids) - len(self.skip)

    def lines(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Each kept exchange's JSON (no newline); pread, so two readers never disturb each other."""
        self._file.flush()
        fd, pos, rest, n, ids, skip = self._file.fileno(), 0, b"", 0, self.ids, self.skip
        while True:
            data = os.pread(fd, chunk, pos)
            if not data:
                break
            pos += len(data)
            parts = (rest + data).split(b"\n")
            rest = parts.pop()
            for line in parts:
                if not skip or ids[n] not in skip:
                    yield line
                n += 1

    def joined(self, sep: bytes = b",", chunk: int = 1 << 20) -> Iterator[bytes]:
        """The kept exchanges' JSON joined by ``sep``, in pieces: when nothing is skipped, whole
        chunks of the file with their newlines replaced (a C call per megabyte, not per line)."""
        if self.skip:
            for i, line in enumerate(self.lines(chunk)):
                yield sep + line if i else line
            return
        self._file.flush()
        fd, pos = self._file.fileno(), 0
        end = os.fstat(fd).st_size - 1  # every line ends in a newline: the last one is not a separator
        while pos < end:
            data = os.pread(fd, min(chunk, end - pos), pos)
            if not data:
                break
            pos += len(data)
            yield data.replace(b"\n", sep)

    def __iter__(self) -> Iterator[Exchange]:
        for line in self.lines():
            yield Exchange.from_json(line)

    def __reduce__(self):
        return (list, (list(self),))

    def close(self) -> None:
        self._file.close()
