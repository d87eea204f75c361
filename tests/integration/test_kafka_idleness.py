"""Live traffic with minutes of event-time skew between partitions (real Kafka 4 broker, chDB on disk): one
partition's producer is eight minutes of event time ahead of the others'. The service reads every partition
to its end after each minute is produced; the partitions behind, at their end, hold the watermark until idle
(``kafka.idle_after``, here longer than the test), so no window closes early and no event is late: the
store equals a clean pass over the same topic. With ``idle_after: 0`` (a partition stops holding as soon as
it is read to its end, the rule before ``idle_after``) the same traffic counts events late.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from driftline.app.run import consumer_loop
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from tests.integration.conftest import opened
from tests.integration.streams import (MINUTE, PARTITIONS, T0, drain, outcome, produce, service_config,
                                       single_stage_pass, stream_events)
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
MINUTES = 12
SKEW = 8
"""Minutes of event time partition 0's producer is ahead of the others'."""


def skewed_live_run(root: Path, broker: KafkaBroker, prefix: str, idle_after: Any
                    ) -> tuple[int, int, dict[str, list[tuple[Any, ...]]]]:
    """Partition 0 starts with minutes 0-8, partitions 1 and 2 with minute 0; then at each tick each
    producer writes its next minute, and the service reads every partition to its end. Returns the
    messages sent, the late events counted and the rows left in the store."""
    for suffix in ("scoring", "dead-letter", "control"):
        create_topic(broker.bootstrap, f"{prefix}.{suffix}", PARTITIONS)
    topic = f"{prefix}.scoring"
    events = stream_events(range(MINUTES), incident_minutes=(6, 7))
    by = {(m, p): [e for e in events if (e["event_time"] - T0) // MINUTE == m and int(e["request_id"][1:]) % 3 == p]
          for m in range(MINUTES) for p in range(PARTITIONS)}
    cfg = service_config(root / "live", broker.bootstrap, prefix, f"{prefix}-live", checkpoint_interval=0,
                         idle_after=idle_after)
    sent = 0
    with opened(cfg) as store:
        source = KafkaSource(cfg.kafka)
        svc = consumer_loop(cfg, store, source, Publisher(cfg.kafka))
        try:
            for tick in range(MINUTES):
                ahead = range(SKEW + 1) if tick == 0 else [tick + SKEW] if tick + SKEW < MINUTES else []
                sent += produce(broker.bootstrap, topic, [e for m in ahead for e in by[(m, 0)]])
                sent += produce(broker.bootstrap, topic, [e for p in (1, 2) for e in by[(tick, p)]])
                drain(svc, sent)
            late = svc.totals.late
        finally:
            source.close()
        rows = outcome(store)
    gc.collect()
    return sent, late, rows


def test_partitions_minutes_apart_in_event_time_count_nothing_late(tmp_path: Path, broker: KafkaBroker) -> None:
    sent, late, rows = skewed_live_run(tmp_path, broker, "skew", "10m")
    print(f"\nskew of {SKEW} minutes, live, idle_after 10m: {late} of {sent} events late")
    assert late == 0 and rows["late_events"] == []
    clean = single_stage_pass(service_config(tmp_path / "clean", broker.bootstrap, "skew", "skew-clean",
                                             checkpoint_interval=0), sent)
    assert clean["windows"] and clean["alerts"]
    assert rows == clean


def test_without_idleness_the_same_skew_counts_events_late(tmp_path: Path, broker: KafkaBroker) -> None:
    """The rule before ``idle_after`` (and ``idle_after: 0`` now): the partitions behind, at their end,
    stop holding, so partition 0's mark closes their windows before they deliver."""
    sent, late, rows = skewed_live_run(tmp_path, broker, "noidle", 0)
    print(f"\nskew of {SKEW} minutes, live, idle_after 0: {late} of {sent} events late")
    assert late > 0 and rows["late_events"]
