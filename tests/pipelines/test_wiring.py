"""Configuration alone picks the bus and the store (pipelines.wiring)."""

from __future__ import annotations

import pytest
from meshscope.pipelines.bus.kafka import KafkaBus
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.pipelines.store.elasticsearch import ElasticsearchStore
from meshscope.pipelines.store.sqlite import SqliteStore
from meshscope.pipelines.wiring import make_bus, make_store

from meshscope.errors import UserError
from meshscope.settings import Settings, load_settings


def test_defaults_are_the_embedded_pair(data_dir):
    settings = Settings(data_dir=data_dir)
    assert isinstance(make_bus(settings), MemoryBus)
    assert isinstance(make_store(settings), SqliteStore)


def test_environment_switches_to_the_scale_out_pair():
    settings = load_settings(env={
        "MESHSCOPE_BUS": "kafka", "MESHSCOPE_KAFKA_BOOTSTRAP": "k1:9092",
        "MESHSCOPE_KAFKA_TOPIC_PREFIX": "prod.", "MESHSCOPE_STORE": "elasticsearch",
    })
    bus = make_bus(settings)
    assert isinstance(bus, KafkaBus) and bus.bootstrap == "k1:9092"
    assert bus.topic_name("access") == "prod.access"
    assert isinstance(make_store(settings), ElasticsearchStore)


@pytest.mark.parametrize("change, message", [
    ({"bus": "rabbit"}, "unknown bus 'rabbit': choose one of kafka, memory"),
    ({"store": "mongo"}, "unknown store 'mongo'"),
])
def test_unknown_names_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        make_bus(Settings(**change)) if "bus" in change else make_store(Settings(**change))
