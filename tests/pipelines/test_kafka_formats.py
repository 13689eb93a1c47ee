"""The Kafka topics in the formats other consumers read, on a real Tansu broker: a Zipkin-format consumer
of the spans topic (each message checked against a Zipkin v2 JSON schema), plain aiokafka consumers of
access records and alerts; compression, partitions and the security settings."""

from __future__ import annotations

import asyncio
from datetime import datetime

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from meshscope.pipelines import Pipeline, load_rules
from meshscope.pipelines.alerts.rules import parse_rules
from meshscope.pipelines.bus.kafka import SCHEMA_VERSION, KafkaBus
from meshscope.pipelines.store.sqlite import SqliteStore

from meshscope.errors import UserError
from meshscope.model import AccessRecord, Span
from meshscope.settings import Settings
from tests.pipelines.test_kafka_bus import raw_messages  # a plain aiokafka consumer, no group
from tests.pipelines.traffic import access, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Zipkin's v2 JSON model (zipkin-api, zipkin2-api.yaml: definitions ListOfSpans, Span, Endpoint,
# Annotation, Tags) as a JSON Schema, made strict: ids required and lower-case hex of the documented
# lengths, no property the model does not have (a snake_cased key would be caught).
_ENDPOINT = {"type": "object", "additionalProperties": False, "properties": {
    "serviceName": {"type": "string"}, "ipv4": {"type": "string"}, "ipv6": {"type": "string"},
    "port": {"type": "integer"}}}
ZIPKIN_V2_LIST = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["traceId", "id"],
        "additionalProperties": False,
        "properties": {
            "traceId": {"type": "string", "pattern": "^([0-9a-f]{16}|[0-9a-f]{32})$"},
            "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "parentId": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "name": {"type": "string"},
            "kind": {"enum": ["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]},
            "timestamp": {"type": "integer"},
            "duration": {"type": "integer"},
            "debug": {"type": "boolean"},
            "shared": {"type": "boolean"},
            "localEndpoint": _ENDPOINT,
            "remoteEndpoint": _ENDPOINT,
            "annotations": {"type": "array", "items": {
                "type": "object", "required": ["timestamp", "value"], "additionalProperties": False,
                "properties": {"timestamp": {"type": "integer"}, "value": {"type": "string"}}}},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


def envoy_span(i: int) -> Span:
    return Span(trace_id=f"{0xabc + i:032x}", span_id=f"{i + 1:016x}", parent_id=f"{0xfff:016x}",
                name="ingress", span_kind="SERVER", timestamp=1_800_000_000_000_000 + i, duration=1500,
                local_endpoint={"serviceName": "gateway", "ipv4": "10.10.0.6", "port": 8080},
                remote_endpoint={"ipv4": "172.18.0.1", "port": 57536},
                annotations=[{"timestamp": 1_800_000_000_000_100, "value": "ws"}],
                tags={"guid:x-request-id": f"rid-{i}", "http.status_code": "200"}, shared=i % 2 == 1)


async def test_spans_topic_is_zipkin_v2_json_and_shared_with_zipkin_senders(tansu):
    bus = KafkaBus(tansu.bootstrap, topic_prefix="zf.", partitions=2, session_timeout_s=3)
    await bus.start()
    try:
        spans = [envoy_span(i) for i in range(6)]
        await bus.publish("spans", spans)
        # a Zipkin-instrumented service's Kafka sender shares the topic: one message, a list of spans
        foreign = [{"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "name": "get /items",
                    "kind": "CLIENT", "timestamp": 1_800_000_000_000_000, "duration": 20,
                    "localEndpoint": {"serviceName": "shop"}},
                   {"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d313", "parentId": "a2fb4a1d1a96d312",
                    "name": "select", "timestamp": 1_800_000_000_000_005, "duration": 5}]
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("zf.spans", orjson.dumps(foreign))
            await producer.send_and_wait("zf.spans", b"not a span list")  # skipped, counted, logged
        finally:
            await producer.stop()

        # a Zipkin-format consumer: every message is a v2 JSON list
        messages = await raw_messages(tansu.bootstrap, "zf.spans", 2, 8)
        assert len(messages) == 8
        lists = [orjson.loads(m.value) for m in messages if m.value.startswith(b"[")]
        assert len(lists) == 7
        for spans_list in lists:
            jsonschema.validate(spans_list, ZIPKIN_V2_LIST)
        ours = {s["id"]: s for lst in lists for s in lst if s["traceId"] != "463ac35c9f6413ad"}
        assert ours[f"{2:016x}"] == {
            "traceId": f"{0xabd:032x}", "id": f"{2:016x}", "parentId": f"{0xfff:016x}", "name": "ingress",
            "kind": "SERVER", "timestamp": 1_800_000_000_000_001, "duration": 1500,
            "localEndpoint": {"serviceName": "gateway", "ipv4": "10.10.0.6", "port": 8080},
            "remoteEndpoint": {"ipv4": "172.18.0.1", "port": 57536},
            "annotations": [{"timestamp": 1_800_000_000_000_100, "value": "ws"}],
            "tags": {"guid:x-request-id": "rid-1", "http.status_code": "200"}, "shared": True}

        # and the pipeline's own consumer reads both meshscope's and the foreign spans back as Spans
        got: list[Span] = []
        async for batch in bus.consume("spans", "zf-indexer"):
            got += batch.records
            await batch.commit()
            if len(got) >= 8:
                break
        assert len(got) == 8 and {s.id for s in spans} <= {s.id for s in got}
        assert sorted(s.span_id for s in got if s.trace_id == "463ac35c9f6413ad") == [
            "a2fb4a1d1a96d312", "a2fb4a1d1a96d313"]
        assert {s.id: s for s in got}[spans[3].id] == spans[3]
    finally:
        await bus.stop()


async def test_access_records_carry_timestamp_and_schema_version_compressed(tansu):
    for compression in ("zstd", "lz4"):
        bus = KafkaBus(tansu.bootstrap, topic_prefix=f"af{compression}.", partitions=2,
                       compression=compression, session_timeout_s=3)
        await bus.start()
        try:
            records = [access(i, t=1_800_000_000.25 + i, tag=compression) for i in range(20)]
            await bus.publish("access", records)
            messages = await raw_messages(tansu.bootstrap, f"af{compression}.access", 2, 20)
            assert len(messages) == 20
            by_id = {r.id: r for r in records}
            for m in messages:
                doc = orjson.loads(m.value)
                record = by_id[doc["id"]]
                assert datetime.fromisoformat(doc["@timestamp"]).timestamp() == record.start_time
                assert doc["@timestamp"].endswith("+00:00")
                assert doc["schema_version"] == SCHEMA_VERSION
                assert dict(m.headers)["schema_version"] == str(SCHEMA_VERSION).encode()
                assert AccessRecord.from_json(m.value) == record  # the added fields read back harmlessly
            got = []
            async for batch in bus.consume("access", "af-indexer"):
                got += batch.records
                await batch.commit()
                if len(got) >= 20:
                    break
            assert sorted(r.id for r in got) == sorted(by_id)
        finally:
            await bus.stop()


async def test_alerts_are_published_on_the_alerts_topic(tansu, tmp_path):
    settings = Settings(data_dir=tmp_path, bus="kafka", kafka_bootstrap=tansu.bootstrap,
                        kafka_topic_prefix="al.", kafka_partitions=1)
    rules = parse_rules({"rules": [{"name": "burst-5xx", "type": "threshold", "filter": {"status_class": 5},
                                    "timeframe": "5s", "threshold": 5, "severity": "critical"}]})
    bus = KafkaBus.from_settings(settings)
    await bus.start()
    try:
        async with SqliteStore(settings) as store, Pipeline(settings, bus, store, rules=rules, tick=0.1) as p:
            await bus.publish("access", [access(i, code=503, tag="al") for i in range(8)])
            await wait_for(lambda: _handled(p), 30, "the alert")
            messages = await raw_messages(tansu.bootstrap, "al.alerts", 1, 1)
    finally:
        await bus.stop()
    doc = orjson.loads(messages[0].value)
    assert doc["rule"] == "burst-5xx" and doc["state"] == "firing"
    assert doc["group_key"] == "upstream_cluster=catalog"
    assert doc["labels"] == {"alertname": "burst-5xx", "severity": "critical", "upstream_cluster": "catalog"}
    assert doc["schema_version"] == SCHEMA_VERSION and datetime.fromisoformat(doc["@timestamp"])
    assert len(doc["sample_request_ids"]) == 5


async def _handled(pipeline) -> bool:
    await asyncio.sleep(0)
    return bool(pipeline.outbox.handled)


async def test_topics_created_with_the_configured_partitions(tansu):
    settings = Settings(bus="kafka", kafka_bootstrap=tansu.bootstrap, kafka_topic_prefix="pt.",
                        kafka_partitions=5, kafka_replication_factor=1, kafka_compression="zstd")
    bus = KafkaBus.from_settings(settings)
    await bus.start()
    await bus.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=tansu.bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        assert consumer.partitions_for_topic("pt.access") == set(range(5))
        assert consumer.partitions_for_topic("pt.alerts") == set(range(5))
    finally:
        await consumer.stop()
    assert load_rules()  # the bundled rules still load with the Kafka settings around


def test_security_and_compression_settings_are_checked(tmp_path):
    with pytest.raises(UserError, match="kafka_compression 'brotli'"):
        KafkaBus("x:9092", compression="brotli")
    with pytest.raises(UserError, match="needs kafka_sasl_username"):
        KafkaBus("x:9092", security_protocol="SASL_SSL")
    with pytest.raises(UserError, match="kafka_sasl_mechanism 'GSSAPI'"):
        KafkaBus("x:9092", security_protocol="SASL_PLAINTEXT", sasl_mechanism="GSSAPI", sasl_username="u",
                 sasl_password="p")
    bus = KafkaBus("x:9092", security_protocol="sasl_plaintext", sasl_mechanism="SCRAM-SHA-512",
                   sasl_username="u", sasl_password="p")
    assert bus._security == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                             "sasl_plain_username": "u", "sasl_plain_password": "p"}
    tls = KafkaBus("x:9092", security_protocol="SSL")
    assert tls._security["ssl_context"].verify_mode.name == "CERT_REQUIRED"
