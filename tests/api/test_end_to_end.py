"""End to end, all real: a request through an Envoy gateway and an Envoy sidecar (both streaming gRPC
access logs and Zipkin spans to the collector), bus → indexer → SqliteStore, tcpdump capturing the same
request on loopback; the capture uploaded over HTTP; the API's trace shows the gateway hop, the sidecar
hop, the spans and the packet exchanges of that one request."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
from meshscope.collector.server import Collector
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.pipelines.indexer import Pipeline
from meshscope.pipelines.store.sqlite import SqliteStore
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.launcher import EnvoyProcess
from meshscope.proxy.routes import parse_routes
from meshscope.proxy.telemetry import CollectorTarget

from meshscope.settings import Settings
from tests.api.conftest import serve
from tests.collector.envoy_lab import need_envoy
from tests.conftest import free_port, need_binary, need_root
from tests.tcpdump import stop_tcpdump

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.root]

RID = "7d3c6f2e-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
GATEWAY_NODE = "router~127.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local"
SIDECAR_NODE = "sidecar~127.0.0.1~webapp-1.shop~shop.svc.cluster.local"


CLIENT_IP, GATEWAY_IP, SIDECAR_IP, UPSTREAM_IP = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"


def proxy_bootstrap(
    ip: str, port: int, cluster: str, upstream: str, node_id: str, settings: Settings, zipkin_port: int
) -> dict:
    """A proxy listening on ip:port, forwarding to `upstream` from its own address `ip` (distinct loopback
    addresses per host, so the capture shows which host sent what, as pod IPs would)."""
    routes = parse_routes(
        {
            "admin_port": 0,
            "listeners": [
                {
                    "name": "http",
                    "port": port,
                    "address": ip,
                    "virtual_hosts": [
                        {"name": "all", "domains": ["*"], "routes": [{"prefix": "/", "cluster": cluster}]}
                    ],
                }
            ],
            "clusters": [{"name": cluster, "endpoints": [upstream]}],
        },
        source="e2e",
    )
    bootstrap = build_bootstrap(
        routes,
        collector=CollectorTarget("127.0.0.1", settings.als_port, zipkin_port),
        admin_port=0,
        node_id=node_id,
        node_cluster=node_id.split("~")[2].split(".")[0],
    )
    for c in bootstrap["static_resources"]["clusters"]:
        if c["name"] == cluster:
            c["upstream_bind_config"] = {"source_address": {"address": ip, "port_value": 0}}
    bootstrap["layered_runtime"] = {
        "layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]
    }
    return bootstrap


async def poll(fetch, done, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_trace_joins_gateway_sidecar_spans_and_packets(data_dir, tmp_path):
    need_root()
    need_envoy()
    tcpdump = need_binary("tcpdump")
    gw_port, sc_port, up_port = free_port(), free_port(), free_port()
    settings = Settings(data_dir=data_dir, als_port=free_port(), zipkin_port=free_port(),
                        otlp_grpc_port=0, otlp_http_port=0)
    bus = MemoryBus()
    store = SqliteStore(settings)
    await store.start()
    collector = Collector(settings, bus)
    await collector.start()
    pipeline = Pipeline(settings, bus, store)
    await pipeline.start()
    pcap = tmp_path / "lo.pcap"
    api = None
    try:
        async with DemoUpstream(host=UPSTREAM_IP, port=up_port):
            sidecar = EnvoyProcess(
                proxy_bootstrap(
                    SIDECAR_IP,
                    sc_port,
                    "inbound-webapp",
                    f"{UPSTREAM_IP}:{up_port}",
                    SIDECAR_NODE,
                    settings,
                    collector.zipkin_port,
                )
            )
            gateway = EnvoyProcess(
                proxy_bootstrap(
                    GATEWAY_IP,
                    gw_port,
                    "outbound-webapp",
                    f"{SIDECAR_IP}:{sc_port}",
                    GATEWAY_NODE,
                    settings,
                    collector.zipkin_port,
                )
            )
            async with sidecar, gateway:
                dump = subprocess.Popen(
                    [
                        tcpdump,
                        "-i",
                        "lo",
                        "-U",
                        "--immediate-mode",
                        "-s",
                        "0",
                        "-w",
                        str(pcap),
                        f"tcp port {gw_port} or tcp port {sc_port} or tcp port {up_port}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                try:
                    await asyncio.sleep(1.0)  # tcpdump opens the interface
                    async with httpx.AsyncClient(timeout=10) as client:
                        r = await client.get(
                            f"http://{GATEWAY_IP}:{gw_port}/headers",
                            headers={"x-request-id": RID, "host": "shop.local"},
                        )
                        assert r.status_code == 200, r.text
                        for _ in range(3):  # other traffic the trace must leave out
                            await client.get(
                                f"http://{GATEWAY_IP}:{gw_port}/headers", headers={"host": "shop.local"}
                            )
                finally:
                    await asyncio.to_thread(stop_tcpdump, dump)
                # the live path: 2 access records (gateway, sidecar) for our request reach the store
                records = await poll(lambda: store.access_by_request_id(RID), lambda rs: len(rs) >= 2)
                assert {r.node_id for r in records} == {GATEWAY_NODE, SIDECAR_NODE}
                api = serve(settings.replace(proxy_admins=[gateway.admin_address, sidecar.admin_address]))
                async with httpx.AsyncClient(base_url=api.url, timeout=30) as c:
                    up = await c.post("/api/pcaps", files=[("file", ("lo.pcap", pcap.read_bytes()))])
                    assert up.status_code == 202, up.text
                    status = await poll(
                        lambda: c.get(f"/api/pcaps/{up.json()['id']}"),
                        lambda r: r.json()["state"] in ("done", "failed"),
                        timeout=60,
                    )
                    assert status.json()["state"] == "done", status.text
                    trace = (
                        await poll(
                            lambda: c.get(f"/api/traces/{RID}"),
                            lambda r: r.status_code == 200 and len(r.json()["spans"]) >= 2,
                        )
                    ).json()
                    proxies = (await c.get("/api/proxies")).json()["items"]
                    svg = (await c.get(f"/api/traces/{RID}/graph.svg")).text
    finally:
        if api is not None:
            api.stop()
        await pipeline.stop()
        await collector.stop()
        await store.stop()

    assert [h["role"] for h in trace["hops"]] == ["gateway", "sidecar"]
    gw, sc = trace["hops"]
    assert gw["node_id"] == GATEWAY_NODE and gw["upstream_cluster"] == "outbound-webapp"
    assert sc["node_id"] == SIDECAR_NODE and sc["response_code"] == 200
    assert sc["linked_by"] == "address"  # the sidecar's downstream peer is the gateway's upstream socket
    assert len(trace["trace_ids"]) == 1 and len(trace["spans"]) >= 2
    # packets: client → gateway, gateway → sidecar, sidecar → upstream, all carrying this request's id
    conns = {(e["conn"]["dport"]) for e in trace["exchanges"]}
    assert {gw_port, sc_port, up_port} <= conns, trace["exchanges"]
    assert len(trace["exchanges"]) == 3
    assert trace["flows"] and any(h["kind"] == "l7-proxy" for h in trace["flows"][0]["hops"])
    assert "proxy access logs" in svg
    (tmp_path / "trace.svg").write_text(svg)  # kept with the test's files, for a look
    by_node = {p["node_id"]: p for p in proxies}
    for node in (GATEWAY_NODE, SIDECAR_NODE):
        loss = by_node[node]["loss"]
        assert loss["reachable"] and loss["arrived"] == by_node[node]["records"] == 4
        assert loss["written"] >= 4 and loss["dropped"] == 0
