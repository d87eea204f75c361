"""The real Kafka 4 broker that the integration tests use (scripts/kafka-broker, tests/kafka_broker.py):
topics, a producer, a consumer group, and data that outlives a clean restart and a SIGKILL.

These tests restart and kill their broker: they use ``own_broker`` (conftest), a private one, never the
session's shared ``broker``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration

N = 10_000
PARTITIONS = 3

Record = tuple[int, int, bytes, bytes]
"""(partition, offset, key, value)"""


def produce(bootstrap: str, topic: str, count: int, prefix: str = "message") -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(error)

    for i in range(count):
        producer.produce(topic, key=f"key-{i}".encode(), value=f"{prefix}-{i}".encode(), on_delivery=delivered)
        if i % 1_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0, "messages left undelivered after 30 s"
    assert failed == []


def consume(bootstrap: str, topic: str, group: str, count: int, timeout: float = 60) -> list[Record]:
    """Read ``count`` messages in consumer group ``group`` from its committed offsets (the earliest for a
    new group), check that no more arrive (for 1 s, and until 2 s after the assignment at least), commit
    and leave the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    records: list[Record] = []
    assigned_at: list[float] = []

    def poll(seconds: float) -> list[Record]:
        out = []
        for m in consumer.consume(num_messages=1_000, timeout=seconds):
            if m.error() is not None:
                raise KafkaException(m.error())
            partition, offset, key, value = m.partition(), m.offset(), m.key(), m.value()
            assert partition is not None and offset is not None
            assert isinstance(key, bytes) and isinstance(value, bytes)
            out.append((partition, offset, key, value))
        return out

    try:
        consumer.subscribe([topic], on_assign=lambda _c, _partitions: assigned_at.append(time.monotonic()))
        deadline = time.monotonic() + timeout
        while len(records) < count or not assigned_at:
            assert time.monotonic() < deadline, f"{len(records)} of {count} messages in {timeout} s"
            records += poll(0.5)
        extra: list[Record] = []
        quiet_until = max(assigned_at[-1] + 2, time.monotonic() + 1)
        while time.monotonic() < quiet_until:
            extra += poll(0.5)
        assert extra == [], f"{len(extra)} messages past the {count} expected"
        if records:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return sorted(records)


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets}


def check_log(records: list[Record], count: int, prefix: str = "message") -> None:
    """Every message once, on every partition, at offsets 0, 1, 2... of its partition."""
    assert sorted(value for *_, value in records) == sorted(f"{prefix}-{i}".encode() for i in range(count))
    by_partition: dict[int, list[int]] = {}
    for partition, offset, key, value in records:
        by_partition.setdefault(partition, []).append(offset)
        assert key.removeprefix(b"key-") == value.removeprefix(f"{prefix}-".encode())
    assert sorted(by_partition) == list(range(PARTITIONS))
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))


def test_topic_produce_consume_and_restart(own_broker: KafkaBroker) -> None:
    create_topic(own_broker.bootstrap, "driftline.check", PARTITIONS)
    produce(own_broker.bootstrap, "driftline.check", N)
    first = consume(own_broker.bootstrap, "driftline.check", "check-group", N)
    check_log(first, N)
    ends = {p: 1 + max(o for q, o, *_ in first if q == p) for p in range(PARTITIONS)}
    assert committed(own_broker.bootstrap, "driftline.check", "check-group") == ends

    pid, bootstrap = own_broker.pid, own_broker.bootstrap
    own_broker.restart()
    assert own_broker.pid not in (None, pid) and own_broker.bootstrap == bootstrap

    # the topic, its messages and the group's committed offsets are all still there
    topics = AdminClient({"bootstrap.servers": own_broker.bootstrap}).list_topics(timeout=10).topics
    assert len(topics["driftline.check"].partitions) == PARTITIONS
    assert committed(own_broker.bootstrap, "driftline.check", "check-group") == ends
    assert consume(own_broker.bootstrap, "driftline.check", "after-restart", N) == first
    assert consume(own_broker.bootstrap, "driftline.check", "check-group", 0, timeout=5) == []


def test_data_survives_sigkill(own_broker: KafkaBroker) -> None:
    create_topic(own_broker.bootstrap, "driftline.crash", PARTITIONS)
    produce(own_broker.bootstrap, "driftline.crash", 1_000, prefix="before")
    own_broker.kill()
    assert not own_broker.running
    own_broker.start()
    records = consume(own_broker.bootstrap, "driftline.crash", "crash-group", 1_000)
    check_log(records, 1_000, prefix="before")


def test_missing_jars_is_an_error_not_a_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.kafka_broker import KafkaBrokerError

    monkeypatch.setenv("KAFKA_BROKER_HOME", str(tmp_path / "empty"))
    with pytest.raises(KafkaBrokerError, match="scripts/kafka-broker install"):
        KafkaBroker(tmp_path / "broker").start()
