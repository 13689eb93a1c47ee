"""The collector as one startable object: ALS gRPC server + Zipkin receiver + durable publisher.

``Collector(settings, bus)`` runs inside any asyncio program (``meshscope collector`` and
``meshscope up`` both embed it); the caller owns the bus and starts/stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

import uvicorn
from meshscope.collector.access_control import receiver_access
from meshscope.collector.als_server import AccessLogServer, AccessLogServicer
from meshscope.collector.grpc_calls import CallsCollector
from meshscope.collector.log_imports import LogImports, intake_limits
from meshscope.collector.otlp_receiver import HttpListener, OtlpReceiver
from meshscope.collector.publisher import Publisher, PublisherMetrics
from meshscope.collector.zipkin_receiver import make_app
from meshscope.pipelines.bus import Bus

from meshscope.settings import Settings

log = logging.getLogger(__name__)


class Collector:
    """Receives Envoy access logs (gRPC, settings.als_port) and Zipkin spans (HTTP, settings.zipkin_port)."""

    def __init__(self, settings: Settings, bus: Bus, *, max_inflight: int = 50_000,
                 max_spool_bytes: int = 1024**3, publish_timeout: float = 5.0,
                 http_options: dict | None = None, wrap_http: Callable | None = None) -> None:
        """``http_options`` (uvicorn.Config keywords) and ``wrap_http`` (an ASGI wrapper) are how the app
        hands its HTTP guards to the collector's HTTP receivers (Zipkin, OTLP/HTTP): read timeouts for
        slow clients and quiet disconnects (``meshscope.serving.guarded_http``)."""
        self.settings = settings
        self.http_options = dict(http_options or {})
        wrap = wrap_http or (lambda app: app)
        self.bus = bus
        self.metrics = PublisherMetrics()
        self.publisher = Publisher(bus, settings.data_dir / "spool", metrics=self.metrics,
                                   max_inflight=max_inflight, max_spool_bytes=max_spool_bytes,
                                   publish_timeout=publish_timeout, intake=intake_limits(settings))
        self.imports = LogImports(self.publisher)  # POST /api/logs under `meshscope up`
        self.access = receiver_access(settings)  # refuses an exposed collector without credentials
        self.servicer = AccessLogServicer(self.publisher, self.access)
        limit = settings.collector_max_message_bytes
        self.als = AccessLogServer(self.servicer, settings.host, settings.als_port, access=self.access,
                                   max_message_bytes=limit, ceiling_bytes=2 * limit)
        self.app = wrap(self.access.http_guard(make_app(self.publisher, health=self.health)))
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task | None = None
        self._zipkin_port = settings.zipkin_port
        # OTLP logs and traces (Istio's envoyOtelAls and opentelemetry providers): gRPC and HTTP
        self.otlp = OtlpReceiver(self.publisher, self.access)
        # the same access rules as ALS and Zipkin (token and mTLS on gRPC; the token on HTTP)
        self.otlp_grpc = AccessLogServer(self.otlp, settings.host, settings.otlp_grpc_port,
                                         access=self.access,
                                         max_message_bytes=settings.collector_max_message_bytes)
        # TLS (and mTLS), the token and the read timeouts as on the Zipkin receiver
        self.metrics.registry.register(CallsCollector({"als": lambda: self.als.calls,
                                                       "otlp": lambda: self.otlp_grpc.calls}))
        self.otlp_http = HttpListener(wrap(self.access.http_guard(self.otlp.http_app())), settings.host,
                                      settings.otlp_http_port, "OTLP/HTTP receiver",
                                      options=self.access.uvicorn_options(self.http_options))

    @property
    def als_port(self) -> int:
        return self.als.port

    @property
    def zipkin_port(self) -> int:
        return self._zipkin_port

    async def start(self) -> None:
        """Start the publisher's replay, the gRPC server and the HTTP receiver; return once both listen.
        A port that cannot be bound is an OSError naming it (nothing is left running)."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not getattr(self.bus, "durable", True):
            log.warning("collector: the bus is not durable; acknowledged records live in memory only")
        host = self.settings.host
        await self.publisher.start()
        try:
            await self.als.start()
        except (OSError, RuntimeError) as exc:
            await self.publisher.stop()
            raise OSError(f"the access-log service could not listen on {host}:{self.settings.als_port}: "
                          f"{exc}") from exc
        try:
            # bound here, not by uvicorn: a taken port is then an OSError for the caller (uvicorn
            # would sys.exit), and with port 0 we learn the port it got
            sock = socket.create_server((host, self.settings.zipkin_port))
        except OSError as exc:
            await self.stop()
            raise OSError(f"the Zipkin receiver could not listen on {host}:{self.settings.zipkin_port}: "
                          f"{exc.strerror or exc}") from exc
        self._zipkin_port = sock.getsockname()[1]
        self._http = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                   lifespan="off",
                                                   **self.access.uvicorn_options(self.http_options)))
        self._http.install_signal_handlers = lambda: None  # the embedding program owns signals
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]), name="collector-zipkin-http")
        while not self._http.started:
            if self._http_task.done():
                await self.stop()
                raise OSError(f"the Zipkin receiver on {host}:{self._zipkin_port} did not start")
            await asyncio.sleep(0.02)
        try:
            await self.otlp_grpc.start()
        except (OSError, RuntimeError) as exc:
            await self.stop()
            raise OSError(f"the OTLP/gRPC receiver could not listen on "
                          f"{host}:{self.settings.otlp_grpc_port}: {exc}") from exc
        try:
            await self.otlp_http.start()
        except OSError:
            await self.stop()
            raise
        log.info("collector: access logs on %s:%d, spans on %s:%d, OTLP on %s:%d (gRPC) and %d (HTTP)", host,
                 self.als_port, host, self.zipkin_port, host, self.otlp_grpc.port, self.otlp_http.port)

    async def stop(self) -> None:
        """Stop receiving, then stop the publisher (spooled records stay on disk for the next run)."""
        await self.otlp_http.stop()
        await self.otlp_grpc.stop()
        if self._http is not None:
            self._http.should_exit = True
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 5)
        await self.als.stop()
        await self.publisher.stop()

    def health(self) -> dict:
        """/healthz and /readyz body: 'degraded' while records wait in the spool for the bus, 'not
        ready' while records are refused (disk full, spool full), each with the reason."""
        status, reason = self.publisher.readiness()
        return {
            "status": status,
            "reason": reason,
            "spool_bytes": self.publisher.spool.pending_bytes,
            "access_entries_by_proxy": dict(self.servicer.arrived),
            "otlp_log_records_by_proxy": dict(self.otlp.arrived),
            "access_streams_failed": dict(self.servicer.streams_failed),
            "access_messages_too_large": dict(self.servicer.too_large),
            "access_streams_cut_by_grpc": self.streams_cut_by_grpc(),
            "spool_lines_skipped": self.publisher.spool.skipped,
        }

    def streams_cut_by_grpc(self) -> int:
        """Access-log streams gRPC ended under the handler (a message past the ceiling, twice
        collector_max_message_bytes; a sender that gave up): the core's failed calls minus the streams
        the handler refused itself. The handler may see such a cut (a cancellation) or only an end of
        stream; the core's count has it either way."""
        if self.als.calls is None:
            return self.servicer.cut
        refused = sum(self.servicer.streams_failed.values()) - self.servicer.cut
        return max(self.servicer.cut, self.als.calls.counts()["failed"] - refused)

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
