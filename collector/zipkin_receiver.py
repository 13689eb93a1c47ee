"""The Zipkin v2 span receiver (``POST /api/v2/spans``) as a Starlette app, with /healthz and /metrics.

Answers as Zipkin's own server: 202 once the spans are safe (bus ack or spool fsync), 400 with a
message for a body that is not a valid span list, 413 past the size limit, 415 for an unknown
content type; and 503 when the collector is full (backpressure), so the sender retries later.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from meshscope.collector.access_control import http_identity
from meshscope.collector.publisher import Backpressure, Publisher
from meshscope.collector.zipkin_spans import BadSpans, spans_from_json, spans_from_proto
from meshscope.pipelines.bus import SPANS
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

MAX_BODY_BYTES = 16 * 1024 * 1024  # after decompression as well (a gzip bomb stops here)


class BodyTooLarge(Exception):
    """The request body passed the receiver's limit."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, gunzipped when Content-Encoding says gzip; BodyTooLarge past ``limit`` either way."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    gzipped = request.headers.get("content-encoding", "").strip().lower() == "gzip"
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if inflater is not None:
            chunk = inflater.decompress(chunk, limit - size + 1)
            if inflater.unconsumed_tail:
                raise BodyTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    if inflater is not None:
        chunks.append(inflater.flush())
        if not inflater.eof:
            raise zlib.error("truncated gzip body")
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def make_app(publisher: Publisher, health: Callable[[], dict] | None = None,
             max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """The receiver's ASGI app; ``health`` supplies the /healthz and /readyz body (status 'ok',
    'degraded' or 'not ready', with a reason)."""
    metrics = publisher.metrics

    async def post_spans(request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type == "application/x-protobuf":
            decode, protocol = spans_from_proto, "zipkin_proto"
        elif content_type in ("application/json", "text/plain", ""):
            decode, protocol = spans_from_json, "zipkin_json"
        else:
            metrics.rejected.labels("zipkin", "content_type").inc()
            return _error(415, f"unsupported content type {content_type!r}: use application/json "
                               "or application/x-protobuf")
        try:
            body = await _read_body(request, max_body_bytes)
            spans = decode(body)
        except BodyTooLarge as exc:
            metrics.rejected.labels(protocol, "too_large").inc()
            return _error(413, str(exc))
        except zlib.error as exc:
            metrics.rejected.labels(protocol, "bad_gzip").inc()
            return _error(400, f"bad gzip body: {exc}")
        except BadSpans as exc:
            metrics.rejected.labels(protocol, "malformed").inc()
            return _error(400, str(exc))
        identity = http_identity(request.scope)
        if identity:
            for span in spans:
                span.tags["meshscope.auth"] = identity
        try:
            await publisher.submit(SPANS, spans, protocol, wait=False)
        except Backpressure as exc:
            return _error(503, f"collector busy, retry later: {exc}")
        return Response(status_code=202)

    async def healthz(request: Request) -> Response:
        body = health() if health else {"status": "ok"}
        return JSONResponse(body)

    async def readyz(request: Request) -> Response:
        """Readiness: 503 with the reason while the collector refuses records (disk full, bus stuck)."""
        body = health() if health else {"status": "ok"}
        return JSONResponse(body, status_code=503 if body.get("status") == "not ready" else 200)

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/api/v2/spans", post_spans, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ])
