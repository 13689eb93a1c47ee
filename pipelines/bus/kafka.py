"""The Kafka bus (scale-out, aiokafka): one topic per record kind, keyed so a request stays in order.

The topics speak what other Kafka consumers already read (wire.py in this file's terms: ``encode`` /
``decode``): the spans topic carries Zipkin v2 JSON lists, as Zipkin's Kafka collector and the
OpenTelemetry collector's Kafka receiver (encoding ``zipkin_json``) read them, so it can be shared with
Zipkin-instrumented services; access records and alerts are JSON objects with an ISO ``@timestamp``
and a ``schema_version`` (field and header), as Logstash and Kafka Connect take them.

Producer: ``acks="all"`` and a short linger so sends are batched; ``publish`` returns only once every
record is acknowledged. Consumers form a group with auto-commit off; ``Batch.commit`` commits the
batch's offsets, which the indexer calls only after the store acknowledged it (at-least-once; the
records' deterministic ids make a redelivery harmless). A lost broker raises BusUnavailable; the
clients reconnect by themselves when it returns, and topics are created again if it forgot them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from aiokafka.helpers import create_ssl_context
from meshscope.pipelines.bus.base import Batch, Bus, BusUnavailable
from meshscope.pipelines.bus.topics import RECORD_OF, SPANS, TOPIC_OF, partition_key
from prometheus_client import Counter

from meshscope.errors import UserError
from meshscope.model import Record, Span, span_to_zipkin, spans_from_zipkin_json
from meshscope.settings import Settings

log = logging.getLogger(__name__)
UNDECODABLE = Counter("meshscope_bus_undecodable", "Bus messages that were not records (skipped)", ["topic"])

SCHEMA_VERSION = 1  # of the JSON objects on the access and alerts topics; bumped on an incompatible change
COMPRESSION = {"gzip": has_gzip, "snappy": has_snappy, "lz4": has_lz4, "zstd": has_zstd}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def encode(record: Record) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A record as a Kafka message value and headers (see the module docstring)."""
    if isinstance(record, Span):
        return orjson.dumps([span_to_zipkin(record)]), [("content-type", b"application/json")]
    data = record.to_dict()
    when = record.time()
    if when is not None:
        data["@timestamp"] = datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds")
    data["schema_version"] = SCHEMA_VERSION
    headers = [("content-type", b"application/json"), ("schema_version", str(SCHEMA_VERSION).encode())]
    return orjson.dumps(data), headers


def decode(topic: str, value: bytes | None) -> list[Record]:
    """The records in one message of a topic. A spans message is a Zipkin v2 JSON list (any number of
    spans, from meshscope or any Zipkin sender) or, as older meshscope wrote, one Span object.
    Raises ValueError (or TypeError) for a message that is neither."""
    if not value:
        raise ValueError("empty message")
    if topic == SPANS and value.lstrip()[:1] == b"[":
        return list(spans_from_zipkin_json(value))
    return [RECORD_OF[topic].from_json(value)]


class KafkaBus(Bus):
    """A Bus over Kafka-protocol brokers (Apache Kafka, Tansu, Redpanda …)."""

    shared = True  # other programs read its topics: alerts are published on it
    def __init__(
        self,
        bootstrap: str,
        topic_prefix: str = "meshscope.",
        partitions: int = 3,
        replication: int = 1,
        linger_ms: int = 5,
        request_timeout_s: float = 10.0,
        idempotence: bool = False,
        client_id: str = "meshscope",
        session_timeout_s: float = 10.0,
        compression: str | None = None,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.replication = replication
        self.linger_ms = linger_ms
        self.request_timeout_s = request_timeout_s
        # Off by default: a broker that restarts without its state (Tansu memory storage) forgets
        # producer ids, and duplicates are already harmless because record ids are deterministic.
        self.idempotence = idempotence
        self.client_id = client_id
        # how long a dead consumer holds its partitions before the group rebalances without it
        self.session_timeout_s = session_timeout_s
        if compression in ("", "none"):
            compression = None
        if compression is not None:
            if compression not in COMPRESSION:
                raise UserError(f"kafka_compression {compression!r}: choose one of {', '.join(COMPRESSION)}")
            if not COMPRESSION[compression]():
                raise UserError(f"kafka_compression {compression!r} needs cramjam: "
                                "pip install 'aiokafka[lz4,zstd]'")
        self.compression = compression
        self._security = _security_kwargs(security_protocol, sasl_mechanism, sasl_username, sasl_password,
                                          ca_file, cert_file, key_file)
        # Kafka's default is 500 ms. Tansu 0.6 on S3 answers a fetch with about what it read within the wait
        # (benchmarks/tansu_fetch.py): 100 ms read nothing on a loaded machine, 2000 ms ~8x more than 500
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._producer: AIOKafkaProducer | None = None
        self._topics_ready: set[str] = set()
        self._lags: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaBus:
        return cls(settings.kafka_bootstrap, topic_prefix=settings.kafka_topic_prefix,
                   partitions=settings.kafka_partitions, replication=settings.kafka_replication_factor,
                   compression=settings.kafka_compression, fetch_max_wait_ms=settings.kafka_fetch_wait_ms,
                   security_protocol=settings.kafka_security_protocol,
                   sasl_mechanism=settings.kafka_sasl_mechanism, sasl_username=settings.kafka_sasl_username,
                   sasl_password=settings.kafka_sasl_password,
                   ca_file=_path(settings.kafka_ca_file), cert_file=_path(settings.kafka_cert_file),
                   key_file=_path(settings.kafka_key_file))

    def topic_name(self, topic: str) -> str:
        return self.topic_prefix + topic

    async def start(self) -> None:
        """Connect the producer and create the record topics if missing."""
        await self._ensure_producer()
        await self.ensure_topics(TOPIC_OF.values())

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError as exc:  # flushing to a lost broker: the caller was never acknowledged
                log.warning("kafka producer stop: %s", exc)

    async def ensure_topics(self, topics) -> None:
        """Create the given bus topics (prefixed) with the configured partition count if missing."""
        wanted = [t for t in topics if t not in self._topics_ready]
        if not wanted:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=self.client_id,
            request_timeout_ms=int(self.request_timeout_s * 1000), **self._security,
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            new = [
                NewTopic(self.topic_name(t), self.partitions, self.replication)
                for t in wanted if self.topic_name(t) not in existing
            ]
            if new:
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass  # another worker won the race
        except (KafkaError, OSError) as exc:
            raise BusUnavailable(f"kafka {self.bootstrap}: cannot create topics: {exc}") from exc
        finally:
            await admin.close()
        self._topics_ready.update(wanted)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all",
                    linger_ms=self.linger_ms, max_batch_size=256 * 1024,
                    enable_idempotence=self.idempotence, compression_type=self.compression,
                    request_timeout_ms=int(self.request_timeout_s * 1000), **self._security,
                )
                try:
                    await producer.start()
                except (KafkaError, OSError) as exc:
                    await producer.stop()
                    raise BusUnavailable(f"kafka {self.bootstrap} unreachable: {exc}") from exc
                self._producer = producer
            return self._producer

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """Send every record keyed by request / trace id; return when all are acknowledged."""
        if not records:
            return
        producer = await self._ensure_producer()
        try:
            await self.ensure_topics([topic])
            name = self.topic_name(topic)
            futures = []
            for r in records:
                value, headers = encode(r)
                futures.append(await producer.send(name, value=value, key=partition_key(r), headers=headers))
            await asyncio.wait_for(asyncio.gather(*futures), self.request_timeout_s * 2)
        except UnknownTopicOrPartitionError as exc:
            self._topics_ready.discard(topic)  # the broker forgot it (restarted without state)
            raise BusUnavailable(f"kafka topic {topic!r} missing: {exc}") from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            self._topics_ready.clear()
            raise BusUnavailable(f"kafka {self.bootstrap} did not acknowledge: {exc!r}") from exc

    async def consume(self, topic: str, group: str, max_batch: int = 1000) -> AsyncIterator[Batch]:
        """Yield batches for the consumer group; commit offsets only through Batch.commit()."""
        consumer = await self._start_consumer(topic, group, max_batch)
        try:
            while True:
                try:
                    fetched = await consumer.getmany(timeout_ms=200, max_records=max_batch)
                except KafkaError as exc:
                    log.warning("kafka fetch from %s failed: %s; retrying", self.topic_name(topic), exc)
                    await asyncio.sleep(1.0)
                    continue
                if not fetched:
                    continue
                records: list[Record] = []
                offsets: dict[TopicPartition, int] = {}
                for tp, messages in fetched.items():
                    for m in messages:
                        try:
                            records.extend(decode(topic, m.value))
                        except (ValueError, TypeError) as exc:
                            # not a record of this topic: skipping it is the only way forward; it
                            # stays in the topic (until retention) and the log says where
                            UNDECODABLE.labels(topic).inc()
                            log.error("kafka %s offset %d: undecodable record skipped: %s; value %r",
                                      tp, m.offset, exc, (m.value or b"")[:500])
                    offsets[tp] = messages[-1].offset + 1
                self._lags[(topic, group)] = sum(
                    max(0, (consumer.highwater(tp) or 0) - offset) for tp, offset in offsets.items()
                )
                yield Batch(topic, records, _commit=_committer(consumer, offsets))
        finally:
            await stop_consumer(consumer)

    def lag(self, topic: str, group: str) -> int | None:
        """Records behind the high-water mark on the partitions of this process's last batch."""
        return self._lags.get((topic, group))

    async def _start_consumer(self, topic: str, group: str, max_batch: int) -> AIOKafkaConsumer:
        while True:
            try:
                await self.ensure_topics([topic])
                consumer = AIOKafkaConsumer(
                    self.topic_name(topic), bootstrap_servers=self.bootstrap, group_id=group,
                    client_id=self.client_id, enable_auto_commit=False, auto_offset_reset="earliest",
                    # group joins may legitimately take seconds (brokers delay the first rebalance),
                    # so consumers keep aiokafka's default request timeout, not the publish timeout
                    max_poll_records=max_batch, session_timeout_ms=int(self.session_timeout_s * 1000),
                    heartbeat_interval_ms=int(self.session_timeout_s * 1000 / 3),
                    fetch_max_wait_ms=self.fetch_max_wait_ms, **self._security,
                )
                try:
                    await consumer.start()
                except BaseException:  # also cancelled mid-join: leave no connection behind
                    await asyncio.shield(stop_consumer(consumer))
                    raise
                return consumer
            except (KafkaError, OSError, BusUnavailable) as exc:
                # a consumer waits for the broker rather than failing the pipeline
                log.warning("kafka consumer for %s waiting for broker: %s", self.topic_name(topic), exc)
                await asyncio.sleep(1.0)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer promptly, also while its group is (re)joining. aiokafka's stop first lets its
    group routine finish a JoinGroup in flight, and a broker holds a join until the group's other members
    rejoin or a dead one's session ends (Tansu: 4-10 s; a SIGTERMed pipeline waited 10.2 s). That routine
    has nothing to finish here: auto-commit is off and batches are committed as the store acknowledges
    them (one fetched, not committed, is delivered again and stored once by its id). So it is cancelled;
    the ordinary stop then closes the rest and leaves the group if the consumer was a member."""
    routine = getattr(getattr(consumer, "_coordinator", None), "_coordination_task", None)
    if routine is not None and not routine.done():
        routine.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await routine
    await consumer.stop()


def _path(value: object) -> str | None:
    return str(value) if value else None


def _security_kwargs(protocol: str, mechanism: str | None, username: str | None, password: str | None,
                     ca_file: str | None, cert_file: str | None, key_file: str | None) -> dict[str, Any]:
    """aiokafka's security arguments, the same for producer, consumers and the admin client."""
    protocol = (protocol or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        choices = ", ".join(SECURITY_PROTOCOLS)
        raise UserError(f"kafka_security_protocol {protocol!r}: choose one of {choices}")
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        mechanism = (mechanism or "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise UserError(f"kafka_sasl_mechanism {mechanism!r}: choose one of {', '.join(SASL_MECHANISMS)}")
        if not username or password is None:
            raise UserError(f"kafka_security_protocol {protocol} needs kafka_sasl_username and _password")
        out.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    if protocol.endswith("SSL"):
        if bool(cert_file) != bool(key_file):
            raise UserError("kafka_cert_file and kafka_key_file go together (mutual TLS)")
        out["ssl_context"] = create_ssl_context(cafile=ca_file, certfile=cert_file, keyfile=key_file)
    return out


def _committer(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]):
    async def commit() -> None:
        try:
            await consumer.commit(offsets)
        except (KafkaError, OSError) as exc:
            raise BusUnavailable(f"kafka commit failed (batch will be redelivered): {exc}") from exc

    return commit
