"""``driftline run``: the Kafka service. Consume a batch, decode, run the pipeline, act, commit.

Delivery order of one batch, as :meth:`Service.step` does it:

1. decode every message; what cannot be decoded or validated becomes a bad event;
2. run the pipeline, which writes windows, late counts, alerts, rollback requests and the audit
   trail to the store (idempotent inserts) before it returns;
3. produce the alerts and rollback requests to the control topic and the bad events to the
   dead-letter topic, then flush the producer and check every record was acknowledged;
4. write a checkpoint to the store: the offsets after this batch and the state they leave (open
   windows, the join's waiting halves, the decisions' history);
5. only then commit the batch's offsets, synchronously.

A restart restores the newest checkpoint and starts each partition at its offsets: a crash before 4
repeats the batch from the previous checkpoint's state (the idempotent store and the deterministic ids
on the control topic absorb the repetition); a crash between 4 and 5 goes on after it. So open windows
survive a crash with nothing lost and nothing counted twice, for one consumer per group.

Each partition keeps its own watermark: a model's windows close when every partition that carries
its events (and every assigned partition nothing has been read from yet) has moved past them, or has
been read to its end. So a backlog handed out one partition at a time gives the same windows as live
traffic.

Not yet done (issue 4 continues): the checkpoint is one state per consumer group, so several consumers
in one group (and their partial windows, to be merged by a second stage) are not supported yet; a
partition that carried a model's events holds that model's watermark while it is not assigned here.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE
from numpy.typing import NDArray

from driftline.config import Config, TopicConfig
from driftline.connectors.avro_events import ColumnarSchema, avro_events
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.codecs import (CONFLUENT_MAGIC, DecodeError, Decoder, RegistryUnavailable, SchemaRegistry,
                                         avro_schema, make_decoder)
from driftline.connectors.inference import MessageView, Record, TensorMapping, kserve_cloudevent, oip_json
from driftline.connectors.oip_protobuf import oip_protobuf
from driftline.connectors.kafka import KafkaSource, Publisher, origin, partition_name
from driftline.events import BadEvent, EventBuilder, Events
from driftline.pipeline import Pipeline, StepResult

log = logging.getLogger("driftline.service")
RETRY_S = 5.0


@dataclass
class BatchReport:
    messages: int
    step: StepResult
    dead_letters: int


class Service:
    def __init__(self, config: Config, store: ClickHouseStore, source: KafkaSource, publisher: Publisher,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.source = source
        self.publisher = publisher
        self.clock = clock
        self.pipeline = Pipeline(config, store)
        registry = SchemaRegistry(config.kafka.schema_registry_url) if config.kafka.schema_registry_url else None
        self.registry = registry
        self.decoders = {t.topic: message_decoder(t, registry) for t in config.kafka.topics}
        self.formats = {t.topic: t.format for t in config.kafka.topics}
        self._columnar = {t.topic: schema for t in config.kafka.topics if t.format == "avro"
                          if (schema := ColumnarSchema.of(avro_schema(t.avro_schema))) is not None}
        self._registry_columnar: dict[int, ColumnarSchema | None] = {}
        self.seq, self.offsets = 0, {}
        self._checkpointed_at = clock()
        self._uncommitted = False
        self._batch_offsets: dict[str, int] = {}
        """The offset after each partition's last message in the batch in hand."""
        checkpoint = store.read_checkpoint(config.kafka.group_id)
        if checkpoint is not None:  # go on where the last run left off: its open windows, its offsets
            self.seq, self.offsets, state = checkpoint
            self.pipeline.restore(state)
            source.start_offsets = dict(self.offsets)

    def step(self) -> BatchReport:
        polled = self.source.poll_batch()
        waiting = self.source.holding  # before this batch's partitions count as read
        messages = [m for m in polled if self.source.saw(m)]  # ends of partitions noted, and dropped
        try:
            events, bad = self._decode(messages)
        except RegistryUnavailable as exc:  # nothing consumed yet: rewind and try the same batch again
            log.warning("%s; retrying the batch in %.0f s", exc, RETRY_S)
            self.source.rewind(messages)
            time.sleep(RETRY_S)
            return BatchReport(0, StepResult(), 0)
        return self._process(messages, events, bad, waiting)

    def _decode(self, messages: list[Any]) -> tuple[Events, list[BadEvent]]:
        """The batch's scoring events in message order, and what could not be used. Avro topics whose
        schema allows it are decoded in one columnar pass (:mod:`driftline.connectors.avro_events`);
        the rest, and whatever that pass leaves, one message at a time."""
        builder = EventBuilder("kafka")
        limit = self.config.kafka.max_message_bytes
        origins: list[str] = []
        sources: list[str] = []
        columnar: dict[ColumnarSchema, list[int]] = {}  # indices of each schema's messages
        one_by_one: list[int] = []
        for index, message in enumerate(messages):
            error = message.error()
            if error is not None:
                log.warning("consumer error: %s", error)
                origins.append("")
                sources.append("")
                continue
            topic, offset = message.topic(), message.offset()
            source = partition_name(topic, message.partition())
            self._batch_offsets[source] = offset + 1  # messages of a partition come in offset order
            sources.append(source)
            where = f"{source}@{offset}"
            origins.append(where)
            value = message.value()
            if value is None:
                builder.reject_at(where, "decode", DecodeError("empty message (a tombstone)", "EmptyMessage"))
            elif len(value) > limit:
                builder.reject_at(where, "decode", DecodeError(f"message of {len(value)} bytes is over the "
                                                               f"{limit}-byte limit", "OversizedMessage"))
            else:
                schema = self.columnar_schema(message.topic(), value)
                if schema is None:
                    one_by_one.append(index)
                else:
                    columnar.setdefault(schema, []).append(index)
        parts: list[Events] = []
        order: list[NDArray[np.intp]] = []
        for schema, indices in columnar.items():
            framing = 5 if self.formats[messages[indices[0]].topic()] == "avro-confluent" else 0
            fast = avro_events([messages[i].value()[framing:] for i in indices], schema.parsed,
                               [origins[i] for i in indices], [sources[i] for i in indices])
            parts.append(fast.events)
            order.append(np.asarray(indices, dtype=np.intp)[fast.rows])
            one_by_one.extend(indices[i] for i in fast.rest.tolist())
        if one_by_one:
            one_by_one.sort()
            slow, rows = self._decode_one_by_one(builder, messages, origins, one_by_one)
            slow.source = np.asarray([sources[i] for i in rows.tolist()], dtype=object)
            parts.append(slow)
            order.append(rows)
        events = Events.concat(parts)
        if len(parts) > 1:  # back into message order: the first of two duplicates is the one kept
            events = events.take(np.argsort(np.concatenate(order), kind="stable"))
        return events, builder.bad

    def _decode_one_by_one(self, builder: EventBuilder, messages: list[Any], origins: list[str],
                           indices: list[int]) -> tuple[Events, NDArray[np.intp]]:
        rows: list[int] = []
        for index in indices:
            message, where = messages[index], origins[index]
            try:
                records = self.decoders[message.topic()](message)
            except DecodeError as exc:
                builder.reject_at(where, "decode", exc)
                continue
            for row, record in enumerate(records):
                if builder.add_at(record, where if len(records) == 1 else f"{where}#{row}"):
                    rows.append(index)
        return builder.build(), np.asarray(rows, dtype=np.intp)

    def columnar_schema(self, topic: str, value: bytes) -> ColumnarSchema | None:
        """The schema to decode this message with in a columnar pass, if its topic and schema allow."""
        fmt = self.formats[topic]
        if fmt == "avro":
            return self._columnar.get(topic)
        if fmt != "avro-confluent" or self.registry is None or len(value) < 5 or value[0] != CONFLUENT_MAGIC:
            return None
        schema_id = int.from_bytes(value[1:5], "big")
        known = self._registry_columnar.get(schema_id, False)
        if known is False:
            try:
                parsed = self.registry.schema(schema_id)
            except DecodeError:  # unknown id: the one-by-one path says so per message
                return None
            known = self._registry_columnar[schema_id] = ColumnarSchema.of(parsed)
        return known

    def _process(self, messages: list[Any], events: Events, bad: list[BadEvent],
                 waiting: tuple[frozenset[str], frozenset[str], frozenset[str]]) -> BatchReport:
        # The partitions to wait for: as they were before the batch (a partition first read in it still
        # holds the watermark while its events are counted), then as they are after it.
        before = self.pipeline.hold(*waiting)
        result = self.pipeline.process(events, bad, now_ms=int(self.clock() * 1000), partitioned=True)
        after = self.pipeline.hold(*self.source.holding)
        for released in (before, after):
            result.reports += released.reports
            result.alerts += released.alerts
            result.rollbacks += released.rollbacks
        for event in result.alerts:
            self.publisher.alert(event)
        for request in result.rollbacks:
            self.publisher.rollback(request)
        if result.bad:
            by_origin = {origin(m.topic(), m.partition(), m.offset()): m for m in messages if m.error() is None}
            for item in result.bad:
                message = by_origin.get(item.origin.split("#", 1)[0])  # (a Message is falsy when empty)
                value, key = (message.value(), message.key()) if message is not None else (None, None)
                self.publisher.dead_letter(item, value, key)
        self.publisher.flush()
        self.offsets.update(self._batch_offsets)
        self._uncommitted |= bool(self._batch_offsets)
        self._batch_offsets = {}
        if self.clock() - self._checkpointed_at >= self.config.kafka.checkpoint_interval / 1000:
            self.checkpoint()
        return BatchReport(len(messages), result, len(result.bad))

    def checkpoint(self) -> None:
        """The offsets consumed so far and the state they leave into the store, then commit the offsets:
        a restart goes on from here. Called every ``kafka.checkpoint_interval`` and when stopping."""
        self._checkpointed_at = self.clock()
        if not self._uncommitted:
            return
        self.seq += 1
        self.store.write_checkpoint(self.config.kafka.group_id, self.seq, self.offsets, self.pipeline.snapshot())
        self.source.commit_offsets(self.offsets)
        self._uncommitted = False

    def run(self, stop: threading.Event, on_batch: Callable[[BatchReport], None] | None = None) -> None:
        """Step until ``stop`` is set; the batch in hand is finished (persisted, published, committed) first."""
        while not stop.is_set():
            report = self.step()
            if on_batch is not None and report.messages:
                on_batch(report)
        self.checkpoint()


MessageDecoder = Callable[[Any], list[dict[str, Any]]]


def message_decoder(topic: TopicConfig, registry: SchemaRegistry | None) -> MessageDecoder:
    """The decoder of one topic's messages: a list of scoring records per message."""
    if topic.format in ("oip-json", "oip-protobuf", "kserve-cloudevents"):
        mapping = TensorMapping(topic.model, topic.model_version, topic.feature_names, topic.score_output,
                                topic.decision_output)
        read = _inference_reader(topic)

        def decode_inference(message: Any) -> list[dict[str, Any]]:
            kind, stamp = message.timestamp()
            view = MessageView(message.value(), message.key(),
                               {k: v for k, v in (message.headers() or []) if v is not None},
                               stamp if kind != TIMESTAMP_NOT_AVAILABLE else None)
            return read(view, mapping)

        return decode_inference
    decode: Decoder = make_decoder(topic.format, registry, topic.avro_schema)
    return lambda message: [decode(message.value())]


def _inference_reader(topic: TopicConfig) -> Callable[[MessageView, TensorMapping], list[Record]]:
    if topic.format == "oip-json":
        return oip_json
    if topic.format == "kserve-cloudevents":
        return kserve_cloudevent
    kind = topic.infer_message or "request"  # the configuration has checked it is known

    def read_protobuf(view: MessageView, mapping: TensorMapping) -> list[Record]:
        return oip_protobuf(view, mapping, kind)

    return read_protobuf


def run_service(config: Config, on_batch: Callable[[BatchReport], None] | None = None) -> None:
    """The ``driftline run`` entry point: SIGTERM and SIGINT finish the current batch, then stop."""
    from driftline.replay import open_store

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    store = open_store(config)
    source = KafkaSource(config.kafka)
    publisher = Publisher(config.kafka)
    try:
        Service(config, store, source, publisher).run(stop, on_batch)
    finally:
        source.close()
        publisher.flush()
        store.close()


def describe(report: BatchReport) -> dict[str, Any]:
    return {"messages": report.messages, "windows": len(report.step.reports), "alerts": len(report.step.alerts),
            "rollback_requests": len(report.step.rollbacks), "dead_letters": report.dead_letters}
