"""The whole embedded stack in one asyncio program: collector, pipeline (indexer + alerts), API and
web page, the bundled Envoy with the lab routes, and the demo upstream (what `meshscope up` runs)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from meshscope.serving import EmbeddedServer, guarded_http
from meshscope.settings import Settings

log = logging.getLogger("meshscope.up")

# Upstream clusters of the lab routes; all are served by the demo upstream.
LAB_CLUSTERS = ("webapp", "catalog", "inventory", "slow")


def lab_routes(settings: Settings) -> dict:
    """The lab routes (short routes YAML as a mapping): /status → catalog, /flaky → inventory with
    retry on 5xx (3 retries), /delay → slow with a 1 s timeout, everything else → webapp."""
    upstream = [f"{settings.host}:{settings.demo_upstream_port}"]
    return {
        "admin_port": settings.envoy_admin_port,
        "listeners": [{
            "name": "ingress",
            "address": settings.host,
            "port": settings.proxy_port,
            "virtual_hosts": [{
                "name": "lab",
                "domains": ["*"],
                "routes": [
                    {"prefix": "/status/", "cluster": "catalog"},
                    {"prefix": "/flaky/", "cluster": "inventory",
                     "retry": {"retry_on": "5xx", "num_retries": 3}},
                    {"prefix": "/delay/", "cluster": "slow", "timeout": "1s"},
                    {"prefix": "/", "cluster": "webapp"},
                ],
            }],
        }],
        "clusters": [{"name": name, "endpoints": upstream} for name in LAB_CLUSTERS],
    }


@dataclass(slots=True)
class Urls:
    api: str
    proxy: str
    envoy_admin: str
    zipkin: str
    access_log_grpc: str
    demo_upstream: str


class Stack:
    """Start with ``await stack.start()``, stop with ``await stack.stop()`` (reverse order, every part
    stopped even when another fails). Data lives in settings.data_dir, so a second run reuses it."""

    def __init__(self, settings: Settings, *, with_proxy: bool = True) -> None:
        if with_proxy:  # loss accounting reads the bundled Envoy's stats; it dies with this process
            own = f"{settings.host}:{settings.envoy_admin_port}"
            settings = settings.replace(proxy_admins=settings.proxy_admins or [own],
                                        proxy_admins_bundled=[own])
        self.settings = settings
        self.with_proxy = with_proxy
        self._stops: list[tuple[str, object]] = []
        self.store = None
        self.envoy = None

    @property
    def urls(self) -> Urls:
        s = self.settings
        return Urls(
            api=f"http://{s.host}:{s.api_port}",
            proxy=f"http://{s.host}:{s.proxy_port}",
            envoy_admin=f"http://{s.host}:{s.envoy_admin_port}",
            zipkin=f"http://{s.host}:{s.zipkin_port}/api/v2/spans",
            access_log_grpc=f"{s.host}:{s.als_port}",
            demo_upstream=f"http://{s.host}:{s.demo_upstream_port}",
        )

    async def start(self) -> None:
        from meshscope.api.app import create_app
        from meshscope.collector import Collector
        from meshscope.pipelines import Pipeline, make_bus, make_store

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            bus = make_bus(s)
            await bus.start()
            self._stops.append(("bus", bus.stop))
            self.store = make_store(s)
            await self.store.start()
            self._stops.append(("store", self.store.stop))
            pipeline = Pipeline(s, bus, self.store)
            if self.with_proxy:  # the lab routes' clusters: counted from 0 before their first request
                pipeline.expect_clusters(LAB_CLUSTERS)
            await pipeline.start()
            self._stops.append(("pipeline", pipeline.stop))
            collector = Collector(s, bus, **guarded_http(s))
            await collector.start()
            self._stops.append(("collector", collector.stop))
            app = create_app(s, self.store)
            app.state.log_imports = collector.imports  # POST /api/logs goes the live way
            # one scrape target for the whole stack: the API's /metrics also has the collector's
            # registry (the pipeline's counters are this process's default registry)
            app.state.metric_registries = [collector.metrics.registry]
            app.state.collector_health = collector.health  # /healthz and /readyz say when it refuses
            api = EmbeddedServer(app, s.host, s.api_port, name="api", settings=s)
            await api.start()
            self._stops.append(("api", api.stop))
            if self.with_proxy:
                await self._start_proxy()
        except BaseException:
            await self.stop()
            raise

    async def _start_proxy(self) -> None:
        from meshscope.proxy import CollectorTarget, DemoUpstream, EnvoyProcess, build_bootstrap, parse_routes

        s = self.settings
        upstream = DemoUpstream(s.host, s.demo_upstream_port)
        await asyncio.to_thread(upstream.start)
        self._stops.append(("demo upstream", lambda: asyncio.to_thread(upstream.stop)))
        routes = parse_routes(lab_routes(s), source="lab routes")
        bootstrap = build_bootstrap(routes, collector=CollectorTarget(s.host, s.als_port, s.zipkin_port),
                                    node_id="meshscope-gateway", node_cluster="lab-gateway")
        self.envoy = EnvoyProcess(bootstrap, workdir=s.data_dir / "envoy")
        await asyncio.to_thread(self.envoy.start)
        self._stops.append(("envoy", self._stop_proxy))

    async def _stop_proxy(self) -> None:
        """Stop Envoy between two reads of its counters: what it logged after the last read dies
        uncounted, so the loss account's unseen window is then milliseconds, not a poll interval."""
        from meshscope.api.proxies import read_proxies

        await read_proxies(self.settings)
        await asyncio.to_thread(self.envoy.stop)
        await read_proxies(self.settings)  # finds it gone: the run ended by now

    async def stop(self) -> None:
        while self._stops:
            name, stop = self._stops.pop()
            try:
                await stop()  # type: ignore[operator]
            except Exception as exc:  # keep stopping the rest
                log.warning("stopping %s: %s", name, exc)
