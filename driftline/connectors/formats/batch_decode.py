"""A batch of Kafka messages → scoring events, and the bad events of what cannot be used: every format of
docs/events.md (raw or Confluent-framed Avro a batch at a time, JSON, the inference protocols' JSON and
protobuf, KServe CloudEvents one message at a time). No side effects: the offsets are the caller's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE
from numpy.typing import NDArray

from driftline.config import AvroTopic, InferenceTopic, KafkaConfig, OipProtobufTopic, TopicConfig
from driftline.connectors.formats.avro_events import ColumnarSchema, avro_events
from driftline.connectors.formats.codecs import (CONFLUENT_MAGIC, DecodeError, Decoder, SchemaRegistry, avro_schema,
                                         make_decoder)
from driftline.connectors.formats.inference import MessageView, Record, TensorMapping, kserve_cloudevent, oip_json
from driftline.connectors.formats.oip_protobuf import oip_protobuf
from driftline.connectors.messages import MessageBatch
from driftline.events import BadEvent, EventBuilder, Events, Source


class BatchDecoder:
    """The decoders of the consumed topics (and the schema registry's schemas, cached by id)."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        registry = SchemaRegistry(config.schema_registry_url) if config.schema_registry_url else None
        self.registry = registry
        self.decoders = {t.topic: message_decoder(t, registry) for t in config.topics}
        self.formats = {t.topic: t.format for t in config.topics}
        self.sources = tuple(Source(t.topic) for t in config.topics)
        """What the events' positions name: the consumed topics, in the configuration's order."""
        self._index = {t.topic: i for i, t in enumerate(config.topics)}
        self._columnar = {t.topic: schema for t in config.topics if isinstance(t, AvroTopic)
                          if (schema := ColumnarSchema.of(avro_schema(t.avro_schema))) is not None}
        self._registry_columnar: dict[int, ColumnarSchema | None] = {}

    def decode(self, batch: MessageBatch) -> tuple[Events, list[BadEvent]]:
        """The batch's scoring events in message order, and what could not be used. Avro topics whose
        schema allows it are decoded in one columnar pass (:mod:`driftline.connectors.formats.avro_events`);
        the rest, and whatever that pass leaves, one message at a time."""
        builder = EventBuilder(self.sources)
        at = batch.positions(self._index)
        usable = self._usable(batch, builder, at)
        columnar: dict[ColumnarSchema, list[int]] = {}  # indices of each schema's messages
        one_by_one: list[int] = []
        topic = batch.topics[0] if batch.topics and batch.topics.count(batch.topics[0]) == len(batch) else None
        if topic in self._columnar:  # one raw Avro topic: the common case, no look at each message
            columnar[self._columnar[topic]] = usable  # type: ignore[index]
        else:
            for index in usable:
                schema = self.columnar_schema(batch.topics[index], batch.values[index])  # type: ignore[arg-type]
                (one_by_one if schema is None else columnar.setdefault(schema, [])).append(index)
        parts: list[Events] = []
        order: list[NDArray[np.intp]] = []
        for schema, indices in columnar.items():
            every = len(indices) == len(batch)
            values = batch.values if every else [batch.values[i] for i in indices]
            sources = batch.sources if every else [batch.sources[i] for i in indices]
            if self.formats[batch.topics[indices[0]]] == "avro-confluent":
                values = [value[5:] for value in values]  # past the magic byte and the schema id
            fast = avro_events(values, schema.parsed, at if every else at[indices], self.sources,  # type: ignore[arg-type]
                               sources)
            parts.append(fast.events)
            order.append(np.asarray(indices, dtype=np.intp)[fast.rows])
            one_by_one.extend(indices[i] for i in fast.rest.tolist())
        if one_by_one:
            one_by_one.sort()
            slow, rows = self._decode_one_by_one(builder, batch, one_by_one, at)
            slow.source = np.asarray([batch.sources[i] for i in rows.tolist()], dtype=object)
            parts.append(slow)
            order.append(rows)
        events = Events.concat(parts)
        if len(parts) > 1:  # back into message order: the first of two duplicates is the one kept
            events = events.take(np.argsort(np.concatenate(order), kind="stable"))
        return events, builder.bad

    def _usable(self, batch: MessageBatch, builder: EventBuilder, at: NDArray[np.void]) -> list[int]:
        """Indices of the messages worth decoding; tombstones and oversized messages are rejected."""
        limit = self.config.max_message_bytes
        if None not in batch.values and max(map(len, batch.values), default=0) <= limit:  # type: ignore[arg-type]
            return list(range(len(batch)))
        usable = []
        for index, (value, where) in enumerate(zip(batch.values, at.tolist(), strict=True)):
            if value is None:
                builder.reject(where, "decode", DecodeError("empty message (a tombstone)", "EmptyMessage"))
            elif len(value) > limit:
                builder.reject(where, "decode", DecodeError(f"message of {len(value)} bytes is over the "
                                                            f"{limit}-byte limit", "OversizedMessage"))
            else:
                usable.append(index)
        return usable

    def _decode_one_by_one(self, builder: EventBuilder, batch: MessageBatch, indices: list[int],
                           at: NDArray[np.void]) -> tuple[Events, NDArray[np.intp]]:
        rows: list[int] = []
        for index in indices:
            message, where = batch.messages[index], at[index].tolist()
            try:
                records = self.decoders[message.topic()](message)
            except DecodeError as exc:
                builder.reject(where, "decode", exc)
                continue
            for row, record in enumerate(records):
                if builder.add(record, where if len(records) == 1 else (*where[:3], row)):
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


MessageDecoder = Callable[[Any], list[dict[str, Any]]]


def message_decoder(topic: TopicConfig, registry: SchemaRegistry | None) -> MessageDecoder:
    """The decoder of one topic's messages: a list of scoring records per message."""
    if isinstance(topic, (InferenceTopic, OipProtobufTopic)):
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
    decode: Decoder = make_decoder(topic.format, registry,
                                   topic.avro_schema if isinstance(topic, AvroTopic) else "scoring_event.avsc")
    return lambda message: [decode(message.value())]


def _inference_reader(topic: InferenceTopic | OipProtobufTopic) -> Callable[[MessageView, TensorMapping], list[Record]]:
    if isinstance(topic, InferenceTopic):
        return oip_json if topic.format == "oip-json" else kserve_cloudevent
    kind = topic.infer_message or "request"  # the configuration has checked it is known

    def read_protobuf(view: MessageView, mapping: TensorMapping) -> list[Record]:
        return oip_protobuf(view, mapping, kind)

    return read_protobuf
