"""A seeded credit-scoring stream on a real broker, a ConsumerLoop over it, and what it left in the store: shared by
the tests that compare a disturbed run with one clean pass (crash recovery, store and broker outages).

    seed_stream(bootstrap, "x.scoring", minutes=range(5))    # 300 events a minute, over 3 partitions
    cfg = service_config(tmp_path, bootstrap, "x", "x-clean")
    with opened(cfg) as store:
        drain(consumer_loop(cfg, store, KafkaSource(cfg.kafka), Publisher(cfg.kafka)), total)
        rows = outcome(store)                                # windows, late counts, alerts, rollbacks
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from driftline.app.run import consumer_loop
from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications
from driftline.config import Config
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.streaming.loop import ConsumerLoop
from tests.integration.conftest import CREDIT_INCIDENT, opened, table_rows

T0 = 1_767_225_600_000
MINUTE = 60_000
PER_MINUTE = 300
PARTITIONS = 3


def stream_events(minutes: Iterable[int], per_minute: int = PER_MINUTE, seed: int = 5,
                  incident_minutes: Iterable[int] = ()) -> list[dict[str, Any]]:
    """``per_minute`` credit events (model credit, version 3) in each of ``minutes``, in time order, 150 ms
    apart; in ``incident_minutes`` income is sent in thousands (windows drift, alerts fire)."""
    incidents = set(incident_minutes)
    out = []
    for minute in minutes:
        data = credit_applications(np.random.default_rng([seed, minute]), per_minute,
                                   CREDIT_INCIDENT if minute in incidents else Incident())
        names = [k for k in data if k not in ("score", "decision")]
        for i in range(per_minute):
            features = {k: data[k][i] for k in names}
            features = {k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v))
                        for k, v in features.items()}
            n = minute * per_minute + i
            out.append({"request_id": f"r{n}", "model": "credit", "model_version": "3",
                        "event_time": T0 + minute * MINUTE + i * 150, "features": features,
                        "score": float(data["score"][i]), "decision": str(data["decision"][i])})
    return out


def produce(bootstrap: str, topic: str, events: Iterable[dict[str, Any]], extra: Iterable[tuple[int, bytes]] = (),
            partitions: int = PARTITIONS) -> int:
    """The events as JSON, round-robin over the partitions (each partition in time order), then the
    ``extra`` raw (partition, value) messages; returns how many messages were acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    sent = 0
    for event in events:
        n = int(event["request_id"][1:])
        producer.produce(topic, json.dumps(event).encode(), event["request_id"].encode(), partition=n % partitions)
        sent += 1
    for partition, value in extra:
        producer.produce(topic, value, partition=partition)
        sent += 1
    assert producer.flush(30) == 0
    return sent


def profile_path(root: Path) -> Path:
    path = root / "credit-3.json"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        profile = build_profile(credit_applications(np.random.default_rng(1), 20_000), model="credit",
                                model_version="3", categorical=CREDIT_CATEGORICAL, score_column="score",
                                decision_column="decision")
        save_profile(profile, path)
    return path


def service_config(folder: Path, bootstrap: str, prefix: str, group: str, batch_size: int = 150,
                   **kafka: Any) -> Config:
    """1-minute tumbling windows, no lateness, min_samples 100; topics ``{prefix}.scoring``,
    ``{prefix}.dead-letter``, ``{prefix}.control``; the store in ``folder/store``."""
    return Config.model_validate({
        "store": {"dsn": f"chdb://{folder / 'store'}"},
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "credit", "references": {"3": str(profile_path(folder.parent))},
                    "policy": {"min_samples": 100}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "batch_size": batch_size,
                  "poll_timeout": 200, "topics": [{"topic": f"{prefix}.scoring"}],
                  "dead_letter_topic": f"{prefix}.dead-letter", "control_topic": f"{prefix}.control", **kafka},
    })


def windows(store: ClickHouseStore) -> list[tuple[Any, ...]]:
    return store.query("SELECT window_start, feature, baseline, window_rows, histogram_current, psi "
                       "FROM driftline.windows FINAL ORDER BY window_start, feature, baseline")[1]


def outcome(store: ClickHouseStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row (FINAL) of the tables a run fills: windows, late counts, alerts, rollback requests."""
    return {table: table_rows(store, table) for table in ("windows", "late_events", "alerts", "rollback_requests")}


def drain(service: ConsumerLoop, total: int, timeout: float = 60, idle_steps: int = 8,
          before_step: Callable[[], None] | None = None) -> None:
    """Step until the offsets of ``total`` messages are checkpointed, consumption is not paused, and
    ``idle_steps`` steps in a row brought nothing (what closes at the ends of the partitions is persisted)."""
    deadline = time.monotonic() + timeout
    idle = 0
    while idle < idle_steps:
        assert time.monotonic() < deadline, (f"{sum(service.offsets.values())} of {total} messages checkpointed "
                                             f"in {timeout} s; {service.health}")
        if before_step is not None:
            before_step()
        report = service.step()
        done = sum(service.offsets.values()) >= total and not service.health.paused
        idle = idle + 1 if done and not report.messages else 0


def single_stage_pass(cfg: Config, total: int) -> dict[str, list[tuple[Any, ...]]]:
    """One undisturbed single-stage run over ``total`` messages with ``cfg``'s group and store: what it
    leaves in the store (:func:`outcome`)."""
    with opened(cfg) as store:
        source = KafkaSource(cfg.kafka)
        try:
            drain(consumer_loop(cfg, store, source, Publisher(cfg.kafka)), total)
        finally:
            source.close()
        rows = outcome(store)
    gc.collect()
    return rows


COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                      KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT}


def committed_total(bootstrap: str, group: str, topic: str, partitions: int, timeout_s: float = 30.0) -> int:
    """The sum of ``group``'s committed offsets over the topic's partitions (0 for none committed). A
    retriable answer (the group's coordinator moving or still loading: ``NOT_COORDINATOR``,
    ``COORDINATOR_LOAD_IN_PROGRESS``) is asked again until ``timeout_s``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in COORDINATOR_MOVING) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
                continue
            return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def ce_ids(bootstrap: str, topic: str) -> list[str]:
    """The ``ce_id`` header of every record on a control topic, read from the beginning to its end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "driftline-test-inspector",
                         "enable.auto.commit": False})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        high = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        position, ids = {p: 0 for p in partitions}, []
        deadline = time.monotonic() + 30
        while any(position[p] < high[p] for p in partitions):
            assert time.monotonic() < deadline, f"{topic}: read {position} of {high}"
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    position[m.partition()] = m.offset() + 1
                    ids += [v.decode() for k, v in m.headers() or [] if k == "ce_id"]
        return ids
    finally:
        consumer.close()
