"""OTLP receivers for logs and traces: OTLP/gRPC (``LogsService/Export``, ``TraceService/Export``, on
settings.otlp_grpc_port, 4317) and OTLP/HTTP (``POST /v1/logs``, ``/v1/traces``; protobuf or JSON, gzip
or not, on settings.otlp_http_port, 4318), into the same durable publisher as the gRPC access logs.

Answers as the OTLP specification asks: success only once the records are safe (bus ack or spool
fsync); a log record that cannot be read is reported in ``partial_success`` and the rest are kept; a
request that cannot be decoded is INVALID_ARGUMENT / 400 with the reason; a full collector is
UNAVAILABLE / 503, which OTLP exporters retry.

Access is the other receivers' (``access_control``): TLS when the collector has a certificate, client
certificates with ``collector_client_ca``, the bearer token on both transports; each record says how
its sender proved itself (``node_auth``). The HTTP listener takes the app's uvicorn options (read
timeouts for slow clients, ``meshscope.serving.guarded_http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import zlib
from collections import Counter
from functools import partial
from operator import attrgetter

import grpc
import uvicorn
from google.rpc import status_pb2
from meshscope.collector.access_control import ReceiverAccess, http_identity, peer_identity
from meshscope.collector.als_server import anonymous_node_id
from meshscope.collector.otlp_records import (
    BadOtlp,
    ExportLogsServiceRequest,
    ExportTraceServiceRequest,
    LogConverter,
    decode_json,
    decode_logs,
    decode_protobuf,
    logs_service_pb2,
    spans,
    trace_service_pb2,
)
from meshscope.collector.publisher import Backpressure, Publisher
from meshscope.collector.zipkin_receiver import MAX_BODY_BYTES, BodyTooLarge
from meshscope.collector.zipkin_receiver import _read_body as read_body
from meshscope.pipelines.bus import ACCESS, SPANS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_NODE_ID = attrgetter("node_id")


class OtlpReceiver:
    """Turns OTLP export requests into records and publishes them; counts what arrived per proxy."""

    def __init__(self, publisher: Publisher, access: ReceiverAccess | None = None) -> None:
        self.publisher = publisher
        self.access = access or ReceiverAccess()  # how senders prove themselves (records say which)
        self.converter = LogConverter()
        self.arrived: Counter[str] = Counter()  # node id → log records made safe

    async def take_logs(self, request, identity: str | None = None,
                        peer: str = "") -> logs_service_pb2.ExportLogsServiceResponse:
        """Publish a request's log records (``identity``: how the sender proved itself, kept on each
        record as ``node_auth``; ``peer``: its address, naming a proxy that sent no node id as the
        access-log service does); Backpressure when the collector is full. The request is let go once
        converted (the callers pass it without keeping it): its decoded bodies need not wait out the
        fsync beside the records, where they held the cache that the next requests' records missed."""
        skipped_before = self.converter.skipped
        records = self.converter.records(request)
        del request
        for r in records:
            if identity is not None:
                r.node_auth = identity
            if not r.node_id:  # Envoy without a node id sends an empty node_name
                r.node_id = anonymous_node_id(peer, r.log_name)
                r.id = r.compute_id()
        rejected = self.converter.skipped - skipped_before
        if rejected:
            self.publisher.metrics.rejected.labels("otlp_logs", "unreadable").inc(rejected)
        await self.publisher.submit(ACCESS, records, "otlp_logs", wait=False)
        self.arrived.update(map(_NODE_ID, records))
        response = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = self.converter.last_error[:500]
        return response

    async def take_traces(self, request, identity: str | None = None,
                          peer: str = "") -> trace_service_pb2.ExportTraceServiceResponse:
        out = spans(request)
        if identity is not None:
            for span in out:
                span.tags["meshscope.auth"] = identity
        await self.publisher.submit(SPANS, out, "otlp_traces", wait=False)
        return trace_service_pb2.ExportTraceServiceResponse()

    # ---- gRPC --------------------------------------------------------------------------------
    def _grpc_method(self, decode, take, protocol: str):
        async def export(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                response = await take(decode(raw), peer_identity(context, self.access), context.peer())
            except BadOtlp as exc:
                self.publisher.metrics.rejected.labels(protocol, "malformed").inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Backpressure as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"collector cannot take records: {exc}")
            return response.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(export)  # raw bytes in and out

    def handler(self) -> grpc.GenericRpcHandler:
        """Both OTLP services, for a grpc.aio server (one generic handler per service)."""
        logs = grpc.method_handlers_generic_handler(
            LOGS_SERVICE, {"Export": self._grpc_method(decode_logs, self.take_logs, "otlp_logs")})
        traces = grpc.method_handlers_generic_handler(
            TRACE_SERVICE, {"Export": self._grpc_method(_decode_traces, self.take_traces, "otlp_traces")})
        return _Both(logs, traces)

    # ---- HTTP --------------------------------------------------------------------------------
    def http_app(self, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
        metrics = self.publisher.metrics

        def endpoint(message_type, decode, take, protocol: str):
            async def post(request: Request) -> Response:
                content_type = request.headers.get("content-type", PROTOBUF).split(";")[0].strip().lower()
                if content_type not in (PROTOBUF, JSON):
                    metrics.rejected.labels(protocol, "content_type").inc()
                    return _status(JSON, 415, f"unsupported content type {content_type!r}: use {PROTOBUF} "
                                              f"or {JSON}")
                try:
                    body = await read_body(request, max_body_bytes)
                    read = decode if content_type == PROTOBUF else partial(decode_json, message_type)
                    client = request.client
                    peer = f"{client.host}:{client.port}" if client else ""
                    response = await take(read(body), http_identity(request.scope), peer)
                except BodyTooLarge as exc:
                    metrics.rejected.labels(protocol, "too_large").inc()
                    return _status(content_type, 413, str(exc))
                except zlib.error as exc:
                    metrics.rejected.labels(protocol, "bad_gzip").inc()
                    return _status(content_type, 400, f"bad gzip body: {exc}")
                except BadOtlp as exc:
                    metrics.rejected.labels(protocol, "malformed").inc()
                    return _status(content_type, 400, str(exc))
                except Backpressure as exc:
                    return _status(content_type, 503, f"collector busy, retry later: {exc}",
                                   headers={"Retry-After": "1"})
                if content_type == PROTOBUF:
                    return Response(response.SerializeToString(), media_type=PROTOBUF)
                from google.protobuf import json_format

                return JSONResponse(json_format.MessageToDict(response))

            return post

        return Starlette(routes=[
            Route("/v1/logs", endpoint(ExportLogsServiceRequest, decode_logs, self.take_logs, "otlp_logs"),
                  methods=["POST"]),
            Route("/v1/traces", endpoint(ExportTraceServiceRequest, _decode_traces, self.take_traces,
                                         "otlp_traces"), methods=["POST"]),
        ])


def _decode_traces(body: bytes):
    return decode_protobuf(ExportTraceServiceRequest, body)


class _Both(grpc.GenericRpcHandler):
    """Two generic handlers as one (AccessLogServer-style servers register one handler)."""

    def __init__(self, *handlers: grpc.GenericRpcHandler) -> None:
        self.handlers = handlers

    def service(self, handler_call_details):
        for h in self.handlers:
            found = h.service(handler_call_details)
            if found is not None:
                return found
        return None


def _status(content_type: str, code: int, message: str, headers: dict | None = None) -> Response:
    """An OTLP/HTTP error: a google.rpc.Status in the request's encoding."""
    grpc_code = {400: 3, 413: 8, 415: 3, 503: 14}.get(code, 2)
    if content_type == PROTOBUF:
        body = status_pb2.Status(code=grpc_code, message=message).SerializeToString()
        return Response(body, status_code=code, media_type=PROTOBUF, headers=headers)
    return JSONResponse({"code": grpc_code, "message": message}, status_code=code, headers=headers)


class HttpListener:
    """An ASGI app served by uvicorn on host:port inside the caller's event loop (port 0: a free one).
    Bound here, not by uvicorn, so a taken port is an OSError for the caller."""

    def __init__(self, app, host: str, port: int, name: str, options: dict | None = None) -> None:
        self.app, self.host, self.port, self.name = app, host, port, name
        self.options = options or {}  # more uvicorn.Config keywords: TLS, the h11 protocol with timeouts
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> int:
        try:
            sock = socket.create_server((self.host, self.port))
        except OSError as exc:
            raise OSError(f"the {self.name} could not listen on {self.host}:{self.port}: "
                          f"{exc.strerror or exc}") from exc
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                     lifespan="off", **self.options))
        self._server.install_signal_handlers = lambda: None
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self.name)
        while not self._server.started:
            if self._task.done():
                raise OSError(f"the {self.name} on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.02)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
