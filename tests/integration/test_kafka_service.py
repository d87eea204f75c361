"""``driftline run`` against a real Kafka 4 broker (tests/kafka_broker.py): the consumer loop with a
real KafkaSource, Publisher and an embedded chDB store, 1-minute tumbling windows, synthetic credit traffic.

Traffic is produced minute by minute (event time), and the service is stepped until it has consumed each
minute before the next is produced, as a live stream would be: the window of minute m closes in the step
that reads the first event of minute m + 1 (allowed lateness 0).

Proves: JSON events on a 3-partition topic land as windows and the group's committed offsets reach the end
offsets; bad messages go to the dead-letter topic with their original bytes, key and the documented headers
while the rest lands; raw Avro gives the same windows as JSON; an incident publishes alerts and dry-run
rollback requests on the control topic (Avro + CloudEvents headers), and a replay with a new group id
publishes the same ce_ids. Measures (prints) the time from a window-closing poll to the alert being readable.

Dead letters whose message was consumed in an earlier batch (unmatched join halves, a joined pair that fails
validation) carry its bytes and key too, fetched back by offset; one that can no longer be fetched carries
the headers and ``driftline.payload.missing``.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


from driftline.app.run import consumer_loop
from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications
from driftline.config import Config
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.kafka.publish import (ALERT_TYPE, CHANGE_TYPE, MISSING_PAYLOAD as MISSING, ROLLBACK_TYPE,
                                               VERSION_CHANGE_TYPE, Publisher)
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.engine.window import window_id
from driftline.schemas import schema_text
from driftline.streaming.loop import BatchReport, ConsumerLoop
from tests.kafka_broker import KafkaBroker, create_topic

from .conftest import CREDIT, CREDIT_INCIDENT, DAY_START_MS, load, opened, table_rows, write_config

pytestmark = pytest.mark.integration

Profiles = dict[tuple[str, str], Path]
MINUTE_MS = 60_000
PARTITIONS = 3
BATCH_SIZE = 128
LIMIT = 4_096  # kafka.max_message_bytes in these tests
EVENT_SCHEMA = fastavro.parse_schema(json.loads(schema_text("scoring_event.avsc")))
ALERT_SCHEMA = fastavro.parse_schema(json.loads(schema_text("control_alert.avsc")))
CHANGE_SCHEMA = fastavro.parse_schema(json.loads(schema_text("control_change.avsc")))
ROLLBACK_SCHEMA = fastavro.parse_schema(json.loads(schema_text("control_rollback.avsc")))
DLQ_HEADERS = ("driftline.source.topic", "driftline.source.partition", "driftline.source.offset", "driftline.stage",
               "driftline.error.class", "driftline.error.reason")


# -- the broker and Kafka helpers ------------------------------------------------------------------------


def create_topics(bootstrap: str, kafka: dict[str, Any], source_config: dict[str, str] | None = None) -> None:
    for t in kafka["topics"]:
        create_topic(bootstrap, t["topic"], PARTITIONS, config=source_config)
    create_topic(bootstrap, kafka["dead_letter_topic"], PARTITIONS, config=source_config)
    create_topic(bootstrap, kafka["control_topic"], PARTITIONS)


Outgoing = tuple[bytes | None, bytes | None, int | None]
"""(key, value, partition or None for the producer's partitioner)"""


def produce(bootstrap: str, topic: str, messages: Sequence[Outgoing], max_bytes: int = 1_000_000
            ) -> list[tuple[int, int]]:
    """Produce in order and wait for every acknowledgement; the (partition, offset) of each message."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 2, "message.max.bytes": max_bytes})
    where: list[tuple[int, int] | None] = [None] * len(messages)
    failed: list[str] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def callback(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failed.append(str(error))
            else:
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None
                where[index] = (partition, offset)
        return callback

    for i, (key, value, partition) in enumerate(messages):
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": delivered(i)}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0 and failed == [], failed
    assert all(w is not None for w in where)
    return [w for w in where if w is not None]


def end_offsets(bootstrap: str, topic: str, group: str | None = None) -> tuple[dict[int, int], dict[int, int]]:
    """(high watermarks, the group's committed offsets) of every partition, from a fresh consumer."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group or "driftline-test-inspector",
                         "enable.auto.commit": False})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        high = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        committed = {}
        if group is not None:
            committed = {tp.partition: tp.offset for tp in
                         consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)}
    finally:
        consumer.close()
    return high, committed


@dataclass
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    read_at: float = 0.0


def _record(m: Message) -> Record:
    pairs: list[tuple[str, bytes | None]] = list(m.headers() or [])  # type: ignore[arg-type]
    headers = {k: v for k, v in pairs if isinstance(v, bytes)}
    assert len(headers) == len(pairs), f"repeated or empty header in {pairs}"
    partition, offset, key, value = m.partition(), m.offset(), m.key(), m.value()
    assert partition is not None and offset is not None
    assert not isinstance(key, str) and not isinstance(value, str)
    return Record(partition, offset, key, value, headers, time.monotonic())


class TopicReader:
    """Reads a whole topic from the beginning by assignment (no group), and whatever arrives later."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "driftline-test-reader",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.error.backoff.ms": 5})
        partitions = sorted(self.consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.partitions = partitions
        self.records: list[Record] = []

    def poll(self, seconds: float) -> list[Record]:
        out = []
        for m in self.consumer.consume(1_000, seconds):
            if m.error() is not None:
                raise KafkaException(m.error())
            out.append(_record(m))
        self.records += out
        return out

    def until(self, done: Callable[[list[Record]], bool], timeout: float = 15) -> list[Record]:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            assert time.monotonic() < deadline, f"{self.topic}: condition not met in {timeout} s"
            self.poll(0.02)
        return self.records

    def all(self, timeout: float = 15) -> list[Record]:
        """Everything up to the topic's current end offsets."""
        high = {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                for p in self.partitions}

        def complete(records: list[Record]) -> bool:
            seen = Counter(r.partition for r in records)
            return all(seen[p] >= high[p] for p in self.partitions)

        return sorted(self.until(complete, timeout), key=lambda r: (r.partition, r.offset))

    def close(self) -> None:
        self.consumer.close()


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    reader = TopicReader(bootstrap, topic)
    try:
        return reader.all()
    finally:
        reader.close()


# -- traffic -----------------------------------------------------------------------------------------------


def minute_events(minute: int, n: int, incident: Incident = Incident(), seed: int = 7) -> list[dict[str, Any]]:
    """``n`` credit_scoring combined events with event times inside minute ``minute`` after DAY_START_MS,
    in time order."""
    rng = np.random.default_rng([seed, minute])
    data = credit_applications(rng, n, incident)
    times = np.sort(DAY_START_MS + minute * MINUTE_MS + rng.integers(0, MINUTE_MS, n))
    names = [k for k in data if k not in ("score", "decision")]
    columns = {k: data[k].tolist() for k in names}
    out = []
    for i in range(n):
        out.append({
            "request_id": hashlib.blake2b(f"{seed}:{minute}:{i}".encode(), digest_size=10).hexdigest(),
            "model": CREDIT[0], "model_version": CREDIT[1], "event_time": int(times[i]),
            "features": {k: (None if isinstance(v[i], float) and math.isnan(v[i]) else v[i])
                         for k, v in columns.items()},
            "score": float(data["score"][i]), "decision": str(data["decision"][i]),
        })
    return out


def as_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, allow_nan=False).encode()


def as_avro(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, EVENT_SCHEMA, record)
    return out.getvalue()


def spread(records: Sequence[dict[str, Any]], encode: Callable[[dict[str, Any]], bytes]) -> list[Outgoing]:
    """Keyed by request id, so the events of a minute spread over the partitions."""
    return [(r["request_id"].encode(), encode(r), None) for r in records]


# -- the service ---------------------------------------------------------------------------------------------


def service_config(folder: Path, profiles: Profiles, bootstrap: str, name: str, fmt: str = "json",
                   min_samples: int = 100, **kafka: Any) -> tuple[Config, dict[str, Any]]:
    section = {"bootstrap_servers": bootstrap, "group_id": f"{name}-group", "topics": [{"topic": f"{name}.scoring",
                                                                                         "format": fmt}],
               "dead_letter_topic": f"{name}.dead-letter", "control_topic": f"{name}.control",
               "batch_size": BATCH_SIZE, "checkpoint_interval": 0, "poll_timeout": "200ms", "max_message_bytes": LIMIT, **kafka}
    path = write_config(folder, profiles, min_samples=min_samples,
                        extra={"windows": {"size": "1m", "allowed_lateness": 0}, "kafka": section})
    return load(path), section


@dataclass
class Step:
    polled_at: float
    done_at: float
    report: BatchReport


@dataclass
class Running:
    """One ConsumerLoop on a real consumer and producer, stepped by the test."""

    config: Config
    store: ClickHouseStore
    source: KafkaSource = field(init=False)
    publisher: Publisher = field(init=False)
    service: ConsumerLoop = field(init=False)
    steps: list[Step] = field(default_factory=list)
    _polled_at: float = 0.0

    def __post_init__(self) -> None:
        self.source = KafkaSource(self.config.kafka)
        self.publisher = Publisher(self.config.kafka)
        self.service = consumer_loop(self.config, self.store, self.source, self.publisher)
        poll = self.source.poll_batch

        def timed_poll() -> list[Message]:
            batch = poll()
            self._polled_at = time.monotonic()
            return batch

        self.source.poll_batch = timed_poll  # type: ignore[method-assign]

    def drain(self, count: int, timeout: float = 60, after: Callable[[Step], None] | None = None) -> list[Step]:
        """Step until ``count`` messages have been consumed (and no more); the steps that had messages."""
        deadline = time.monotonic() + timeout
        got, out = 0, []
        while got < count:
            assert time.monotonic() < deadline, f"{got} of {count} messages consumed in {timeout} s"
            report = self.service.step()
            if report.messages:
                step = Step(self._polled_at, time.monotonic(), report)
                out.append(step)
                got += report.messages
                if after is not None:
                    after(step)
        assert got == count, f"consumed {got} messages, {count} expected"
        self.steps += out
        return out

    def close(self) -> None:
        self.source.close()
        self.service.delivery.dead_letters.fetcher.close()
        self.publisher.flush()


def paced(running: Running, bootstrap: str, topic: str, minutes: Sequence[list[Outgoing]],
          after: Callable[[Step], None] | None = None) -> list[list[Step]]:
    """Produce each minute's messages, then step the service until it has consumed them."""
    out = []
    for messages in minutes:
        produce(bootstrap, topic, messages)
        out.append(running.drain(len(messages), after=after))
    return out


def windows_of(store: ClickHouseStore, model: str = CREDIT[0]) -> dict[int, int]:
    """window start (ms) → window rows, from the store."""
    sql = (f"SELECT DISTINCT toUnixTimestamp64Milli(window_start), window_rows FROM {store.database}.windows FINAL "
           f"WHERE model = '{model}' AND baseline = 'reference' ORDER BY 1")
    rows = store.query(sql)[1]
    starts = [int(s) for s, _ in rows]
    assert len(starts) == len(set(starts)), f"a window with two row counts: {rows}"
    return {int(s): int(n) for s, n in rows}


def late_rows(store: ClickHouseStore) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.late_events")[1][0][0])


def minute_start(minute: int) -> int:
    return DAY_START_MS + minute * MINUTE_MS


# -- 1. JSON on a 3-partition topic ---------------------------------------------------------------------------

SCENARIO = [(0, 250, Incident()), (1, 250, Incident()), (2, 250, CREDIT_INCIDENT), (3, 250, CREDIT_INCIDENT),
            (4, 20, Incident())]
"""(minute, events, incident): four full minutes, the last two with income sent in thousands, and a few
events of minute 4 whose only job is to close the window of minute 3."""


@dataclass
class RunResult:
    config: Config
    section: dict[str, Any]
    steps: list[list[Step]]
    rows: dict[str, list[tuple[Any, ...]]]
    late: int
    """Rows in the late_events table."""
    windows: dict[int, int]
    high: dict[int, int]
    committed: dict[int, int]
    committed_after_close: dict[int, int]
    dead_letters: list[Record]
    control: list[Record]
    seconds: float


def scenario_run(root: Path, profiles: Profiles, broker: KafkaBroker, name: str, fmt: str,
                 extra: Sequence[list[Outgoing]] = ()) -> RunResult:
    """The SCENARIO in format ``fmt``; ``extra[i]`` are more messages produced with minute i's."""
    began = time.monotonic()
    config, section = service_config(root, profiles, broker.bootstrap, name, fmt)
    create_topics(broker.bootstrap, section)
    encode = as_json if fmt == "json" else as_avro
    minutes = [spread(minute_events(m, n, incident), encode) + (list(extra[i]) if i < len(extra) else [])
               for i, (m, n, incident) in enumerate(SCENARIO)]
    topic = section["topics"][0]["topic"]
    with opened(config) as store:
        running = Running(config, store)
        try:
            steps = paced(running, broker.bootstrap, topic, minutes)
            high, committed = end_offsets(broker.bootstrap, topic, section["group_id"])
        finally:
            running.close()
        _, committed_after_close = end_offsets(broker.bootstrap, topic, section["group_id"])
        rows = {t: table_rows(store, t) for t in ("windows", "alerts", "rollback_requests")}
        late = late_rows(store)
        windows = windows_of(store)
    gc.collect()
    return RunResult(config, section, steps, rows, late, windows, high, committed, committed_after_close,
                     read_topic(broker.bootstrap, section["dead_letter_topic"]),
                     read_topic(broker.bootstrap, section["control_topic"]), time.monotonic() - began)


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory, profiles: Profiles, broker: KafkaBroker) -> RunResult:
    return scenario_run(tmp_path_factory.mktemp("json-run"), profiles, broker, "json", "json")


def test_json_events_land_as_windows_and_offsets_are_committed(json_run: RunResult) -> None:
    run = json_run
    print(f"\nJSON scenario: {sum(n for _, n, _ in SCENARIO)} events in "
          f"{sum(len(s) for s in run.steps)} batches, {run.seconds:.1f} s")
    # consumed in batches of at most batch_size, several per minute, from every partition
    reports = [s.report for minute in run.steps for s in minute]
    assert all(0 < r.messages <= BATCH_SIZE for r in reports)
    assert sum(r.messages for r in reports) == sum(n for _, n, _ in SCENARIO)
    assert all(len(minute) >= 2 for minute in run.steps[:4])
    assert sorted(run.high) == [0, 1, 2] and all(run.high[p] > 0 for p in run.high)
    # committed offsets = end offsets, while the member is in the group and after it left
    assert run.committed == run.high
    assert run.committed_after_close == run.high
    # the four full minutes are windows with every event; minute 4's window is still open
    assert run.windows == {minute_start(m): n for m, n, _ in SCENARIO[:4]}
    assert run.late == 0
    assert [r.report.dead_letters for minute in run.steps for r in minute] == [0] * len(reports)
    assert run.dead_letters == []
    # window m closed in one of the steps that read minute m + 1: once every partition had passed it (one
    # read to its end in minute m still holds it: kafka.idle_after)
    for m in range(4):
        closing = [s for s in run.steps[m + 1] if s.report.step.reports]
        assert len(closing) == 1, [[r.window.start_ms for r in s.report.step.reports] for s in closing]
        assert [r.window.start_ms for r in closing[0].report.step.reports] == [minute_start(m)]
    assert all(s.report.step.reports == [] for s in run.steps[0])
    # the incident of minutes 2 and 3 fired (two windows in a row) when window 3 closed
    firing = [(a.subject, a.window.start_ms) for minute in run.steps[4:] for s in minute
              for a in s.report.step.alerts if a.kind == "firing"]
    assert ("income", minute_start(3)) in firing, firing
    assert len(run.rows["alerts"]) == sum(len(s.report.step.alerts) for minute in run.steps for s in minute)


# -- 2. bad messages -------------------------------------------------------------------------------------------


def _good(minute: int, i: int, **changes: Any) -> dict[str, Any]:
    record = minute_events(minute, 1, seed=1000 + i)[0]
    record["request_id"] = f"odd-{i}"
    record.update(changes)
    return record


@dataclass
class Bad:
    name: str
    key: bytes | None
    value: bytes | None
    stage: str | tuple[str, ...]
    error_class: str | tuple[str, ...]
    reason: str


def bad_messages() -> list[Bad]:
    oversized = as_json({**_good(0, 8), "request_id": "oversized", "padding": "x" * LIMIT})
    assert len(oversized) > LIMIT
    return [
        Bad("not JSON", b"k-0", b"this is not json", "decode", "JSONDecodeError", "not JSON"),
        Bad("not UTF-8", b"k-1", b'{"request_id": "r\xff\xfe", "model": "credit_scoring"}', "decode",
            ("JSONDecodeError", "UnicodeDecodeError"), "not JSON"),
        Bad("truncated JSON", b"k-2", as_json(_good(0, 2))[:60], "decode", "JSONDecodeError", "not JSON"),
        # the file replay reports a JSON array at stage validate, the Kafka codec at stage decode: either
        Bad("a JSON array", b"k-3", b"[1, 2, 3]", ("decode", "validate"), "SchemaMismatch",
            "expected a JSON object, got list"),
        Bad("a score that is a string", b"k-4", as_json(_good(0, 4, score="high")), "validate", "SchemaMismatch",
            "score must be a number or null"),
        Bad("a feature that is a string", b"k-5",
            as_json(_good(0, 5, features={**_good(0, 5)["features"], "income": "lots"})), "validate",
            "SchemaMismatch", "feature 'income' must be a number, got 'lots'"),
        Bad("event time in seconds", b"k-6", as_json(_good(0, 6, event_time=DAY_START_MS // 1000 + 5)), "validate",
            "SchemaMismatch", "epoch seconds?"),
        Bad("an unknown model", b"k-7", as_json(_good(0, 7, model="churn", model_version="1")), "engine",
            "UnknownModel", "no reference profile configured for model churn version 1"),
        Bad("an unknown version", b"k-8", as_json(_good(0, 8, model_version="99")), "engine", "UnknownModel",
            "no reference profile configured for model credit_scoring version 99"),
        Bad("oversized", b"k-9", oversized, "decode", "OversizedMessage", f"over the {LIMIT}-byte limit"),
        Bad("a tombstone", b"k-10", None, "decode", "EmptyMessage", "tombstone"),
        Bad("an event far in the future", None,
            as_json(_good(0, 11, event_time=int(time.time() * 1000) + 3 * 3_600_000)), "engine",
            ("OutOfWindow", "FutureEvent"), "ahead"),
    ]


def exactly_at_limit() -> bytes:
    """A good event padded with JSON whitespace to exactly kafka.max_message_bytes: accepted."""
    value = as_json(_good(0, 99))
    return value + b" " * (LIMIT - len(value))


def check_dead_letters(dead: list[Record], topic: str, sent: list[tuple[Bad, tuple[int, int]]]) -> None:
    by_source: dict[tuple[str, int, int], Record] = {}
    for r in dead:
        assert set(DLQ_HEADERS) <= set(r.headers), r.headers
        source = (r.headers["driftline.source.topic"].decode(), int(r.headers["driftline.source.partition"]),
                  int(r.headers["driftline.source.offset"]))
        assert source not in by_source, f"{source} dead-lettered twice"
        by_source[source] = r
    for bad, (partition, offset) in sent:
        assert (topic, partition, offset) in by_source, \
            f"{bad.name} ({topic}[{partition}]@{offset}) is not on the dead-letter topic"
        r = by_source.pop((topic, partition, offset))
        assert r.value == bad.value, bad.name
        assert r.key == bad.key, bad.name
        stages = (bad.stage,) if isinstance(bad.stage, str) else bad.stage
        classes = (bad.error_class,) if isinstance(bad.error_class, str) else bad.error_class
        assert r.headers["driftline.stage"].decode() in stages, (bad.name, r.headers)
        assert r.headers["driftline.error.class"].decode() in classes, (bad.name, r.headers)
        assert bad.reason in r.headers["driftline.error.reason"].decode(), (bad.name, r.headers)
        assert r.headers["driftline.origin"] == f"{topic}[{partition}]@{offset}".encode()
    assert by_source == {}, f"unexpected dead letters: {by_source}"


def test_bad_messages_go_to_the_dead_letter_topic_and_the_rest_lands(tmp_path: Path, profiles: Profiles,
                                                                     broker: KafkaBroker) -> None:
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "dirty")
    create_topics(broker.bootstrap, section)
    topic = section["topics"][0]["topic"]
    bad = bad_messages()
    good = [minute_events(0, 200), minute_events(1, 200), minute_events(2, 5)]
    # minute 0: the good events with the bad ones between them, on every partition; one event exactly at the limit
    minute0 = spread(good[0], as_json)
    at = {len(minute0) * (i + 1) // (len(bad) + 1): b for i, b in enumerate(bad)}
    messages: list[Outgoing] = []
    bad_at: list[tuple[Bad, int]] = []  # (bad message, its index in ``messages``)
    for i, message in enumerate(minute0):
        if i in at:
            bad_at.append((at[i], len(messages)))
            messages.append((at[i].key, at[i].value, i % PARTITIONS))
        messages.append(message)
    messages.append((b"at-limit", exactly_at_limit(), 1))
    # minute 1: a second round of the same bad messages, after the consumer has seen the first
    second = [(b.key, b.value, (i + 1) % PARTITIONS) for i, b in enumerate(bad)]
    minutes = [messages, spread(good[1], as_json) + second, spread(good[2], as_json)]

    with opened(config) as store:
        running = Running(config, store)
        positions = []
        try:
            for batch in minutes:
                positions.append(produce(broker.bootstrap, topic, batch))
                running.drain(len(batch))
            high, committed = end_offsets(broker.bootstrap, topic, section["group_id"])
        finally:
            running.close()
        windows = windows_of(store)
        late = late_rows(store)

    sent = [(b, positions[0][index]) for b, index in bad_at]
    sent += [(b, positions[1][len(good[1]) + i]) for i, b in enumerate(bad)]
    assert [b.name for b, _ in sent] == [b.name for b in bad] * 2
    check_dead_letters(read_topic(broker.bootstrap, section["dead_letter_topic"]), topic, sent)
    assert sum(s.report.dead_letters for s in running.steps) == 2 * len(bad)
    # the consumer never stopped: every message is committed, and the good events are in their windows
    assert committed == high
    assert sum(s.report.messages for s in running.steps) == sum(len(m) for m in minutes)
    assert windows == {minute_start(0): len(good[0]) + 1, minute_start(1): len(good[1])}
    assert late == 0


def test_an_empty_value_is_a_dead_letter_too(tmp_path: Path, profiles: Profiles, broker: KafkaBroker) -> None:
    """A zero-length value (not a tombstone, which is a null value): not JSON, dead-lettered with its empty
    bytes, and the empty value stays empty (not null) on the dead-letter topic."""
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "empty")
    create_topics(broker.bootstrap, section)
    topic = section["topics"][0]["topic"]
    with opened(config) as store:
        running = Running(config, store)
        try:
            messages = [(b"empty", b"", 0), *spread(minute_events(0, 20), as_json)]
            positions = produce(broker.bootstrap, topic, messages)
            running.drain(len(messages))
        finally:
            running.close()
    dead = read_topic(broker.bootstrap, section["dead_letter_topic"])
    assert len(dead) == 1
    r = dead[0]
    assert (int(r.headers["driftline.source.partition"]), int(r.headers["driftline.source.offset"])) == positions[0]
    assert r.headers["driftline.stage"] == b"decode" and r.key == b"empty"
    assert (r.headers["driftline.error.class"], r.value) == (b"JSONDecodeError", b"")  # b"", not None (a tombstone)


def test_an_unmatched_request_is_dead_lettered_with_its_bytes(tmp_path: Path, profiles: Profiles,
                                                            broker: KafkaBroker) -> None:
    """A request without its response (and a response without its request) leaves the join as unmatched once
    join.max_wait (1 minute of event time) has passed, which is in a later batch than its own."""
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "unmatched")
    create_topics(broker.bootstrap, section)
    topic = section["topics"][0]["topic"]
    lonely = _good(0, 1, request_id="lonely-request")
    request = {k: v for k, v in lonely.items() if k not in ("score", "decision")}
    response = {k: v for k, v in _good(0, 2, request_id="lonely-response").items() if k != "features"}
    bad = [Bad("a request without a response", b"req", as_json(request), "join", "Unmatched",
               "request without a response within 60s"),
           Bad("a response without a request", b"resp", as_json(response), "join", "Unmatched",
               "response without a request within 60s")]
    # and a pair whose request (minute 0) has a feature of the wrong type, its response a batch later
    pair = _good(0, 3, request_id="late-pair", features={**lonely["features"], "income": "lots"})
    bad.append(Bad("a joined pair with a wrong-typed feature", b"pair",
                   as_json({k: v for k, v in pair.items() if k not in ("score", "decision")}), "validate",
                   "SchemaMismatch", "feature 'income' must be a number, got 'lots'"))
    pair_response = (b"pair", as_json({k: v for k, v in pair.items() if k != "features"}), 0)
    # the pair's response is read before minute 1's events: the join's clock (the newest event time seen,
    # over every partition) must not pass the pair's request before its response arrives
    minutes = [[(b.key, b.value, i) for i, b in enumerate(bad)] + spread(minute_events(0, 50), as_json),
               [pair_response], spread(minute_events(1, 50), as_json), spread(minute_events(2, 50), as_json)]
    with opened(config) as store:
        running = Running(config, store)
        try:
            positions, steps = [], []
            for batch in minutes:
                positions.append(produce(broker.bootstrap, topic, batch))
                steps.append(running.drain(len(batch)))
        finally:
            running.close()
    assert sum(s.report.dead_letters for s in running.steps) == 3
    assert sum(s.report.dead_letters for s in steps[0]) == 0  # all three in later batches than their messages
    dead = read_topic(broker.bootstrap, section["dead_letter_topic"])
    check_dead_letters(dead, topic, [(b, positions[0][i]) for i, b in enumerate(bad)])
    assert all(MISSING not in r.headers for r in dead)


def test_an_unmatched_request_whose_message_is_gone_is_dead_lettered_with_the_reason(
        tmp_path: Path, profiles: Profiles, broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """The records of minute 0 are deleted (AdminClient.delete_records, as retention would) before its lonely
    request expires: its dead letter has the headers, no value, no key, and says why; a warning is logged."""
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "gone")
    create_topics(broker.bootstrap, section)
    topic = section["topics"][0]["topic"]
    request = {k: v for k, v in _good(0, 1, request_id="lonely-request").items() if k not in ("score", "decision")}
    bad = Bad("a request without a response, deleted", b"req", as_json(request), "join", "Unmatched",
              "request without a response within 60s")
    first = [(bad.key, bad.value, 1)] + spread(minute_events(0, 50), as_json)
    later = [spread(minute_events(1, 50), as_json), spread(minute_events(2, 50), as_json)]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with opened(config) as store:
        running = Running(config, store)
        try:
            positions = produce(broker.bootstrap, topic, first)
            running.drain(len(first))
            high, _ = end_offsets(broker.bootstrap, topic)
            for future in admin.delete_records([TopicPartition(topic, p, o) for p, o in high.items()]).values():
                future.result(timeout=30)
            with caplog.at_level("WARNING", logger="driftline.service"):
                for batch in later:
                    produce(broker.bootstrap, topic, batch)
                    running.drain(len(batch))
        finally:
            running.close()
    assert sum(s.report.dead_letters for s in running.steps) == 1
    (dead,) = read_topic(broker.bootstrap, section["dead_letter_topic"])
    assert set(DLQ_HEADERS) <= set(dead.headers)
    partition, offset = positions[0]
    assert dead.headers["driftline.origin"] == f"{topic}[{partition}]@{offset}".encode()
    assert (dead.headers["driftline.stage"], dead.headers["driftline.error.class"]) == (b"join", b"Unmatched")
    assert (dead.value, dead.key) == (None, None)
    assert dead.headers[MISSING].decode() == (f"no longer in the log (deleted by retention or delete_records: "
                                              f"it starts at offset {high[partition]})")
    assert any("without their original message" in r.getMessage() and f"{topic}[{partition}]@{offset}"
               in r.getMessage() for r in caplog.records), caplog.text


def test_a_message_larger_than_the_producer_limit_does_not_stop_the_consumer(tmp_path: Path, profiles: Profiles,
                                                                           broker: KafkaBroker) -> None:
    big_topic = {"max.message.bytes": str(4_000_000)}
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "huge", max_message_bytes=1_048_576)
    create_topics(broker.bootstrap, section, source_config=big_topic)  # the source and the dead-letter topic
    topic = section["topics"][0]["topic"]
    huge = b'{"padding": "' + b"x" * 2_000_000 + b'"}'
    with opened(config) as store:
        running = Running(config, store)
        try:
            produce(broker.bootstrap, topic, [(b"huge", huge, 0)], max_bytes=4_000_000)
            running.drain(1, timeout=30)
            messages = spread(minute_events(0, 10), as_json)
            produce(broker.bootstrap, topic, messages)
            running.drain(len(messages), timeout=30)
        finally:
            running.close()
    high, committed = end_offsets(broker.bootstrap, topic, section["group_id"])
    assert committed == high
    dead = read_topic(broker.bootstrap, section["dead_letter_topic"])
    assert [(r.headers["driftline.error.class"], r.key) for r in dead] == [(b"OversizedMessage", b"huge")]
    assert dead[0].headers["driftline.truncated"] == b"true"
    assert dead[0].headers["driftline.original.bytes"] == str(len(huge)).encode()
    assert dead[0].value == huge[:1_048_576]


def test_an_oversized_message_is_cut_to_fit_a_dead_letter_topic_at_the_default_limit(
        tmp_path: Path, profiles: Profiles, broker: KafkaBroker) -> None:
    """The documented truncation (to kafka.max_message_bytes) left no room for the headers under the
    dead-letter topic's default max.message.bytes: the broker refused it unless the topic had been created
    with a larger limit. Now it is cut to fit the topic."""
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "oversized", max_message_bytes=1_048_576)
    topic = section["topics"][0]["topic"]
    create_topic(broker.bootstrap, topic, 1, config={"max.message.bytes": str(4_000_000)})
    create_topic(broker.bootstrap, section["dead_letter_topic"], PARTITIONS)  # the broker's default limit
    create_topic(broker.bootstrap, section["control_topic"], PARTITIONS)
    huge = b'{"padding": "' + b"x" * 2_000_000 + b'"}'
    with opened(config) as store:
        running = Running(config, store)
        try:
            produce(broker.bootstrap, topic, [(b"huge", huge, 0)], max_bytes=4_000_000)
            running.drain(1, timeout=30)
        finally:
            running.close()
    high, committed = end_offsets(broker.bootstrap, topic, section["group_id"])
    assert committed == high
    (dead,) = read_topic(broker.bootstrap, section["dead_letter_topic"])
    assert (dead.headers["driftline.error.class"], dead.headers["driftline.original.bytes"]) == \
        (b"OversizedMessage", str(len(huge)).encode())
    assert dead.value is not None and huge.startswith(dead.value) and 1_040_000 < len(dead.value) < 1_048_576


def test_a_message_near_the_broker_limit_gets_a_dead_letter_cut_to_fit_the_topic(tmp_path: Path, profiles: Profiles,
                                                                               broker: KafkaBroker) -> None:
    """Issue 9: a 1,048,500-byte message (under Kafka's default message.max.bytes, 1,048,588, and under
    kafka.max_message_bytes, so it is decoded) that is not JSON: its dead letter, value and headers, was over
    the dead-letter topic's limit, the broker refused it, the service stopped, and did so on every restart.
    Now the value is cut so the record fits the topic, the headers keep its size and sha256, and it goes on."""
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "nearlimit", max_message_bytes=1_048_576)
    create_topics(broker.bootstrap, section)  # every topic at the broker's default limit
    topic = section["topics"][0]["topic"]
    big = b"not json " + b"x" * (1_048_500 - 9)
    with opened(config) as store:
        running = Running(config, store)
        try:
            produce(broker.bootstrap, topic, [(b"big", big, 0)], max_bytes=1_100_000)
            running.drain(1, timeout=60)
            messages = spread(minute_events(0, 10), as_json)
            produce(broker.bootstrap, topic, messages)
            running.drain(len(messages), timeout=60)
        finally:
            running.close()
        assert running.service.health.undeliverable_dead_letters == 0
    high, committed = end_offsets(broker.bootstrap, topic, section["group_id"])
    assert committed == high
    (dead,) = read_topic(broker.bootstrap, section["dead_letter_topic"])
    assert (dead.key, dead.headers["driftline.error.class"]) == (b"big", b"JSONDecodeError")
    assert dead.headers["driftline.truncated"] == b"true"
    assert dead.headers["driftline.original.bytes"] == b"1048500"
    assert dead.headers["driftline.original.sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert dead.value is not None and big.startswith(dead.value) and 1_040_000 < len(dead.value) < len(big)


def test_a_dead_letter_the_broker_refuses_is_recorded_and_the_partition_goes_on(tmp_path: Path, profiles: Profiles,
                                                                               broker: KafkaBroker) -> None:
    """A dead-letter topic that is compacted refuses a record without a key (INVALID_RECORD), and the batch
    refused fails every record in it. The refused dead letters are sent again one at a time: the keyed one
    is delivered, the keyless one is refused again and is recorded in undeliverable_dead_letters and the audit
    log, counted on ConsumerLoop.health, and the offsets move past it. Nothing stops."""
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "refused")
    for t in section["topics"]:
        create_topic(broker.bootstrap, t["topic"], PARTITIONS)
    create_topic(broker.bootstrap, section["dead_letter_topic"], 1, config={"cleanup.policy": "compact"})
    create_topic(broker.bootstrap, section["control_topic"], PARTITIONS)
    topic = section["topics"][0]["topic"]
    messages: list[Outgoing] = [(None, b"keyless, not json", 0), (b"keyed", b"keyed, not json", 0),
                                *spread(minute_events(0, 20), as_json)]
    with opened(config) as store:
        running = Running(config, store)
        try:
            positions = produce(broker.bootstrap, topic, messages)
            running.drain(len(messages), timeout=60)
            more = spread(minute_events(1, 20), as_json)
            produce(broker.bootstrap, topic, more)
            running.drain(len(more), timeout=60)
            health = running.service.health
        finally:
            running.close()
        rows = store.query("SELECT origin, source_topic, source_partition, source_offset, stage, error_class, "
                           "value_bytes, value_sha256, key_bytes, delivery_error, dead_letter_topic "
                           "FROM driftline.undeliverable_dead_letters FINAL")[1]
        audit = store.query("SELECT action, subject_id, details FROM driftline.audit_log FINAL "
                            "WHERE action = 'dead_letter.undeliverable'")[1]
        ids = store.query("SELECT dead_letter_id FROM driftline.undeliverable_dead_letters FINAL")[1]
    partition, offset = positions[0]
    assert rows == [(f"{topic}[{partition}]@{offset}", topic, partition, offset, "decode", "JSONDecodeError",
                     len(b"keyless, not json"), hashlib.sha256(b"keyless, not json").hexdigest(), None,
                     "INVALID_RECORD: Broker: Broker failed to validate record", section["dead_letter_topic"])]
    assert [(a[0], a[1]) for a in audit] == [("dead_letter.undeliverable", bytes(ids[0][0]).decode())]
    assert json.loads(audit[0][2])["origin"] == f"{topic}[{partition}]@{offset}"
    assert health.undeliverable_dead_letters == 1 and not health.paused
    high, committed = end_offsets(broker.bootstrap, topic, section["group_id"])
    assert committed == high
    dead = read_topic(broker.bootstrap, section["dead_letter_topic"])
    assert [(r.key, r.value) for r in dead] == [(b"keyed", b"keyed, not json")]


# -- 3. raw Avro ------------------------------------------------------------------------------------------------


def avro_damage() -> list[Bad]:
    value = as_avro(_good(0, 50))
    classes = ("TruncatedAvro", "AvroDecodeError")
    return [
        Bad("one byte short", b"a-0", value[:-1], "decode", classes, "Avro"),
        Bad("half a record", b"a-1", value[: len(value) // 2], "decode", classes, "Avro"),
        Bad("the header only", b"a-2", value[:3], "decode", classes, "Avro"),
        Bad("JSON on the Avro topic", b"a-3", as_json(_good(0, 51)), "decode", classes, ""),
        Bad("a trailing byte", b"a-4", value + b"\x00", "decode", "AvroDecodeError", "bytes left after"),
        # Avro can carry non-finite scores (JSON cannot): bad events naming the score, never in a window
        *[Bad(f"a score of {score}", f"a-{5 + i}".encode(), as_avro(_good(0, 52 + i, score=score)), "validate",
              "InvalidScore", f"score must be a finite number or null, got {score}")
          for i, score in enumerate((math.inf, -math.inf, math.nan))],
    ]


def test_raw_avro_gives_the_same_windows_as_json(tmp_path: Path, profiles: Profiles, broker: KafkaBroker,
                                                 json_run: RunResult) -> None:
    damage = avro_damage()
    extra: list[list[Outgoing]] = [[(b.key, b.value, i % PARTITIONS) for i, b in enumerate(damage)]]
    run = scenario_run(tmp_path, profiles, broker, "avro", "avro", extra=extra)
    print(f"\nAvro scenario: {run.seconds:.1f} s")
    assert run.windows == json_run.windows
    assert run.late == json_run.late == 0
    for table in ("windows", "alerts", "rollback_requests"):
        assert run.rows[table] == json_run.rows[table], table
    assert run.committed == run.high
    # the alerts on the control topic are the same records with the same ids
    assert [(r.key, r.value, r.headers) for r in run.control] == [(r.key, r.value, r.headers)
                                                                   for r in json_run.control]
    # the damaged records are dead letters with their bytes; nothing else is
    topic = run.section["topics"][0]["topic"]
    positions: dict[bytes | None, tuple[int, int]] = {}
    for r in run.dead_letters:
        positions[r.key] = (int(r.headers["driftline.source.partition"]), int(r.headers["driftline.source.offset"]))
        assert r.headers["driftline.source.topic"] == topic.encode()
    assert sorted(positions, key=repr) == sorted((b.key for b in damage), key=repr)
    check_dead_letters(run.dead_letters, topic, [(b, positions[b.key]) for b in damage])
    # and the offsets named really hold those bytes
    source = {(r.partition, r.offset): r.value for r in read_topic(run.config.kafka.bootstrap_servers, topic)}
    assert all(source[positions[b.key]] == b.value for b in damage)


# -- 4. the control topic ---------------------------------------------------------------------------------------

INCIDENT_MINUTES = [(m, 1_000, CREDIT_INCIDENT if 4 <= m <= 6 else Incident()) for m in range(7)] + \
    [(7, 30, Incident())]
"""Four normal minutes, three with income in thousands, a few events to close minute 6's window. 1,000 events
a minute and min_samples 500 (the default): with a few hundred, PSI on the 27 countries is noise over 0.1."""


@dataclass
class Latency:
    window_end: int
    alerts: int
    poll_to_published: float
    """The poll that returned the window-closing batch → the step returned (persisted, published, committed)."""
    published_to_readable: float
    """→ the last of the step's alerts was read from the control topic by another consumer."""
    produced_to_readable: float
    """The closing minute's messages were acknowledged to their producer → readable on the control topic."""


@dataclass
class IncidentRun:
    config: Config
    section: dict[str, Any]
    steps: list[Step]
    control: list[Record]
    control_high: dict[int, int]
    latencies: list[Latency]
    store_alerts: list[tuple[Any, ...]]
    store_rollbacks: list[tuple[Any, ...]]
    events: int


def _ce_id(r: Record) -> str:
    return r.headers["ce_id"].decode()


@pytest.fixture(scope="module")
def incident_run(tmp_path_factory: pytest.TempPathFactory, profiles: Profiles, broker: KafkaBroker) -> IncidentRun:
    root = tmp_path_factory.mktemp("incident")
    config, section = service_config(root, profiles, broker.bootstrap, "incident", min_samples=500)
    create_topics(broker.bootstrap, section)
    topic = section["topics"][0]["topic"]
    reader = TopicReader(broker.bootstrap, section["control_topic"])
    latencies: list[Latency] = []
    produced_at = [0.0]

    def measure(step: Step) -> None:
        alerts = step.report.step.alerts
        if not alerts:
            return
        wanted = {a.alert_id for a in alerts}
        reader.until(lambda records: wanted <= {_ce_id(r) for r in records})
        readable = max(r.read_at for r in reader.records if _ce_id(r) in wanted)
        latencies.append(Latency(max(a.window.end_ms for a in alerts), len(alerts), step.done_at - step.polled_at,
                                 readable - step.done_at, readable - produced_at[0]))

    total = 0
    try:
        with opened(config) as store:
            running = Running(config, store)
            try:
                for minute, n, incident in INCIDENT_MINUTES:
                    # keyed by model: one model's events in order on one partition, so that a replay from the
                    # start sees them in the same order (see the test on spread keys below)
                    messages = [(CREDIT[0].encode(), as_json(r), None) for r in minute_events(minute, n, incident)]
                    # the minute's first event alone, as a trickle of traffic would bring it: it closes the
                    # previous minute's window in a step of one message
                    for part in (messages[:1], messages[1:]):
                        produce(broker.bootstrap, topic, part)
                        produced_at[0] = time.monotonic()
                        running.drain(len(part), after=measure)
                    total += len(messages)
            finally:
                running.close()
            store_alerts = table_rows(store, "alerts")
            store_rollbacks = table_rows(store, "rollback_requests")
        control = reader.all()
        high, _ = end_offsets(broker.bootstrap, section["control_topic"])
    finally:
        reader.close()
    gc.collect()
    return IncidentRun(config, section, running.steps, control, high, latencies, store_alerts, store_rollbacks, total)


def _avro_record(record: Record, schema: Any) -> dict[str, Any]:
    assert record.value is not None
    value = fastavro.schemaless_reader(io.BytesIO(record.value), schema)
    assert isinstance(value, dict)
    return value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)  # FixedString comes back as bytes


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _millis(value: Any) -> int:
    return round(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def test_an_incident_publishes_alerts_and_dry_run_rollbacks_on_the_control_topic(incident_run: IncidentRun) -> None:
    run = incident_run
    alerts = [a for s in run.steps for a in s.report.step.alerts]
    rollbacks = [r for s in run.steps for r in s.report.step.rollbacks]
    assert alerts and rollbacks
    # nothing before the incident; income fires when the second incident window (minute 5) closes
    assert all(a.window.start_ms >= minute_start(4) for a in alerts), [(a.subject, a.window.start_ms) for a in alerts]
    income = [a for a in alerts if a.subject == "income" and a.kind == "firing"]
    assert [(a.window.start_ms, a.severity) for a in income] == [(minute_start(5), "critical")]

    detections = [d for s in run.steps for d in s.report.step.detections]
    assert detections, "the income unit change moves the scores: the change watch fires"
    assert len(run.control) == len(alerts) + len(rollbacks) + len(detections) == sum(run.control_high.values())
    published_detections = {d.detection_id: d for d in detections}
    published_alerts = {a.alert_id: a for a in alerts}
    published_rollbacks = {r.request_id: r for r in rollbacks}
    assert len(published_alerts) == len(alerts) and len(published_rollbacks) == len(rollbacks)
    for record in run.control:
        h = record.headers
        assert record.key == CREDIT[0].encode()
        assert h["ce_specversion"] == b"1.0"
        assert h["ce_source"] == f"/driftline/models/{CREDIT[0]}".encode()
        assert h["content-type"] == b"application/avro"
        if h["ce_type"] == ALERT_TYPE.encode():
            value = _avro_record(record, ALERT_SCHEMA)
            a = published_alerts.pop(_ce_id(record))
            assert value["alert_id"] == a.alert_id == _ce_id(record)
            assert (value["kind"], value["subject"], value["severity"], value["role"]) == \
                (a.kind, a.subject, a.severity, a.role)
            assert (value["model"], value["model_version"]) == CREDIT
            assert value["window_id"] == a.window.window_id == window_id(*CREDIT, a.window.start_ms, a.window.end_ms)
            assert (_millis(value["window_start"]), _millis(value["window_end"])) == (a.window.start_ms,
                                                                                      a.window.end_ms)
            assert [(b["metric"], b["severity"]) for b in value["breaches"]] == \
                [(b.metric, b.severity) for b in a.breaches]
            assert h["ce_subject"] == f"{CREDIT[0]}/{CREDIT[1]}/{a.subject}".encode()
            assert h["ce_dataschema"] == b"/schemas/control_alert.avsc"
            assert h["ce_time"] == _iso(a.window.end_ms).encode()
        elif h["ce_type"] == CHANGE_TYPE.encode():  # an early warning: asks for nothing
            value = _avro_record(record, CHANGE_SCHEMA)
            d = published_detections.pop(_ce_id(record))
            assert value["detection_id"] == d.detection_id and (value["model"], value["model_version"]) == CREDIT
            assert (value["event_index"], value["before_mean"], value["after_mean"]) == \
                (d.index, d.before_mean, d.after_mean)
            assert _millis(value["event_time"]) == d.event_time_ms
            assert h["ce_subject"] == f"{CREDIT[0]}/{CREDIT[1]}/score".encode()
            assert h["ce_dataschema"] == b"/schemas/control_change.avsc"
            assert h["ce_time"] == _iso(d.event_time_ms or 0).encode()  # the detection's event time
        else:
            assert h["ce_type"] == ROLLBACK_TYPE.encode()
            value = _avro_record(record, ROLLBACK_SCHEMA)
            r = published_rollbacks.pop(_ce_id(record))
            assert value["request_id"] == r.request_id == _ce_id(record)
            assert value["alert_id"] == r.alert_id and value["subject"] == r.subject
            assert (value["status"], value["suppressed_by"]) == (r.status, r.suppressed_by)
            assert value["status"] in ("dry_run", "suppressed")  # rollback.dry_run: nothing asks for action
            assert _millis(value["window_end"]) == r.window.end_ms
            assert h["ce_subject"] == f"{CREDIT[0]}/{CREDIT[1]}".encode()
            assert h["ce_dataschema"] == b"/schemas/control_rollback.avsc"
    assert published_alerts == {} and published_rollbacks == {} and published_detections == {}
    statuses = Counter(r.status for r in rollbacks)
    assert statuses["dry_run"] >= 1, statuses
    assert any(r.subject in ("score", "decision", "__dataset__") and r.status == "dry_run" for r in rollbacks)
    # the store holds the same alerts and requests
    assert sorted(_text(row[0]) for row in run.store_alerts) == sorted(a.alert_id for a in alerts)
    assert sorted(_text(row[0]) for row in run.store_rollbacks) == sorted(r.request_id for r in rollbacks)


def test_a_replay_with_a_new_group_publishes_the_same_ce_ids(incident_run: IncidentRun, broker: KafkaBroker) -> None:
    run = incident_run
    first = [(_ce_id(r), r.headers["ce_type"], r.value) for r in run.control]
    config = run.config.model_copy(update={"kafka": run.config.kafka.model_copy(
        update={"group_id": "incident-replay", "batch_size": 500})})
    with opened(config) as store:  # the same store: the replay's inserts are idempotent
        running = Running(config, store)
        try:
            running.drain(run.events)
        finally:
            running.close()
        counts = {t: [int(store.query(f"SELECT count() FROM driftline.{t} {final}")[1][0][0])
                      for final in ("FINAL", "")] for t in ("alerts", "rollback_requests")}
        rows = {t: table_rows(store, t) for t in ("alerts", "rollback_requests")}
    gc.collect()
    # one logical copy (FINAL); the replay's batches are larger, so its inserts are other blocks
    assert {t: c[0] for t, c in counts.items()} == {"alerts": len(run.store_alerts),
                                                    "rollback_requests": len(run.store_rollbacks)}
    assert rows == {"alerts": run.store_alerts, "rollback_requests": run.store_rollbacks}
    control = read_topic(broker.bootstrap, run.section["control_topic"])
    again = [(_ce_id(r), r.headers["ce_type"], r.value) for r in control
             if r.offset >= run.control_high.get(r.partition, 0)]
    assert len(control) == 2 * len(first)
    assert sorted(again) == sorted(first)  # the same records (a step may now close two windows: order differs)
    # per window, alerts first, then rollback requests, in the same order as live
    assert [x for x in again if x[1] == ALERT_TYPE.encode()] == [x for x in first if x[1] == ALERT_TYPE.encode()]


def test_replaying_spread_keys_from_the_start_gives_the_same_windows(tmp_path: Path, json_run: RunResult,
                                                                     broker: KafkaBroker) -> None:
    """The JSON scenario's topic has every minute's events spread over three partitions by request id. Read
    live (minute by minute) that is harmless; a new group reading it from the start must still find the same
    windows and publish the same alert ids."""
    base = json_run.config
    config = base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"group_id": "json-replay", "control_topic": "json-replay.control"}),
        "store": base.store.model_copy(update={"dsn": f"chdb://{tmp_path / 'store'}"})})
    create_topic(broker.bootstrap, "json-replay.control", PARTITIONS)
    with opened(config) as store:
        running = Running(config, store)
        try:
            running.drain(sum(n for _, n, _ in SCENARIO))
        finally:
            running.close()
        windows = windows_of(store)
        late = late_rows(store)
    gc.collect()
    control = read_topic(broker.bootstrap, "json-replay.control")
    assert (windows, late) == (json_run.windows, 0), \
        f"replay windows {windows} ({sum(json_run.windows.values()) - sum(windows.values())} events missing, " \
        f"{late} late_events rows), live: {json_run.windows}"
    assert sorted(_ce_id(r) for r in control) == sorted(_ce_id(r) for r in json_run.control)


# -- 4b. a version switch on the control topic -------------------------------------------------------------------

VERSION_SCHEMA = fastavro.parse_schema(json.loads(schema_text("control_version_change.avsc")))


def test_a_version_switch_is_published_on_the_control_topic(tmp_path: Path, profiles: Profiles,
                                                            broker: KafkaBroker) -> None:
    """credit_scoring version 3 for two minutes, then version 4 (trained to score higher): the service records
    the switch in the store and publishes it (Avro + CloudEvents, ce_id = change_id); version 4's first
    windows are judged against version 3's last window, and what fires says so (baseline previous_version)."""
    shift = Incident(score_shift=1.2)
    v4 = build_profile(credit_applications(np.random.default_rng(404), 20_000, shift), model=CREDIT[0],
                       model_version="4", categorical=CREDIT_CATEGORICAL, score_column="score",
                       decision_column="decision")
    save_profile(v4, tmp_path / "credit-4.json")
    config, section = service_config(tmp_path, profiles, broker.bootstrap, "switch", min_samples=200)
    path = tmp_path / "driftline.yaml"
    data = json.loads(path.read_text())
    data["models"][0]["references"]["4"] = str(tmp_path / "credit-4.json")
    path.write_text(json.dumps(data))
    config = load(path)
    create_topics(broker.bootstrap, section)
    topic = section["topics"][0]["topic"]
    minutes = []
    for minute, n in ((0, 400), (1, 400), (2, 400), (3, 400), (4, 400), (5, 20)):
        version, incident = ("3", Incident()) if minute < 2 else ("4", shift)
        records = [{**r, "model_version": version} for r in minute_events(minute, n, incident, seed=77)]
        minutes.append([(CREDIT[0].encode(), as_json(r), None) for r in records])  # one partition, in order
    with opened(config) as store:
        running = Running(config, store)
        try:
            paced(running, broker.bootstrap, topic, minutes)
        finally:
            running.close()
        stored = store.query("SELECT change_id, kind, from_version, to_version, window_id FROM "
                             "driftline.version_changes FINAL ORDER BY window_end")[1]
    gc.collect()
    changes = [c for s in running.steps for c in s.report.step.version_changes]
    assert [(c.kind, c.from_version, c.to_version, c.window_start_ms) for c in changes] == [
        ("appeared", "3", "4", minute_start(2)), ("disappeared", "3", "4", minute_start(3))]
    assert [tuple(_text(v) for v in row) for row in stored] == [
        (c.change_id, c.kind, c.from_version, c.to_version, c.window_id) for c in changes]
    control = read_topic(broker.bootstrap, section["control_topic"])
    published = [r for r in control if r.headers["ce_type"] == VERSION_CHANGE_TYPE.encode()]
    assert sorted(_ce_id(r) for r in published) == sorted(c.change_id for c in changes)
    for record in published:
        change = next(c for c in changes if c.change_id == _ce_id(record))
        value = _avro_record(record, VERSION_SCHEMA)
        assert record.key == CREDIT[0].encode()
        assert (value["change_id"], value["kind"], value["model"], value["from_version"], value["to_version"],
                value["window_id"]) == (change.change_id, change.kind, CREDIT[0], "3", "4", change.window_id)
        assert _millis(value["window_end"]) == change.window_end_ms
        h = record.headers
        assert h["ce_specversion"] == b"1.0" and h["ce_source"] == f"/driftline/models/{CREDIT[0]}".encode()
        assert h["ce_subject"] == f"{CREDIT[0]}/4".encode()
        assert h["ce_dataschema"] == b"/schemas/control_version_change.avsc"
        assert h["ce_time"] == _iso(change.window_end_ms).encode()
    # the comparison with version 3 fired, and the alert on the control topic says against what
    alerts = [r for r in control if r.headers["ce_type"] == ALERT_TYPE.encode()]
    against = [_avro_record(r, ALERT_SCHEMA) for r in alerts]
    assert any(a["baseline"] == "previous_version" and a["subject"] == "score" and a["kind"] == "firing"
               and a["model_version"] == "4" for a in against), against
    assert not any(r.headers["ce_type"] == ROLLBACK_TYPE.encode() for r in control)
