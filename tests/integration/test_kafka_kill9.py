"""kill -9 at seeded random points: `driftline run` processes are killed mid-stream and restarted; every
table in the store (windows, late counts, alerts, rollback requests, change detections, the audit log
but for its wall-clock column) then equals one clean pass over the same events (real broker, chDB on
disk). The stream's scores shift from minute 3 on (a silent model switch), so the change watch fires."""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications
from driftline.config import Config
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from tests.integration.conftest import TABLES, opened, table_rows
from tests.integration.streams import committed_total
from tests.integration.waits import wait_until
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
MINUTE = 60_000
TOPIC = "kill9.scoring"
PER_MINUTE, MINUTES, PARTITIONS = 4_000, 6, 3
TRIALS = 5
SHIFT_MINUTE = 3
"""From this minute on the scores shift (Incident.score_shift): the change watch has something to detect."""


def scoring_messages() -> list[tuple[bytes, bytes, int]]:
    """The stream: (value, key, partition) of every event, in production order; the scores shift from
    ``SHIFT_MINUTE`` on."""
    rng = np.random.default_rng(9)
    before = credit_applications(rng, PER_MINUTE * SHIFT_MINUTE)
    after = credit_applications(rng, PER_MINUTE * (MINUTES - SHIFT_MINUTE), Incident(score_shift=0.4))
    data = {k: np.concatenate((before[k], after[k])) for k in before}
    names = [k for k in data if k not in ("score", "decision")]
    messages = []
    for i in range(PER_MINUTE * MINUTES):
        features = {k: data[k][i] for k in names}
        features = {k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v))
                    for k, v in features.items()}
        event = {"request_id": f"r{i}", "model": "credit", "model_version": "3",
                 "event_time": T0 + (i // PER_MINUTE) * MINUTE + (i % PER_MINUTE) * (MINUTE // PER_MINUTE),
                 "features": features, "score": float(data["score"][i]), "decision": data["decision"][i]}
        messages.append((json.dumps(event).encode(), f"r{i}".encode(), i % PARTITIONS))
    return messages


@pytest.fixture(scope="module")
def broker(broker: KafkaBroker) -> KafkaBroker:
    """The session's shared broker (conftest), with this module's topics (kill9.*)."""
    for topic in (TOPIC, "kill9.dead-letter", "kill9.control"):
        create_topic(broker.bootstrap, topic, PARTITIONS)
    return broker


def produce(bootstrap: str, messages: list[tuple[bytes, bytes, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value, key, partition in messages:
        producer.produce(TOPIC, value, key, partition=partition)
    assert producer.flush(30) == 0


def write_config(folder: Path, bootstrap: str, group: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    profile = build_profile(credit_applications(np.random.default_rng(1), 20_000), model="credit",
                            model_version="3", categorical=CREDIT_CATEGORICAL, score_column="score",
                            decision_column="decision")
    save_profile(profile, folder / "credit-3.json")
    config = {
        "store": {"dsn": "chdb:store"},
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "credit", "references": {"3": "credit-3.json"}, "policy": {"min_samples": 100}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "batch_size": 50, "poll_timeout": 100,
                  "checkpoint_interval": "200ms",
                  "topics": [{"topic": TOPIC}], "dead_letter_topic": "kill9.dead-letter",
                  "control_topic": "kill9.control",
                  "client": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}},
    }
    path = folder / "driftline.yaml"
    path.write_text(json.dumps(config))
    return path


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "driftline.app.cli", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=config.parent)


def committed(bootstrap: str, group: str) -> int:
    return committed_total(bootstrap, group, TOPIC, PARTITIONS)


def running(process: subprocess.Popen[bytes]) -> bool:
    """True while ``driftline run`` runs; an exit fails the test at once (a wait for it would never end)."""
    assert process.poll() is None, f"driftline run exited with {process.returncode}"
    return True


def drain(config: Path, bootstrap: str, group: str, timeout: float = 120) -> None:
    """Run until every message is committed, then stop with SIGTERM (a clean stop)."""
    process = start(config)
    try:
        wait_until(lambda: running(process) and committed(bootstrap, group) >= PER_MINUTE * MINUTES, timeout,
                   lambda: f"{group} to commit all {PER_MINUTE * MINUTES} messages "
                           f"({committed(bootstrap, group)} committed)", interval=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a stop that hangs is a failure, and no process is left behind
            process.kill()
            raise


def tables(config: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table a run writes rows to (the audit log without its wall-clock ``recorded_at``)."""
    cfg = Config.model_validate({"store": {"dsn": f"chdb://{config.parent / 'store'}"}})
    with opened(cfg) as store:
        rows = {table: table_rows(store, table) for table in (*TABLES, "audit_log")}
    gc.collect()
    return rows


def test_kill_minus_9_at_random_points_loses_nothing_and_counts_nothing_twice(tmp_path: Path,
                                                                               broker: KafkaBroker) -> None:
    """The stream is produced in phases, one before each trial and the last after them, so every kill lands
    mid-stream by construction: a trial waits until a seeded share of what its phase added is committed,
    then dies at a random point between two checkpoints. The clean pass reads the whole topic afterwards."""
    messages = scoring_messages()
    total = len(messages)
    phases = np.array_split(np.arange(total), TRIALS + 1)
    crashy = write_config(tmp_path / "crashy", broker.bootstrap, "kill9-crashy")
    rng = random.Random(20261128)
    progress = []
    for phase in phases[:-1]:
        produce(broker.bootstrap, [messages[i] for i in phase.tolist()])
        produced = int(phase[-1]) + 1
        process = start(crashy)
        try:
            before = committed(broker.bootstrap, "kill9-crashy")
            target = before + rng.uniform(0.2, 0.8) * (produced - before)  # a seeded share of what is new
            wait_until(lambda: running(process) and committed(broker.bootstrap, "kill9-crashy") >= target, 120,
                       lambda: f"{target:.0f} of {produced} messages committed "
                               f"({committed(broker.bootstrap, 'kill9-crashy')} committed)", interval=0.02)
            # then die at a random point between two checkpoints: a seeded random delay, not a wait for anything
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        progress.append(committed(broker.bootstrap, "kill9-crashy"))
    assert all(0 < p < total for p in progress), progress  # by construction: the last phase is not produced yet
    produce(broker.bootstrap, [messages[i] for i in phases[-1].tolist()])
    drain(crashy, broker.bootstrap, "kill9-crashy")

    clean = write_config(tmp_path / "clean", broker.bootstrap, "kill9-clean")
    drain(clean, broker.bootstrap, "kill9-clean")
    expected = tables(clean)
    assert expected["windows"] and {row[9] for row in expected["windows"]} == {PER_MINUTE}  # window_rows
    assert expected["change_detections"], "the score shift must be detected, or the comparison means little"
    assert any(row[2].startswith("changewatch.") for row in expected["audit_log"])  # action
    found = tables(crashy)
    for table in expected:
        assert found[table] == expected[table], table
