"""A backlog joins as live traffic does, on a real Kafka 4.4 broker: 3,000 Seldon Core v2 request/response
pairs (protobuf ``ModelInferRequest`` on ``…inputs``, ``ModelInferResponse`` on ``…outputs``, keyed by the
request id) over two hours of event time, with the default five-minute ``join.max_wait``, read

- live: each step of the service preceded by the next few pairs produced, request then response;
- as a backlog, everything produced before the service starts: the inputs topic first, or the outputs
  topic first, one partition each or two.

Every reading leaves the same window rows in chDB and no dead letter. (With the join's old clock — the newest
event time over every partition — the topic read first ran ahead and every half waiting on the other expired:
here all 6,000 halves were dead-lettered as unmatched and no window had a row; in the issue's run, 984–1,018
of 1,500 rows per window were left.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.app.run import consumer_loop
from driftline.app.synthetic import credit_applications
from driftline.config import Config
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from tests.integration.conftest import opened
from tests.integration.streams import drain
from tests.integration.test_kafka_oip_protobuf import FEATURES, request, response
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
HOUR = 3_600_000
PAIRS = 3_000


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = credit_applications(np.random.default_rng(1), 20_000)
    built = build_profile({**{f: data[f] for f in FEATURES}, "score": data["score"]}, model="credit",
                          model_version="3", categorical=("channel",), score_column="score")
    path = tmp_path_factory.mktemp("profiles") / "credit-3.json"
    save_profile(built, path)
    return path


def topics(namespace: str) -> tuple[str, str, str, str]:
    """A run's topics, under ``backlog-`` (this module's on the session's shared broker)."""
    seldon = f"seldon.backlog-{namespace}.model.credit"
    return (f"{seldon}.inputs", f"{seldon}.outputs", f"backlog-{namespace}.dead-letter",
            f"backlog-{namespace}.control")


def config(folder: Path, bootstrap: str, namespace: str, profile: Path) -> Config:
    inputs, outputs, dead, control = topics(namespace)
    oip = {"format": "oip-protobuf", "model": "credit", "model_version": "3"}  # the message from the name
    return Config.model_validate({
        "store": {"dsn": f"chdb://{folder / 'store'}"},
        "windows": {"size": "1h", "allowed_lateness": 0, "max_future": None},
        "join": {"max_wait": "5m"},
        "models": [{"name": "credit", "references": {"3": str(profile)}, "policy": {"min_samples": 50}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"backlog-{namespace}", "batch_size": 200,
                  "poll_timeout": 200,
                  # a partition read to its end stops holding at once: the drain ends before any idle
                  # timer could pass (the idleness rule has its own tests, test_kafka_idleness.py)
                  "idle_after": 0,
                  "dead_letter_topic": dead, "control_topic": control,
                  "topics": [{"topic": inputs, **oip, "feature_names": list(FEATURES)},
                             {"topic": outputs, **oip, "score_output": "predict_proba"}]},
    })


def messages(namespace: str) -> list[tuple[str, bytes, bytes, int]]:
    """(topic, value, key, timestamp) of every pair in production order: 3,000 pairs 2.4 s apart over two
    hours (each response 30–900 ms after its request), and one pair an hour later that closes both windows."""
    inputs, outputs, _, _ = topics(namespace)
    rng = np.random.default_rng(2)
    data = credit_applications(rng, PAIRS + 1)
    out = []
    for i in range(PAIRS + 1):
        key = f"xid{i:08d}".encode()  # Seldon keys both halves by the request's XID
        stamp = T0 + i * 2 * HOUR // PAIRS if i < PAIRS else T0 + 3 * HOUR
        out.append((inputs, request(float(data["income"][i]), float(data["age"][i]), str(data["channel"][i]),
                                    raw=i % 2 == 1), key, stamp))
        out.append((outputs, response(float(data["score"][i]), raw=i % 3 == 0), key,
                    stamp + int(rng.integers(30, 900))))
    return out


def produce(producer: Producer, records: list[tuple[str, bytes, bytes, int]]) -> None:
    for topic, value, key, stamp in records:
        producer.produce(topic, value, key, timestamp=stamp)
    assert producer.flush(30) == 0


def run(folder: Path, broker: KafkaBroker, namespace: str, profile: Path, partitions: int,
        before: Callable[[Producer, list[tuple[str, bytes, bytes, int]]], None],
        during: Callable[[Producer, list[tuple[str, bytes, bytes, int]]], Callable[[], None] | None]
        ) -> tuple[list[tuple[Any, ...]], int, int]:
    """Produce what ``before`` produces, start the service, step it until everything is read (``during``
    may produce before each step): the window rows, the join's unmatched halves and the dead letters."""
    inputs, outputs, dead, control = topics(namespace)
    for topic in (inputs, outputs):
        create_topic(broker.bootstrap, topic, partitions)
    for topic in (dead, control):
        create_topic(broker.bootstrap, topic, 1)
    records = messages(namespace)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    before(producer, records)
    cfg = config(folder, broker.bootstrap, namespace, profile)
    with opened(cfg) as store:
        source = KafkaSource(cfg.kafka)
        service = consumer_loop(cfg, store, source, Publisher(cfg.kafka))
        try:
            drain(service, len(records), timeout=180, before_step=during(producer, records))
        finally:
            source.close()
        rows = store.query("SELECT window_start, feature, baseline, window_rows, n, histogram_current, psi "
                           "FROM driftline.windows FINAL ORDER BY window_start, feature, baseline")[1]
        totals = service.totals
    return rows, totals.unmatched_requests + totals.unmatched_responses, published(broker.bootstrap, dead)


def published(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "driftline-test-inspector"})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        consumer.close()


def live(producer: Producer, records: list[tuple[str, bytes, bytes, int]]) -> Callable[[], None]:
    """Before each step, the next 40 pairs (request, then its response)."""
    left = list(records)

    def next_pairs() -> None:
        if left:
            produce(producer, left[:80])
            del left[:80]

    return next_pairs


def nothing(producer: Producer, records: list[tuple[str, bytes, bytes, int]]) -> None:
    return None


def topic_first(which: int) -> Callable[[Producer, list[tuple[str, bytes, bytes, int]]], None]:
    """Everything before the start: the inputs topic (0) or the outputs topic (1) first, then the other."""
    def backlog(producer: Producer, records: list[tuple[str, bytes, bytes, int]]) -> None:
        produce(producer, records[which::2])
        produce(producer, records[1 - which::2])
    return backlog


def test_a_backlog_of_seldon_pairs_gives_the_windows_of_live_traffic(tmp_path: Path, broker: KafkaBroker,
                                                                       profile: Path) -> None:
    rows, unmatched, dead = run(tmp_path / "live", broker, "live", profile, 1, nothing, live)
    by_window = {r[0]: r[3] for r in rows if r[1] == "income" and r[2] == "reference"}
    assert list(by_window.values()) == [PAIRS // 2, PAIRS // 2]  # every pair joined; the closing pair's hour open
    assert (unmatched, dead) == (0, 0)
    for name, partitions, before in (("inputs-first", 1, topic_first(0)), ("outputs-first", 1, topic_first(1)),
                                     ("inputs-first-2p", 2, topic_first(0)), ("outputs-first-2p", 2, topic_first(1))):
        backlog = run(tmp_path / name, broker, name, profile, partitions, before, lambda *_: None)
        assert backlog == (rows, 0, 0), name
