"""A minimal receiving end for the tests: a gRPC AccessLogService and a Zipkin v2 JSON endpoint that
only keep what Envoy sends, so proxy tests can check the wiring without the collector package."""

from __future__ import annotations

import json
import time
from concurrent import futures

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from fastapi import FastAPI, Request
from meshscope.collector.zipkin_spans import spans_from_proto
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.telemetry import CollectorTarget

from tests.conftest import free_port


class _AccessLogs(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self) -> None:
        self.messages: list[als_pb2.StreamAccessLogsMessage] = []

    def StreamAccessLogs(self, request_iterator, context):  # noqa: N802 - gRPC method name
        for message in request_iterator:
            self.messages.append(message)
        return als_pb2.StreamAccessLogsResponse()


class TelemetrySink:
    """`with TelemetrySink() as sink:` → `sink.target`, `sink.http_entries()`, `sink.spans`."""

    def __init__(self) -> None:
        self.service = _AccessLogs()
        self.spans: list[dict] = []
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.service, self.grpc_server)
        als_port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        spans = self.spans
        zipkin = FastAPI()

        @zipkin.post("/api/v2/spans", status_code=202)
        async def receive(request: Request) -> None:
            # Envoy posts chunked Zipkin v2 span lists, proto3 by default, JSON if configured so
            body = await request.body()
            if request.headers.get("content-type", "").startswith("application/x-protobuf"):
                spans.extend({"kind": s.span_kind, "tags": s.tags} for s in spans_from_proto(body))
            else:
                spans.extend(json.loads(body))

        self.zipkin = DemoUpstream(port=free_port(), app=zipkin)
        self.target = CollectorTarget("127.0.0.1", als_port, self.zipkin.port)

    def http_entries(self) -> list:
        return [e for m in list(self.service.messages) for e in m.http_logs.log_entry]

    def tcp_entries(self) -> list:
        return [e for m in list(self.service.messages) for e in m.tcp_logs.log_entry]

    def wait_for(self, condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"telemetry did not arrive in {timeout:g}s: {len(self.http_entries())} HTTP entries, "
                    f"{len(self.tcp_entries())} TCP entries, {len(self.spans)} spans"
                )
            time.sleep(0.05)

    def __enter__(self) -> TelemetrySink:
        self.grpc_server.start()
        self.zipkin.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.grpc_server.stop(0)
        self.zipkin.stop()
