"""Kafka producing on confluent-kafka (librdkafka): the dead-letter topic, the control topic, the partials topic.

:class:`Publisher` sends dead letters (cut to fit, refused ones kept in :attr:`Publisher.undeliverable`)
and control-topic records (Avro values, CloudEvents headers): docs/control-topic.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import fastavro
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from driftline.config import KafkaConfig
from driftline.connectors.kafka.admin import KAFKA_DEFAULT_MAX_MESSAGE_BYTES, admin_client, topic_limits, written_topics
from driftline.connectors.kafka.log import client_settings
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.engine.versions import VersionChange
from driftline.errors import DriftlineError
from driftline.events import BadEvent
from driftline.schemas import schema_text

log = logging.getLogger("driftline.kafka")

ALERT_TYPE = "io.driftline.alert.v1"
ROLLBACK_TYPE = "io.driftline.rollback.requested.v1"
VERSION_CHANGE_TYPE = "io.driftline.version.changed.v1"
CHANGE_TYPE = "io.driftline.change.detected.v1"
DATASCHEMAS = {ALERT_TYPE: "control_alert.avsc", ROLLBACK_TYPE: "control_rollback.avsc",
               VERSION_CHANGE_TYPE: "control_version_change.avsc", CHANGE_TYPE: "control_change.avsc"}
HEADER_ROOM = 65_536
"""Bytes the producer's message size limit leaves for key, headers and framing."""
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
REFUSED_RECORD = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
                  KafkaError.INVALID_MSG, KafkaError.INVALID_TIMESTAMP}
"""Delivery errors that refuse a record for what it is (its size, a null key on a compacted topic, …), not
because of the broker's state: a dead letter refused so is retried once alone, then recorded as undeliverable.
(A refused batch fails every record in it: the others are delivered on the retry.)"""
RECORD_OVERHEAD = 61 + 36
"""Bytes a record batch holding one record takes besides the key, value and headers: the v2 batch header
(61) and the record's own fields at their largest varints (36)."""
HEADER_OVERHEAD = 10
"""Bytes of a record header besides its key and value (two varints at their largest)."""
SIZE_MARGIN = 512
"""Bytes left free under a topic's ``max.message.bytes`` when a dead letter is sized."""
PRODUCER_BATCH_BYTES = 1_000_000
"""librdkafka's default ``batch.size``: lowered to the smallest written topic's limit (less SIZE_MARGIN)."""
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



@dataclass(frozen=True)
class Undeliverable:
    """A dead letter the broker refused twice for what it is (or too large to fit even without its value)."""

    bad: BadEvent
    topic: str
    value_bytes: int | None
    """The original value's size (None: no value)."""
    value_sha256: str
    """Hex sha256 of the original value ('' when there is none)."""
    key_bytes: int | None
    error: str
    """The broker's (or the client's) refusal, e.g. ``MSG_SIZE_TOO_LARGE: Broker: Message size too large``."""
    limit: int
    """The topic's ``max.message.bytes`` the dead letter was sized for."""
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    """Where its message is (``""``, -1, -1 when it is not a Kafka message)."""


@dataclass
class _DeadLetter:
    """A dead letter as asked for, kept until the broker has acknowledged it (so it can be sized again)."""

    bad: BadEvent
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of the bytes a record batch holding only this record takes (Kafka's v2 format)."""
    return (RECORD_OVERHEAD + len(key or b"") + len(value or b"")
            + sum(HEADER_OVERHEAD + len(name.encode()) + len(data) for name, data in headers))


def fit_dead_letter(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], limit: int,
                    cap: int) -> tuple[bytes | None, list[tuple[str, bytes]]] | None:
    """The value and headers of a dead letter that fits a topic taking records of ``limit`` bytes
    (``max.message.bytes``) with :data:`SIZE_MARGIN` to spare, the value at most ``cap`` bytes: the value is
    cut when needed, and the headers then say so, with the original's size and sha256. None when even no
    value would fit (the key and headers are too large)."""
    room = limit - SIZE_MARGIN
    if value is None or (len(value) <= cap and record_size(key, value, headers) <= room):
        return (value, headers) if record_size(key, value, headers) <= room else None
    headers = headers + [("driftline.truncated", b"true"), ("driftline.original.bytes", str(len(value)).encode()),
                         ("driftline.original.sha256", hashlib.sha256(value).hexdigest().encode())]
    keep = min(cap, room - record_size(key, b"", headers))
    return (value[:keep], headers) if keep >= 0 else None


class Publisher:
    """Dead letters and control events through one idempotent producer.

    ``limits``: the ``max.message.bytes`` of the topics it writes (:func:`~driftline.connectors.kafka.admin.
    check_topics` reads them at start); read here when not given. The producer's ``batch.size`` is kept under
    the smallest, so that one refused record does not take others of its batch down with it."""

    def __init__(self, config: KafkaConfig, limits: Mapping[str, int] | None = None) -> None:
        self.config = config
        self.dead_letter_cap = max(config.max_message_bytes, 1_000_000 - HEADER_ROOM)
        """The largest value a dead letter keeps (the original bytes whenever the topic takes them)."""
        self.message_max_bytes = self.dead_letter_cap + HEADER_ROOM
        """The producer's ``message.max.bytes``."""
        self.limits = dict(limits) if limits is not None else _read_limits(config)
        batch = min([PRODUCER_BATCH_BYTES, *(limit - SIZE_MARGIN for limit in self.limits.values())])
        self.producer = Producer({**client_settings(config), "enable.idempotence": True, "linger.ms": 5,
                                  "message.max.bytes": self.message_max_bytes,
                                  "batch.size": config.client.get("batch.size", max(batch, 1))})
        self._alert_schema = fastavro.parse_schema(json.loads(schema_text("control_alert.avsc")))
        self._rollback_schema = fastavro.parse_schema(json.loads(schema_text("control_rollback.avsc")))
        self._version_schema = fastavro.parse_schema(json.loads(schema_text("control_version_change.avsc")))
        self._change_schema = fastavro.parse_schema(json.loads(schema_text("control_change.avsc")))
        self._errors: list[KafkaError] = []
        self._refused: list[tuple[_DeadLetter, KafkaError]] = []
        """Dead letters of this batch the broker refused for what they are (:data:`REFUSED_RECORD`)."""
        self.undeliverable: list[Undeliverable] = []
        """Dead letters given up on since the service last took them (:meth:`take_undeliverable`)."""

    def dead_letter_limit(self) -> int:
        """The record size a dead letter must fit: the topic's ``max.message.bytes`` and the producer's own."""
        return min(self.limits.get(self.config.dead_letter_topic, KAFKA_DEFAULT_MAX_MESSAGE_BYTES),
                   self.message_max_bytes)

    def dead_letter(self, bad: BadEvent, payload: bytes | None = None, key: bytes | None = None,
                    missing: str | None = None) -> None:
        """``bad`` with its original message's value and key; ``missing``: why they could not be had."""
        message = bad.at.message if bad.at is not None else None
        headers = [
            ("driftline.stage", bad.stage.encode()),
            ("driftline.error.class", bad.error_class.encode()),
            ("driftline.error.reason", bad.reason[:1000].encode()),
            ("driftline.origin", bad.origin.encode()),
        ]
        if message is not None:
            topic, partition, offset = message
            headers += [("driftline.source.topic", topic.encode()),
                        ("driftline.source.partition", str(partition).encode()),
                        ("driftline.source.offset", str(offset).encode())]
        if missing is not None:
            headers.append((MISSING_PAYLOAD, missing[:1000].encode()))
        value = payload if payload is not None else bad.payload
        self._send_dead_letter(_DeadLetter(bad, value, key, headers))

    def _send_dead_letter(self, letter: _DeadLetter) -> bool:
        """Produce ``letter`` sized to the topic's limit; False when it cannot fit (then undeliverable)."""
        limit = self.dead_letter_limit()
        fitted = fit_dead_letter(letter.value, letter.key, letter.headers, limit, self.dead_letter_cap)
        if fitted is None:
            self._give_up(letter, f"the key ({len(letter.key or b'')} bytes) and headers alone do not fit the "
                                  f"topic's max.message.bytes ({limit})")
            return False
        value, headers = fitted

        def delivered(error: Any, message: Message) -> None:
            if error is not None and not error.fatal() and error.code() in REFUSED_RECORD:
                self._refused.append((letter, error))
            elif error is not None:
                self._errors.append(error)

        try:
            self._produce(self.config.dead_letter_topic, value, letter.key, headers, delivered)
        except PublishError as exc:
            cause = exc.__cause__
            error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
            if isinstance(error, KafkaError) and not error.fatal() and error.code() in REFUSED_RECORD:
                self._give_up(letter, _describe(error))  # refused by the client itself (its message.max.bytes)
                return False
            raise
        return True

    def _give_up(self, letter: _DeadLetter, error: str) -> None:
        value = letter.value
        source = (letter.bad.at.message if letter.bad.at is not None else None) or ("", -1, -1)
        self.undeliverable.append(Undeliverable(
            letter.bad, self.config.dead_letter_topic, None if value is None else len(value),
            "" if value is None else hashlib.sha256(value).hexdigest(),
            None if letter.key is None else len(letter.key), error, self.dead_letter_limit(), *source))
        log.error("dead letter of %s (%s) is undeliverable to %s: %s; recorded in the store instead, and the "
                  "partition goes on", letter.bad.origin, letter.bad.error_class, self.config.dead_letter_topic, error)

    def take_undeliverable(self) -> list[Undeliverable]:
        """The dead letters given up on since the last call (the service records them)."""
        out, self.undeliverable = self.undeliverable, []
        return out

    def alert(self, event: AlertEvent) -> None:
        w = event.window
        record = {"alert_id": event.alert_id, "kind": event.kind, "model": w.model, "model_version": w.model_version,
                  "subject": event.subject, "role": event.role, "severity": event.severity,
                  "window_id": w.window_id, "window_start": w.start_ms, "window_end": w.end_ms,
                  "reference_hash": w.reference_hash,
                  "breaches": [{"metric": b.metric, "value": b.value, "threshold": b.threshold,
                                "severity": b.severity} for b in event.breaches],
                  "baseline": event.baseline}
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

    def version_change(self, change: VersionChange) -> None:
        record = {"change_id": change.change_id, "kind": change.kind, "model": change.model,
                  "from_version": change.from_version, "to_version": change.to_version, "window_id": change.window_id,
                  "window_start": change.window_start_ms, "window_end": change.window_end_ms,
                  "last_seen": change.last_seen_ms, "reference_hash": change.reference_hash}
        self._produce(self.config.control_topic, _avro(self._version_schema, record), change.model.encode(),
                      _cloudevent(VERSION_CHANGE_TYPE, change.change_id, change.model,
                                  f"{change.model}/{change.to_version}", change.window_end_ms))

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
        batch may publish a record twice; its ce_id is deterministic). Dead letters refused for what they are
        are sent again one at a time, sized to the topic's limit read again; refused again, they are
        :attr:`undeliverable`, and the flush succeeds."""
        remaining = self.producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        refused, self._refused = self._refused, []
        if remaining or errors:
            self.undeliverable = []  # the batch is redone: its dead letters are sent (and judged) again
            fatal = [e for e in errors if e.fatal() or e.code() not in TRANSIENT_DELIVERY]
            raise PublishError(f"{remaining} records unacknowledged after {timeout_s:g} s, {len(errors)} failed: "
                               f"{[str(e) for e in errors[:3]]}", transient=not fatal)
        if refused:
            self._retry_refused(refused, timeout_s)

    def _retry_refused(self, refused: list[tuple[_DeadLetter, KafkaError]], timeout_s: float) -> None:
        """Each refused dead letter again, alone (a batch refused for one record fails all of it), after
        reading the topic's limit again (it may have been lowered since the start)."""
        log.warning("%d dead letters refused by the broker (%s); sending them again one at a time", len(refused),
                    _describe(refused[0][1]))
        self.limits.update(_read_limits(self.config, [self.config.dead_letter_topic]))
        for letter, _ in refused:
            if not self._send_dead_letter(letter):
                continue
            remaining = self.producer.flush(timeout_s)
            errors, self._errors = self._errors, []
            again, self._refused = self._refused, []
            if remaining or errors:
                self.undeliverable = []
                fatal = [e for e in errors if e.fatal() or e.code() not in TRANSIENT_DELIVERY]
                raise PublishError(f"{remaining} records unacknowledged after {timeout_s:g} s, {len(errors)} "
                                   f"failed: {[str(e) for e in errors[:3]]}", transient=not fatal)
            for letter_again, error in again:
                self._give_up(letter_again, _describe(error))

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]],
                 on_delivery: Callable[[Any, Message], None] | None = None) -> None:
        deadline = time.monotonic() + PRODUCE_QUEUE_WAIT_S
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers,
                                      on_delivery=on_delivery or self._delivered)
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


def _describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"


def _read_limits(config: KafkaConfig, topics: list[str] | None = None) -> dict[str, int]:
    """``max.message.bytes`` of the topics the producer writes (those it cannot read are left out)."""
    try:
        return topic_limits(admin_client(config), topics if topics is not None else written_topics(config))
    except KafkaException as exc:
        log.warning("cannot read the topics' max.message.bytes (%s): assuming Kafka's default", exc)
        return {}


def _avro(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def _cloudevent(kind: str, event_id: str, model: str, subject: str, time_ms: int) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", f"/driftline/models/{quote(model, safe='')}".encode()),  # a URI-reference (RFC 3986)
        ("ce_type", kind.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z").encode()),
        ("content-type", b"application/avro"),
        ("ce_dataschema", f"/schemas/{DATASCHEMAS[kind]}".encode()),
    ]
