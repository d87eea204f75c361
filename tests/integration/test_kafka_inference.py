"""Seldon Core v2 topics on a real Kafka 4.4 broker: Open Inference Protocol JSON requests and responses on
``seldon.<ns>.model.<m>.inputs|outputs``, keyed by the request id, joined into windows in chDB."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from driftline.app.run import consumer_loop
from driftline.app.synthetic import credit_applications
from driftline.config import Config
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from tests.integration.conftest import opened
from tests.integration.streams import drain
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
MINUTE = 60_000
FEATURES = ("income", "age", "channel")
INPUTS, OUTPUTS = "seldon.default.model.credit.inputs", "seldon.default.model.credit.outputs"


@pytest.fixture(scope="module")
def broker(broker: KafkaBroker) -> KafkaBroker:
    """The session's shared broker (conftest), with this module's topics (seldon.default.*, oip.*)."""
    for topic in (INPUTS, OUTPUTS, "oip.dead-letter", "oip.control"):
        create_topic(broker.bootstrap, topic, 2)
    return broker


def config(tmp_path: Path, bootstrap: str) -> Config:
    data = credit_applications(np.random.default_rng(1), 20_000)
    profile = build_profile({**{f: data[f] for f in FEATURES}, "score": data["score"]}, model="credit",
                            model_version="3", categorical=("channel",), score_column="score")
    save_profile(profile, tmp_path / "credit-3.json")
    oip = {"format": "oip-json", "model": "credit", "model_version": "3"}
    return Config.model_validate({
        "store": {"dsn": f"chdb://{tmp_path / 'store'}"},
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "credit", "references": {"3": str(tmp_path / "credit-3.json")},
                    "policy": {"min_samples": 50}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": "oip", "batch_size": 200, "poll_timeout": 200,
                  "dead_letter_topic": "oip.dead-letter", "control_topic": "oip.control",
                  "topics": [{"topic": INPUTS, **oip, "feature_names": list(FEATURES)},
                             {"topic": OUTPUTS, **oip, "score_output": "predict_proba"}]},
    })


def produce(bootstrap: str, minutes: int, per_minute: int) -> int:
    rng = np.random.default_rng(2)
    data = credit_applications(rng, minutes * per_minute)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(minutes * per_minute):
        key = f"xid{i:08d}".encode()  # Seldon keys both halves by the request's XID
        stamp = T0 + (i // per_minute) * MINUTE + int(rng.integers(0, MINUTE - 100))
        row = [float(data["income"][i]), float(data["age"][i]), str(data["channel"][i])]
        request = {"inputs": [{"name": "predict", "shape": [1, 3], "datatype": "BYTES", "data": [row]}]}
        p = float(data["score"][i])
        response = {"model_name": "credit", "outputs": [{"name": "predict_proba", "shape": [1, 2],
                                                          "datatype": "FP64", "data": [1 - p, p]}]}
        producer.produce(INPUTS, json.dumps(request).encode(), key, timestamp=stamp)
        producer.produce(OUTPUTS, json.dumps(response).encode(), key, timestamp=stamp + 30)
    producer.produce(INPUTS, b'{"inputs": "oops"}', b"broken", timestamp=T0)
    assert producer.flush(30) == 0
    return 2 * minutes * per_minute + 1


def test_seldon_oip_topics_join_into_windows(tmp_path: Path, broker: KafkaBroker) -> None:
    cfg = config(tmp_path, broker.bootstrap)
    total = produce(broker.bootstrap, minutes=3, per_minute=200)
    with opened(cfg) as store:
        source, publisher = KafkaSource(cfg.kafka), Publisher(cfg.kafka)
        service = consumer_loop(cfg, store, source, publisher)
        try:
            drain(service, total)  # and let the partitions report their ends
        finally:
            source.close()
        _, rows = store.query("SELECT window_start, window_rows FROM driftline.windows FINAL "
                              "WHERE feature = 'income' AND baseline = 'reference' ORDER BY window_start")
    assert [r[1] for r in rows] == [200, 200]  # every request joined; minute 2 is still open in event time
    dead = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "oip-dlq-reader",
                     "auto.offset.reset": "earliest"})
    dead.subscribe(["oip.dead-letter"])
    letters = []
    deadline = time.monotonic() + 20
    while not letters and time.monotonic() < deadline:
        letters = [m for m in dead.consume(10, 1.0) if m.error() is None]
    dead.close()
    assert [(m.key(), dict(m.headers())["driftline.stage"]) for m in letters] == [(b"broken", b"decode")]
