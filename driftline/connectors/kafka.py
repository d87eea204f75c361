"""Kafka I/O on confluent-kafka (librdkafka): the batch consumer, the dead-letter topic, the control topic.

Dead-letter records keep the original bytes as their value and say where they came from and why in
headers: ``driftline.source.topic``, ``driftline.source.partition``, ``driftline.source.offset``,
``driftline.stage`` (decode, validate, join, engine), ``driftline.error.class``,
``driftline.error.reason``, ``driftline.origin``. A value over ``max(kafka.max_message_bytes, ~1 MB)``
is cut to that size (``driftline.truncated: true``, ``driftline.original.bytes``). A bad event whose
message was consumed in an earlier batch (a join half left unmatched, a joined pair that fails
validation) has its message fetched back by offset (:mod:`driftline.connectors.kafka_fetch`); when it
cannot be (retention deleted it, a timeout), the dead letter carries the headers only and
``driftline.payload.missing`` says why.

Control-topic records (docs/control-topic.md) are Avro values (``schemas/control_*.avsc``) with
CloudEvents binary-mode headers (``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``,
``ce_time``, ``ce_subject``, ``content-type``), keyed by model; ``ce_id`` is the deterministic
alert or request id, so a consumer can deduplicate.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from operator import is_not
from datetime import UTC, datetime
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from driftline import __version__
from driftline.config import KafkaConfig
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.errors import DriftlineError
from driftline.events import BadEvent
from driftline.schemas import schema_text

log = logging.getLogger("driftline.kafka")

ALERT_TYPE = "io.driftline.alert.v1"
ROLLBACK_TYPE = "io.driftline.rollback.requested.v1"
CHANGE_TYPE = "io.driftline.change.detected.v1"
DATA_SCHEMAS = {ALERT_TYPE: "control_alert", ROLLBACK_TYPE: "control_rollback", CHANGE_TYPE: "control_change"}
HEADER_ROOM = 65_536
"""Bytes the producer's message size limit leaves for key, headers and framing."""
ORIGIN = re.compile(r"^(?P<topic>.+)\[(?P<partition>\d+)\]@(?P<offset>\d+)(?:#(?P<row>\d+))?$")
"""``topic[partition]@offset``, and ``#row`` when the message held several records."""
MISSING_PAYLOAD = "driftline.payload.missing"
"""Dead-letter header: the original message could not be fetched back, and why."""


TRANSIENT_DELIVERY = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.KAFKA_STORAGE_ERROR, KafkaError.BROKER_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._QUEUE_FULL,
}
"""Delivery errors that a broker restart or a leader change causes: the batch is published again later."""
PRODUCE_QUEUE_WAIT_S = 30.0
"""How long ``produce`` waits for room in a full local queue before the batch counts as not published."""


class PublishError(DriftlineError):
    """The producer could not get every record of a batch acknowledged. ``transient``: the broker was
    unreachable or busy (a restart, a leader change); the batch is published again once it answers.
    Otherwise (a fatal producer error, authorization, a record too large) the service stops."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient
        self.reason = message


def origin(topic: str, partition: int, offset: int) -> str:
    """How a Kafka message is named in bad-event reports: ``topic[partition]@offset``."""
    return f"{partition_name(topic, partition)}@{offset}"


def parse_origin(text: str) -> tuple[str, int, int] | None:
    """``topic[partition]@offset`` (or ``…@offset#row``, a record of a message that held several) →
    (topic, partition, offset) of the message; None for an origin that is not a Kafka message."""
    where = ORIGIN.match(text)
    if where is None:
        return None
    return where["topic"], int(where["partition"]), int(where["offset"])


def partition_name(topic: str, partition: int) -> str:
    return f"{topic}[{partition}]"


@dataclass
class MessageBatch:
    """Messages of one consume call, field by field (no end-of-partition events, no errors)."""

    messages: list[Message]
    values: list[bytes | None]
    topics: list[str]
    sources: list[str]
    """Each message's partition, ``topic[partition]``."""
    offsets: list[int]
    origins: list[str]
    """Each message's ``topic[partition]@offset``, as bad-event reports name it."""

    @classmethod
    def of(cls, messages: list[Message]) -> MessageBatch:
        topics = [m.topic() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        names = {key: partition_name(*key) for key in set(zip(topics, partitions))}
        sources = [names[key] for key in zip(topics, partitions)]
        return cls(messages, [m.value() for m in messages], topics, sources, offsets,
                   [f"{source}@{offset}" for source, offset in zip(sources, offsets)])

    def __len__(self) -> int:
        return len(self.messages)

    def next_offsets(self) -> dict[str, int]:
        """Each partition's offset after its last message here (a partition's messages come in order)."""
        return {name: last + 1 for name, last in dict(zip(self.sources, self.offsets)).items()}

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) → its first offset here."""
        first = dict(zip(reversed(self.sources), reversed(self.offsets)))
        return {split_partition_name(name): offset for name, offset in first.items()}


def split_partition_name(name: str) -> tuple[str, int]:
    """``topic[3]`` → (topic, 3)."""
    topic, _, rest = name.rpartition("[")
    return topic, int(rest.rstrip("]"))


def client_settings(config: KafkaConfig) -> dict[str, Any]:
    return {"bootstrap.servers": config.bootstrap_servers, "client.id": f"driftline-{__version__}", **config.client}


CONSUMER_DEFAULTS = {"fetch.queue.backoff.ms": 50}
"""librdkafka settings driftline changes (``kafka.client`` may set them again). When the local queue of
fetched messages passes its threshold (``queued.max.messages.kbytes``, 64 MB), librdkafka waits
``fetch.queue.backoff.ms`` before fetching again, 1 s by default: a service draining 150 MB/s emptied the
queue in 0.4 s and then waited for the broker, 130k instead of 220k events/s (benchmarks/kafka.py)."""


class KafkaSource:
    """A consumer-group member that hands out batches and commits only what the caller says is safe."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.consumer = Consumer({
            **CONSUMER_DEFAULTS,
            **client_settings(config),
            "group.id": config.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": True,
        })
        self.assigned: set[str] = set()
        """Partitions this member owns, as ``topic[partition]``."""
        self.fresh: set[str] = set()
        """Owned partitions nothing has been read from yet."""
        self.at_end: set[str] = set()
        """Owned partitions read to their end (until their next message)."""
        self.start_offsets: dict[str, int] = {}
        """Where to start each partition when it is assigned (a checkpoint's offsets); else the committed one."""
        self.paused = False
        """Consumption paused (the store or the broker is away): partitions assigned meanwhile stay paused."""
        self.held: set[str] = set()
        """Owned partitions not to be read until :meth:`release` says where to start (``before_assign`` could
        not find out: the store was away). They stay paused, and count as nothing read yet."""
        self.before_assign: Callable[[set[str]], None] | None = None
        """Called with the partitions being assigned before their ``start_offsets`` are read (the two-stage
        service loads their checkpoints there)."""
        self.before_revoke: Callable[[set[str], bool], None] | None = None
        """Called with the partitions being taken away while they are still owned (a last checkpoint), and
        whether they were lost (the session expired: another member may own them already)."""
        self.expected = self._partitions_of([t.topic for t in config.topics])
        """Every partition of the subscribed topics: one this member does not own yet may still deliver
        (after a restart, before the group hands it back), so it holds the watermark."""
        self.consumer.subscribe([t.topic for t in config.topics], on_assign=self._assigned,
                                on_revoke=self._revoked, on_lost=self._lost)

    def _partitions_of(self, topics: list[str]) -> set[str]:
        try:
            metadata = self.consumer.list_topics(timeout=10)
        except KafkaException:
            return set()
        return {partition_name(t, p) for t in topics if t in metadata.topics for p in metadata.topics[t].partitions}

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        names = {partition_name(p.topic, p.partition) for p in partitions}
        self.expected |= names
        if self.before_assign is not None:
            self.before_assign(names)
        for p in partitions:
            start = self.start_offsets.get(partition_name(p.topic, p.partition))
            if start is not None:
                p.offset = start
        consumer.incremental_assign(partitions)
        held = [p for p in partitions if partition_name(p.topic, p.partition) in self.held]
        if self.paused or held:
            consumer.pause(partitions if self.paused else held)
        self.assigned |= names
        self.fresh |= names
        self.at_end -= names

    def _lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._revoked(consumer, partitions, lost=True)

    def _revoked(self, consumer: Any, partitions: list[TopicPartition], lost: bool = False) -> None:
        names = {partition_name(p.topic, p.partition) for p in partitions}
        if self.before_revoke is not None:
            self.before_revoke(names & self.assigned, lost)
        self.held -= names
        self.assigned -= names
        self.fresh -= names
        self.at_end -= names

    def take(self, polled: list[Message]) -> MessageBatch:
        """A consume call's messages, field by field. End-of-partition events note their partition as
        read to its end and are left out, as are consumer errors (logged); every partition a message
        came from counts as read (not fresh, not at its end, unless its end came after its messages)."""
        errors = [m.error() for m in polled]
        if not any(map(is_not, errors, repeat(None))):  # (by identity: a KafkaError cannot be compared with None)
            batch, ended = MessageBatch.of(polled), {}
        else:
            kept: list[Message] = []
            ended = {}  # partition → how many messages came before its end-of-partition event
            for message, error in zip(polled, errors, strict=True):
                if error is None:
                    kept.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ended[partition_name(message.topic(), message.partition())] = len(kept)
                else:
                    log.warning("consumer error: %s", error)
            batch = MessageBatch.of(kept)
        read = set(batch.sources)
        self.at_end -= read
        self.fresh -= read
        for name, before in ended.items():
            if name not in batch.sources[before:]:  # no message of it after its end
                self.at_end.add(name)
                self.fresh.discard(name)
        return batch

    @property
    def holding(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(partitions still to deliver, those nothing was read from yet in this process — owned, or not
        handed to this member yet —, all owned partitions)."""
        active = frozenset(self.assigned - self.at_end)
        unowned = self.expected - self.assigned
        return active, frozenset((self.fresh & active) | unowned), frozenset(self.assigned)

    def poll_batch(self) -> list[Message]:
        """Up to ``batch_size`` messages: what has arrived, at once; when nothing has, the first message
        within ``poll_timeout`` and what came with it. (One blocking ``consume(batch_size, timeout)``
        would wait for a full batch, or the whole timeout, before a window-closing event is seen.)"""
        size = self.config.batch_size
        ready = self.consumer.consume(size, 0)
        if ready:
            return ready
        first = self.consumer.consume(1, self.config.poll_timeout / 1000)
        if not first or size == 1:
            return first
        return first + self.consumer.consume(size - 1, 0)

    def commit_offsets(self, offsets: Mapping[str, int]) -> None:
        """Commit, synchronously, these next offsets (by ``topic[partition]``) of the partitions owned now."""
        owned = [TopicPartition(*split_partition_name(name), offset) for name, offset in offsets.items()
                 if name in self.assigned]
        if owned:
            self.consumer.commit(offsets=owned, asynchronous=False)

    def pause(self) -> None:
        """Stop fetching from every assigned partition (and from those assigned later) until :meth:`resume`.
        Keep calling :meth:`poll_batch`: it returns nothing, but keeps this member in its group."""
        self.paused = True
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)

    def resume(self) -> None:
        """Fetch again from every assigned partition but the held ones."""
        self.paused = False
        assignment = [tp for tp in self.consumer.assignment() if partition_name(tp.topic, tp.partition) not in self.held]
        if assignment:
            self.consumer.resume(assignment)

    def release(self, starts: Mapping[str, int]) -> None:
        """Held partitions whose start is known now: read from there (once consumption is not paused)."""
        names = starts.keys() & self.held
        self.held -= names
        if not names:
            return
        if not self.paused:
            self.consumer.resume([TopicPartition(*split_partition_name(name)) for name in sorted(names)])
        self.seek({split_partition_name(name): starts[name] for name in names})

    def seek(self, positions: dict[tuple[str, int], int]) -> None:
        """Go back to ``positions`` ((topic, partition) → offset) to consume from there again; those
        partitions count as not read yet in this process (they hold every model's watermark until read).
        Positions of partitions not assigned here any more are left to the group (and to start_offsets)."""
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in sorted(positions.items()):
            if (topic, partition) not in owned:
                continue
            self.consumer.seek(TopicPartition(topic, partition, offset))
            name = partition_name(topic, partition)
            self.at_end.discard(name)
            self.fresh.add(name)

    def close(self) -> None:
        self.consumer.close()


class Publisher:
    """Dead letters and control events through one idempotent producer."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.dead_letter_cap = max(config.max_message_bytes, 1_000_000 - HEADER_ROOM)
        """The largest value a dead letter keeps (the original bytes whenever the producer can send them)."""
        self.producer = Producer({**client_settings(config), "enable.idempotence": True, "linger.ms": 5,
                                  "message.max.bytes": self.dead_letter_cap + HEADER_ROOM})
        self._alert_schema = fastavro.parse_schema(json.loads(schema_text("control_alert.avsc")))
        self._rollback_schema = fastavro.parse_schema(json.loads(schema_text("control_rollback.avsc")))
        self._change_schema = fastavro.parse_schema(json.loads(schema_text("control_change.avsc")))
        self._errors: list[KafkaError] = []

    def dead_letter(self, bad: BadEvent, payload: bytes | None = None, key: bytes | None = None,
                    missing: str | None = None) -> None:
        """``bad`` with its original message's value and key; ``missing``: why they could not be had."""
        where = ORIGIN.match(bad.origin)
        headers = [
            ("driftline.stage", bad.stage.encode()),
            ("driftline.error.class", bad.error_class.encode()),
            ("driftline.error.reason", bad.reason[:1000].encode()),
            ("driftline.origin", bad.origin.encode()),
        ]
        if where is not None:
            headers += [("driftline.source.topic", where["topic"].encode()),
                        ("driftline.source.partition", where["partition"].encode()),
                        ("driftline.source.offset", where["offset"].encode())]
        if missing is not None:
            headers.append((MISSING_PAYLOAD, missing[:1000].encode()))
        value = payload if payload is not None else bad.payload
        limit = self.dead_letter_cap
        if value is not None and len(value) > limit:  # keep what fits; the source offset locates the rest
            headers += [("driftline.truncated", b"true"), ("driftline.original.bytes", str(len(value)).encode())]
            value = value[:limit]
        self._produce(self.config.dead_letter_topic, value, key, headers)

    def alert(self, event: AlertEvent) -> None:
        w = event.window
        record = {"alert_id": event.alert_id, "kind": event.kind, "model": w.model, "model_version": w.model_version,
                  "subject": event.subject, "role": event.role, "severity": event.severity,
                  "window_id": w.window_id, "window_start": w.start_ms, "window_end": w.end_ms,
                  "reference_hash": w.reference_hash,
                  "breaches": [{"metric": b.metric, "value": b.value, "threshold": b.threshold,
                                "severity": b.severity} for b in event.breaches]}
        self._produce(self.config.control_topic, _avro(self._alert_schema, record), w.model.encode(),
                      _cloudevent(ALERT_TYPE, event.alert_id, w.model, f"{w.model}/{w.model_version}/{event.subject}",
                                  w.end_ms))

    def rollback(self, request: RollbackRequest) -> None:
        w = request.window
        record = {"request_id": request.request_id, "model": request.model, "model_version": request.model_version,
                  "alert_id": request.alert_id, "subject": request.subject, "severity": request.severity,
                  "status": request.status, "suppressed_by": request.suppressed_by, "window_id": w.window_id,
                  "window_end": w.end_ms, "reference_hash": w.reference_hash}
        self._produce(self.config.control_topic, _avro(self._rollback_schema, record), request.model.encode(),
                      _cloudevent(ROLLBACK_TYPE, request.request_id, request.model,
                                  f"{request.model}/{request.model_version}", w.end_ms))

    def change(self, detection: ChangeDetection) -> None:
        """An early warning of the score change watch (it asks for nothing)."""
        d = detection
        record = {"detection_id": d.detection_id, "model": d.model, "model_version": d.model_version,
                  "detector": d.detector, "event_time": d.event_time_ms or 0, "event_index": d.index,
                  "change_index": d.change_index, "before_mean": d.before_mean, "after_mean": d.after_mean,
                  "before_count": d.before_count, "after_count": d.after_count, "bound": d.bound,
                  "reference_hash": d.reference_hash}
        self._produce(self.config.control_topic, _avro(self._change_schema, record), d.model.encode(),
                      _cloudevent(CHANGE_TYPE, d.detection_id, d.model, f"{d.model}/{d.model_version}/score",
                                  d.event_time_ms or 0))

    def partial(self, key: bytes, value: bytes) -> None:
        """A partials record (two-stage service: :mod:`driftline.stage`) to ``kafka.partials_topic``."""
        self._produce(self.config.partials_topic, value, key, [])

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every record is acknowledged; raise :class:`PublishError` if any was not (the caller
        must not commit). Records still queued stay queued: the producer keeps trying them (so a repeated
        batch may publish a record twice; its ce_id is deterministic)."""
        remaining = self.producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining or errors:
            fatal = [e for e in errors if e.fatal() or e.code() not in TRANSIENT_DELIVERY]
            raise PublishError(f"{remaining} records unacknowledged after {timeout_s:g} s, {len(errors)} failed: "
                               f"{[str(e) for e in errors[:3]]}", transient=not fatal)

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        deadline = time.monotonic() + PRODUCE_QUEUE_WAIT_S
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: serve delivery callbacks, then retry
                if time.monotonic() > deadline:  # the broker is away: the batch is published again later
                    raise PublishError(f"the producer queue stayed full for {PRODUCE_QUEUE_WAIT_S:g} s",
                                       transient=True) from None
                self.producer.poll(0.5)
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                transient = error is not None and not error.fatal() and (error.retriable()
                                                                         or error.code() in TRANSIENT_DELIVERY)
                raise PublishError(f"produce to {topic} failed: {exc}", transient=transient) from exc

    def _delivered(self, error: Any, message: Message) -> None:
        if error is not None:
            self._errors.append(error)


def _avro(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def _cloudevent(kind: str, event_id: str, model: str, subject: str, time_ms: int) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", f"/driftline/models/{model}".encode()),
        ("ce_type", kind.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z").encode()),
        ("content-type", b"application/avro"),
        ("ce_dataschema", f"/schemas/{DATA_SCHEMAS[kind]}.avsc".encode()),
    ]
