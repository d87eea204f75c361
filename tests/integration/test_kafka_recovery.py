"""A crash of the Kafka service, at either side of its checkpoint, loses nothing and counts nothing twice:
the windows in the store equal those of one clean pass over the same topic (real broker, chDB)."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from driftline.config import Config
from driftline.connectors.kafka import KafkaSource, Publisher
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.service import Service
from driftline.synthetic import CREDIT_CATEGORICAL, credit_applications
from tests.integration.conftest import opened
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
MINUTE = 60_000
TOPIC = "recovery.scoring"
PER_MINUTE, MINUTES = 300, 5


class Crash(Exception):
    """Stands for the process dying at that point (kill -9): nothing after it runs."""


@pytest.fixture(scope="module")
def broker() -> Any:
    with KafkaBroker() as running:
        for topic in (TOPIC, "recovery.dead-letter", "recovery.control"):
            create_topic(running.bootstrap, topic, 3)
        producer = Producer({"bootstrap.servers": running.bootstrap})
        data = credit_applications(np.random.default_rng(5), PER_MINUTE * MINUTES)
        for i in range(PER_MINUTE * MINUTES):
            features = {k: (None if isinstance(v[i], float) and v[i] != v[i] else v[i]) for k, v in data.items()
                        if k not in ("score", "decision")}
            features = {k: (v.item() if hasattr(v, "item") else v) for k, v in features.items()}
            event = {"request_id": f"r{i}", "model": "credit", "model_version": "3",
                     "event_time": T0 + (i // PER_MINUTE) * MINUTE + (i % PER_MINUTE) * 150,
                     "features": features, "score": float(data["score"][i]), "decision": data["decision"][i]}
            producer.produce(TOPIC, json.dumps(event).encode(), f"r{i}".encode(), partition=i % 3)
        assert producer.flush(30) == 0
        yield running


def config(tmp_path: Path, bootstrap: str, group: str) -> Config:
    profile_path = tmp_path.parent / "credit-3.json"
    if not profile_path.exists():
        profile = build_profile(credit_applications(np.random.default_rng(1), 20_000), model="credit",
                                model_version="3", categorical=CREDIT_CATEGORICAL, score_column="score",
                                decision_column="decision")
        save_profile(profile, profile_path)
    return Config.model_validate({
        "store": {"dsn": f"chdb://{tmp_path / 'store'}"},
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "credit", "references": {"3": str(profile_path)}, "policy": {"min_samples": 100}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "batch_size": 150, "checkpoint_interval": 0,
                  "poll_timeout": 200, "topics": [{"topic": TOPIC}], "dead_letter_topic": "recovery.dead-letter",
                  "control_topic": "recovery.control"},
    })


def run(cfg: Config, store: Any, stop_after: int | None = None, crash: str | None = None) -> int:
    """Step until the topic is drained (or crash after ``stop_after`` batches); returns messages consumed."""
    source, publisher = KafkaSource(cfg.kafka), Publisher(cfg.kafka)
    service = Service(cfg, store, source, publisher)
    consumed, batches, idle = 0, 0, 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and (consumed == 0 or idle < 8):  # joining the group takes a while
            if stop_after is not None and batches == stop_after:
                if crash == "before checkpoint":
                    service.store.write_checkpoint = _raise  # type: ignore[method-assign]
                else:
                    service.source.commit_offsets = _raise  # type: ignore[method-assign]
            try:
                report = service.step()
            except Crash:
                vars(store).pop("write_checkpoint", None)  # the store outlives the process that died
                return consumed
            consumed += report.messages
            batches += 1 if report.messages else 0
            idle = 0 if report.messages else idle + 1
        return consumed
    finally:
        source.consumer.close()  # leave the group (a real crash would wait out the session timeout)


def _raise(*_: Any, **__: Any) -> None:
    raise Crash


def windows(store: Any) -> list[tuple[Any, ...]]:
    return store.query("SELECT window_start, feature, baseline, window_rows, histogram_current, psi "
                       "FROM driftline.windows FINAL ORDER BY window_start, feature, baseline")[1]


@pytest.mark.parametrize("crash", ["before checkpoint", "after checkpoint, before commit"])
def test_a_crash_loses_nothing_and_counts_nothing_twice(tmp_path: Path, broker: KafkaBroker, crash: str) -> None:
    tag = crash.split()[0]
    clean_cfg = config(tmp_path / "clean", broker.bootstrap, f"clean-{tag}")
    with opened(clean_cfg) as store:
        assert run(clean_cfg, store) == PER_MINUTE * MINUTES
        expected = windows(store)
    gc.collect()
    assert {row[3] for row in expected} == {PER_MINUTE}  # minutes 0-3 closed, full
    crashy = config(tmp_path / "crashy", broker.bootstrap, f"crashy-{tag}")
    with opened(crashy) as store:
        first = run(crashy, store, stop_after=4, crash=crash)
        assert 0 < first < PER_MINUTE * MINUTES
        second = run(crashy, store)  # the restart: restores the checkpoint, goes on from its offsets
        assert second > 0
        assert windows(store) == expected
        late = store.query("SELECT count() FROM driftline.late_events")[1][0][0]
    assert late == 0
