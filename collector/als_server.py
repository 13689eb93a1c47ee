"""Envoy's gRPC AccessLogService (``StreamAccessLogs``) on grpc.aio: entries → AccessRecords → publisher.

The method is registered with raw-bytes requests so a malformed message is answered with a clear
INVALID_ARGUMENT for that stream alone (grpc's own deserializer would only say "Exception
deserializing request"). While one batch of a stream is being published, the records of the messages
read meanwhile wait to go as the next batch (up to 5,000, then reading stops: backpressure instead of
filling memory); the stream ends OK only once every record is durable, and fails if one cannot be.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator

import grpc
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf.message import DecodeError
from meshscope.collector.access_control import ReceiverAccess, peer_identity
from meshscope.collector.access_entries import LogSource, message_records
from meshscope.collector.grpc_calls import ServerCalls
from meshscope.collector.publisher import Backpressure, Publisher
from meshscope.pipelines.bus import ACCESS

log = logging.getLogger(__name__)

SERVICE = "envoy.service.accesslog.v3.AccessLogService"
StreamAccessLogsMessage = als_pb2.StreamAccessLogsMessage
_EMPTY_RESPONSE = als_pb2.StreamAccessLogsResponse().SerializeToString()


def anonymous_node_id(peer: str, log_name: str) -> str:
    """A stand-in node id for a proxy that sends none (Envoy without ``--service-node``/``node.id``):
    ``anonymous~PEER_IP~LOG_NAME``, in Istio's ``TYPE~IP~NAME`` shape so the one node-id parser shows
    it by log name and address. The peer's port is left out: it changes with every reconnection."""
    addr = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer
    host = addr.rsplit(":", 1)[0].strip("[]") if ":" in addr else addr
    return f"anonymous~{host}~{log_name or 'unnamed'}"


class AccessLogServicer:
    """Receives access-log streams; counts what arrived per proxy (node id) for loss accounting."""

    def __init__(self, publisher: Publisher, access: ReceiverAccess | None = None) -> None:
        self.publisher = publisher
        self.access = access or ReceiverAccess()
        self.arrived: Counter[str] = Counter()  # node id -> entries received and made safe
        self.streams_failed: Counter[str] = Counter()  # node id ("" before an identifier) -> streams
        self.too_large: Counter[str] = Counter()  # node id -> messages refused for their size
        self.cut = 0  # streams gRPC ended under the handler (counted in streams_failed too)
        #: messages past this are refused and counted here; gRPC itself refuses past the server's ceiling
        self.max_message_bytes = 4 * 1024 * 1024

    async def stream_access_logs(self, requests: AsyncIterator[bytes],
                                 context: grpc.aio.ServicerContext) -> bytes:
        """Handle one stream: the identifier from its first message applies to every entry."""
        node = [""]  # the stream's node id, once its first message named it
        try:
            return await self._read_stream(requests, context, node)
        except asyncio.CancelledError:
            # gRPC ended the stream under us: a message past the server's ceiling, the sender's
            # deadline or cancel. What was published stays; say that the stream was cut.
            self.publisher.metrics.rejected.labels("als", "cut").inc()
            self.cut += 1
            self.streams_failed[node[0]] += 1
            log.warning("access-log stream from %s cut by gRPC (a message over the size ceiling, or the "
                        "sender gave up)", context.peer())
            raise

    async def _read_stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext,
                           node: list[str]) -> bytes:
        source: LogSource | None = None
        metrics = self.publisher.metrics
        identity = peer_identity(context, self.access)
        # records of messages read while earlier ones are being made durable are coalesced into the
        # next publish: a group commit then covers many of Envoy's small messages, and the stream
        # ends OK only once all are on disk
        sink: _StreamSink | None = None
        async for raw in requests:
            if len(raw) > self.max_message_bytes:
                metrics.rejected.labels("als", "too_large").inc()
                self.too_large[node[0]] += 1
                self.streams_failed[node[0]] += 1
                log.warning("access-log message of %d bytes from %s (%s) refused: the limit is %d bytes; "
                            "its entries are lost", len(raw), node[0] or "an unidentified proxy",
                            context.peer(), self.max_message_bytes)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"message of {len(raw)} bytes exceeds the collector's limit of "
                                    f"{self.max_message_bytes} bytes (collector_max_message_bytes)")
            try:
                message = StreamAccessLogsMessage.FromString(raw)
            except DecodeError as exc:
                metrics.rejected.labels("als", "malformed").inc()
                self.streams_failed[source.node_id if source else ""] += 1
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"malformed StreamAccessLogsMessage ({len(raw)} bytes): {exc}")
            if source is None:
                if not message.HasField("identifier"):
                    metrics.rejected.labels("als", "no_identifier").inc()
                    self.streams_failed[""] += 1
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the first StreamAccessLogsMessage of a stream must carry an identifier")
                ident = message.identifier
                node_id = ident.node.id or anonymous_node_id(context.peer(), ident.log_name)
                source = LogSource(node_id, ident.node.cluster, ident.log_name)
                node[0] = node_id
            try:
                records = message_records(message, source)
            except Exception as exc:  # noqa: BLE001 - a message we cannot convert fails its stream only
                log.exception("cannot convert an access-log message from %s", source.node_id)
                metrics.rejected.labels("als", "unconvertible").inc()
                self.streams_failed[source.node_id] += 1
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"cannot convert StreamAccessLogsMessage: {exc!r}")
            if records and identity is not None:
                for r in records:
                    r.node_auth = identity
            if records:
                if sink is None:
                    protocol = "tcp" if records[0].protocol == "TCP" else "http"
                    sink = _StreamSink(self, source.node_id, protocol)
                try:
                    await sink.put(records)
                except Backpressure as exc:
                    await self._refused(source.node_id, context, exc)
        if sink is not None:
            try:
                await sink.close()
            except Backpressure as exc:
                await self._refused(sink.node_id, context, exc)
        return _EMPTY_RESPONSE

    async def _refused(self, node_id: str, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        # a failed stream is what Envoy counts (and reconnects after): nothing is acknowledged that
        # is not on disk
        self.streams_failed[node_id] += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"collector cannot take records: {exc}")

    def handler(self) -> grpc.GenericRpcHandler:
        """The service registration for a grpc.aio server (requests arrive as bytes)."""
        method = grpc.stream_unary_rpc_method_handler(self.stream_access_logs)
        return grpc.method_handlers_generic_handler(SERVICE, {"StreamAccessLogs": method})


class _StreamSink:
    """One stream's records on their way to the publisher: one publish at a time, and what arrives
    meanwhile waits (up to ``max_waiting`` records) to go in the next, as one batch."""

    max_waiting = 5000

    def __init__(self, servicer: AccessLogServicer, node_id: str, protocol: str) -> None:
        self.servicer, self.node_id, self.protocol = servicer, node_id, protocol
        self.waiting: list = []
        self.task: asyncio.Task | None = None
        self.error: BaseException | None = None

    async def put(self, records: list) -> None:
        if self.error is not None:
            raise self.error
        self.waiting.extend(records)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._pump())
        elif len(self.waiting) >= self.max_waiting:  # backpressure: stop reading the stream
            await asyncio.shield(self.task)
            if self.error is not None:
                raise self.error

    async def _pump(self) -> None:
        while self.waiting and self.error is None:
            batch, self.waiting = self.waiting, []
            try:
                await self.servicer.publisher.submit(ACCESS, batch, self.protocol)
            except Backpressure as exc:
                self.error = exc
                return
            self.servicer.arrived[self.node_id] += len(batch)

    async def close(self) -> None:
        while self.task is not None and not self.task.done():
            await asyncio.shield(self.task)
        if self.waiting and self.error is None:
            await self._pump()
        if self.error is not None:
            raise self.error


class AccessLogServer:
    """A grpc.aio server carrying the AccessLogService on host:port (port 0 picks a free one)."""

    def __init__(self, servicer: AccessLogServicer, host: str, port: int, *,
                 access: ReceiverAccess | None = None, max_message_bytes: int = 4 * 1024 * 1024,
                 ceiling_bytes: int | None = None) -> None:
        self.servicer = servicer
        self.access = access or ReceiverAccess()
        self.max_message_bytes = max_message_bytes
        # gRPC refuses past the ceiling before the message is held, silently for us; a servicer that
        # checks sizes itself (ALS) gets messages up to the ceiling so it can count and name the refusal
        self.ceiling_bytes = max(ceiling_bytes or max_message_bytes, max_message_bytes)
        if hasattr(servicer, "max_message_bytes"):
            servicer.max_message_bytes = max_message_bytes
        self.host = host
        self.port = port
        self._server: grpc.aio.Server | None = None
        self.calls: ServerCalls | None = None  # gRPC's own count of this server's calls, once started

    async def start(self) -> int:
        # Envoy keeps one long-lived stream per logger; keepalive notices dead peers
        interceptors = self.access.grpc_interceptors()
        self.calls = ServerCalls(lambda: grpc.aio.server(interceptors=interceptors, options=[
            # Envoy flushes its buffer at 16 KiB (buffer_size_bytes): 4 MiB is generous, 64 MiB was a
            # way to make the process hold gigabytes
            ("grpc.max_receive_message_length", self.ceiling_bytes),
            ("grpc.so_reuseport", 0),  # a second collector on the same port must fail, not share it
            # read ahead up to 8 MiB per stream while a message is being published: a short stall
            # of this process (a big span batch, the embedded indexer) then does not fill Envoy's
            # stream buffer, which would make it drop entries; past that, backpressure as before
            ("grpc.http2.lookahead_bytes", 8 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ]))
        self._server = self.calls.server
        self._server.add_generic_rpc_handlers((self.servicer.handler(),))
        credentials = self.access.grpc_credentials()
        address = f"{self.host}:{self.port}"
        bound = (self._server.add_secure_port(address, credentials) if credentials is not None
                 else self._server.add_insecure_port(address))
        if not bound:
            raise OSError(f"cannot bind the access-log gRPC server to {self.host}:{self.port}")
        self.port = bound
        await self._server.start()
        log.info("access-log service on %s:%d", self.host, self.port)
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
