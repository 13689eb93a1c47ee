"""The FastAPI application: ``create_app(settings, store=None)`` wires the routers, the store (opened
in the lifespan through pipelines.wiring.make_store), the upload worker, the bearer-token guard and,
standing alone with a Kafka bus configured, the way imported logs reach the bus (api.logs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from meshscope.api import (
    alerts,
    flow_graph,
    logs,
    metrics,
    pcaps,
    proxies,
    records,
    search,
    service_graph,
    traces,
    zipkin,
)
from meshscope.api.schemas import ErrorBody, Health
from meshscope.api.security import BearerTokenMiddleware, required_token
from meshscope.api.upload_stream import UploadRejected
from meshscope.api.uploads import Uploads
from meshscope.errors import UserError
from meshscope.pipelines import Store, StoreUnavailable
from meshscope.settings import Settings

log = logging.getLogger("meshscope.api")
STATIC = Path(__file__).parent / "static"
ERRORS = {400: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The API over ``settings``; with ``store`` given (already started) the caller owns it, otherwise
    the app opens the configured store at start-up and closes it at shut-down. Raises UserError when
    bound beyond loopback without an api_token."""
    token = required_token(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = store is None
        if owned:
            from meshscope.pipelines import make_store

            app.state.store = make_store(settings)
            try:
                await app.state.store.start()
            except StoreUnavailable as exc:
                if settings.store != "elasticsearch":
                    raise
                # a search cluster that is slow or down must not keep the API from starting: its queries
                # answer 503 until the store answers again (the pipeline installs the index templates)
                log.warning("store unavailable at start, serving anyway (503 until it answers): %s", exc)
        else:
            app.state.store = store
        app.state.uploads = Uploads(settings, app.state.store)
        await app.state.uploads.start()
        watch = None
        if settings.proxy_admins and settings.proxy_poll_s > 0:
            watch = asyncio.create_task(proxies.watch_proxies(settings), name="proxy-watch")
        try:
            if not owned:  # embedded (`meshscope up`): the stack hands over the collector's way in
                yield
                return
            async with logs.imports_for(settings) as imports:  # standalone: Kafka if configured
                if imports is not None:
                    app.state.log_imports = imports
                    app.state.metric_registries = [imports.metrics.registry]
                yield
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await app.state.uploads.stop()
            if owned:
                await app.state.store.stop()

    app = FastAPI(
        title="meshscope",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERRORS,
        description="What happened to this request, hop by hop? Envoy access logs, Zipkin spans and "
        "packet captures joined by request id.",
    )
    app.state.settings = settings
    if token is not None:
        app.add_middleware(BearerTokenMiddleware, token=token)
    _install_error_handlers(app)
    routers = (pcaps, flow_graph, traces, alerts, records, search, service_graph, proxies, zipkin, metrics)
    for module in (*routers, logs):
        app.include_router(module.router)

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz(request: Request) -> Health:
        """Liveness: answers without a token; says which store is configured and, when a collector runs
        in this process (``meshscope up``), whether it takes records ("degraded", "not ready" and why)."""
        return _health(request.app)

    @app.get("/readyz", response_model=Health, tags=["service"], responses={503: {"model": Health}})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 503 while the embedded collector refuses records (disk full, backpressure)."""
        health = _health(request.app)
        return JSONResponse(health.model_dump(), status_code=503 if health.status == "not ready" else 200)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/ui", include_in_schema=False)
    async def ui() -> RedirectResponse:
        return RedirectResponse("/")

    return app


def _health(app: FastAPI) -> Health:
    collector = getattr(app.state, "collector_health", None)  # set by the stack that embeds one
    if collector is None:
        return Health(status="ok", store=app.state.settings.store)
    body = collector()
    return Health(status=body["status"], store=app.state.settings.store, reason=body.get("reason"),
                  collector=body)


def _install_error_handlers(app: FastAPI) -> None:
    """Bad input answers 4xx JSON; a store that is down answers 503; nothing crashes the server."""

    @app.exception_handler(UploadRejected)
    async def rejected(_: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ValueError)
    async def value_error(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("store unavailable: %s", exc)
        return JSONResponse({"detail": f"store unavailable: {exc}"}, status_code=503)
