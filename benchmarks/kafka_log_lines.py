"""librdkafka's log lines while the broker is down: how many librdkafka sends, how many driftline logs.

    python benchmarks/kafka_log_lines.py        # a KafkaSource and a Publisher, a port nothing listens on, 30 s

Seen on the 2-core machine: 873 lines sent (29/s, "Connect to … failed"), 6 logged (one per client every
10 s, each with its count: driftline.connectors.kafka.log).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import driftline.connectors.kafka.log as kafka_log  # noqa: E402
from driftline.config import JsonTopic, KafkaConfig  # noqa: E402
from driftline.connectors.kafka.publish import Publisher  # noqa: E402
from driftline.connectors.kafka.source import KafkaSource  # noqa: E402
from tests.kafka_broker import free_port  # noqa: E402

SECONDS = 30


def main() -> None:
    adapters: list[kafka_log.LibrdkafkaLog] = []

    class Counting(kafka_log.LibrdkafkaLog):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            adapters.append(self)

    kafka_log.LibrdkafkaLog = Counting  # type: ignore[misc]  # every client's adapter, to read its count
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    logger = logging.getLogger("driftline.kafka.librdkafka")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    config = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}", topics=(JsonTopic(topic="t"),))
    source = KafkaSource(config)  # (its metadata request waits 10 s first)
    publisher = Publisher(config, {})
    began, sent_before, logged_before = time.monotonic(), sum(a.offered for a in adapters), len(logged)
    while time.monotonic() - began < SECONDS:
        source.poll_batch()
        publisher.producer.poll(0.05)
    sent = sum(a.offered for a in adapters) - sent_before
    print(f"{SECONDS} s, {len(adapters)} clients: librdkafka sent {sent} lines ({sent / SECONDS:.1f}/s), "
          f"driftline logged {len(logged) - logged_before}")
    for record in logged[logged_before:]:
        print("  ", record.getMessage()[:160])


if __name__ == "__main__":
    main()
