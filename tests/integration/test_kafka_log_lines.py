"""A real librdkafka client whose broker is not there (nothing listens on its port): its "Connect failed"
lines come through the rate limiter that ``client_settings`` installs (driftline.connectors.kafka.log)."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer

from driftline.config import KafkaConfig
from driftline.connectors.kafka.log import client_settings
from driftline.connectors.kafka.log import LibrdkafkaLog
from tests.kafka_broker import free_port
from tests.unit.test_kafka_log import FakeClock, counted

pytestmark = pytest.mark.integration


def test_a_real_client_without_a_broker_logs_connect_failed_once_per_interval() -> None:
    """A producer whose broker is not there (nothing listens on the port): librdkafka's "Connect failed" lines
    come through the adapter that client_settings installs, and the frozen clock keeps them in one interval."""
    settings = client_settings(KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}",
                                           client={"reconnect.backoff.ms": "10", "reconnect.backoff.max.ms": "50"}))
    adapter = settings["logger"]
    assert isinstance(adapter, LibrdkafkaLog)
    clock = FakeClock()
    adapter.limiter.clock = clock
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    adapter.logger.addHandler(handler)
    try:
        producer = Producer(settings)
        deadline = time.monotonic() + 30
        while adapter.offered < 10:
            assert time.monotonic() < deadline, f"{adapter.offered} librdkafka lines in 30 s"
            producer.poll(0.1)
        assert len([r for r in records if "Connect to" in r.getMessage()]) == 1
        clock.now += 10
        offered = adapter.offered
        while adapter.offered == offered:
            assert time.monotonic() < deadline
            producer.poll(0.1)
        summaries = [r.getMessage() for r in records if "such lines" in r.getMessage()]
        assert len(summaries) == 1 and counted(summaries[0]) >= 10, summaries
    finally:
        adapter.logger.removeHandler(handler)
