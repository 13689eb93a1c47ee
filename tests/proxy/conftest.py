"""Fixtures for the proxy tests: the demo upstream on a free port and example routes rebound to
free ports, so tests run alongside other helpers' Envoys."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.routes import Endpoint, Routes, load_routes
from meshscope.proxy.telemetry import CollectorTarget

from tests.conftest import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "proxy" / "examples"


def example(name: str, data_dir: Path, upstream_port: int) -> Routes:
    """An example routes file with every listener on a free port and every cluster on the upstream."""
    routes = load_routes(EXAMPLES / f"{name}.yaml", data_dir=data_dir)
    for listener in routes.listeners:
        listener.port = free_port()
        listener.address = "127.0.0.1"
    for cluster in routes.clusters:
        cluster.endpoints = [Endpoint("127.0.0.1", upstream_port)]
    return routes


def silent_collector() -> CollectorTarget:
    """A collector address nobody listens on: Envoy's loggers are wired but deliver nowhere."""
    return CollectorTarget("127.0.0.1", free_port(), free_port())


@pytest.fixture
def upstream():
    with DemoUpstream(port=free_port()) as server:
        yield server
