"""MessageFetcher against a real Kafka 4 broker: messages fetched back by position, across partitions and
over long gaps (seeks), and every position it cannot fetch — deleted (``delete_records``), past the end,
a partition that does not exist, the timeout — returned with its reason, never raised."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.config import KafkaConfig
from driftline.connectors.kafka.fetch import SEEK_GAP, MessageFetcher
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
COUNT = 3 * SEEK_GAP + 500
"""Messages on partition 0: enough for two seeks over gaps."""
GAPS, GONE, MISSING = "fetch.gaps", "fetch.gone", "fetch.no-such-topic"
"""This module's topics on the session's shared broker (the last one never created)."""


def fill(bootstrap: str, topic: str, partition: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=f"{topic}-{partition}-{i}".encode(), key=f"k{i}".encode(), partition=partition)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def fetcher(bootstrap: str, timeout_ms: int = 10_000) -> MessageFetcher:
    return MessageFetcher(KafkaConfig(bootstrap_servers=bootstrap, group_id="fetch-test",
                                      dead_letter_fetch_timeout=timeout_ms))


def test_messages_come_back_by_position_across_partitions_and_gaps(broker: KafkaBroker) -> None:
    create_topic(broker.bootstrap, GAPS, 2)
    fill(broker.bootstrap, GAPS, 0, COUNT)
    fill(broker.bootstrap, GAPS, 1, 10)
    wanted = [(GAPS, 0, o) for o in (3, 4, 900, 2_500, COUNT - 1)] + [(GAPS, 1, 0), (GAPS, 1, 9)]
    f = fetcher(broker.bootstrap)
    try:
        began = time.monotonic()
        got = f.fetch(wanted)
        print(f"\n{len(wanted)} messages fetched back in {time.monotonic() - began:.2f} s")
        assert got.missing == {}
        assert got.found == {(t, p, o): (f"{t}-{p}-{o}".encode(), f"k{o}".encode()) for t, p, o in wanted}
        again = f.fetch([(GAPS, 0, 7)])  # the same consumer, a second time
        assert again.found == {(GAPS, 0, 7): (f"{GAPS}-0-7".encode(), b"k7")}
    finally:
        f.close()


def test_what_cannot_be_fetched_is_returned_with_the_reason(broker: KafkaBroker) -> None:
    create_topic(broker.bootstrap, GONE, 1)
    fill(broker.bootstrap, GONE, 0, 20)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.delete_records([TopicPartition(GONE, 0, 10)]).values():
        future.result(timeout=30)
    f = fetcher(broker.bootstrap, timeout_ms=3_000)
    try:
        began = time.monotonic()
        got = f.fetch([(GONE, 0, 3), (GONE, 0, 12), (GONE, 0, 20), (GONE, 0, 500), (GONE, 7, 1),
                       (MISSING, 0, 1)])
        assert time.monotonic() - began < 3 + 2
    finally:
        f.close()
    assert got.found == {(GONE, 0, 12): (f"{GONE}-0-12".encode(), b"k12")}
    assert set(got.missing) == {(GONE, 0, 3), (GONE, 0, 20), (GONE, 0, 500), (GONE, 7, 1),
                                (MISSING, 0, 1)}
    assert got.missing[(GONE, 0, 3)].startswith("no longer in the log"), got.missing
    assert "starts at offset 10" in got.missing[(GONE, 0, 3)]
    assert got.missing[(GONE, 0, 20)] == got.missing[(GONE, 0, 500)] == \
        "past the end of the partition (next offset 20)"
    assert got.missing[(GONE, 7, 1)].startswith("partition unreadable"), got.missing
    assert got.missing[(MISSING, 0, 1)].startswith("partition unreadable"), got.missing


def test_an_unreachable_broker_costs_the_timeout_and_no_more(tmp_path: Path) -> None:
    from tests.kafka_broker import free_port

    f = fetcher(f"127.0.0.1:{free_port()}", timeout_ms=1_000)  # nothing listens there
    try:
        began = time.monotonic()
        got = f.fetch([("t", 0, 1), ("t", 1, 2)])
        took = time.monotonic() - began
    finally:
        f.close()
    assert got.found == {} and set(got.missing) == {("t", 0, 1), ("t", 1, 2)}
    assert all(reason for reason in got.missing.values()), got.missing
    assert took < 1 + 1.5, took
