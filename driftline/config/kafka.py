"""The kafka section: the consumed topics (one model per format, discriminated on ``format``), the topics
driftline writes, the consumer group and the service's timing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from driftline.config.base import DurationMs, Strict


INFERENCE_FORMATS = ("oip-json", "oip-protobuf", "kserve-cloudevents")
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "avro_schema": ("avro",), "oip_message": ("oip-protobuf",),
    **{name: INFERENCE_FORMATS for name in ("model", "model_version", "feature_names", "score_output",
                                            "decision_output")},
}
"""The topic fields that apply to some formats only."""
FORMAT_DEFAULTS: dict[str, Any] = {"avro_schema": "scoring_event.avsc", "oip_message": None, "model": None,
                                   "model_version": None, "feature_names": [], "score_output": None,
                                   "decision_output": None}


class _Topic(Strict):
    topic: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")

    @model_validator(mode="before")
    @classmethod
    def _fields_of_its_format(cls, data: Any) -> Any:
        """A field given a value for a format it does not apply to is a mistake (a format changed, a
        copy-paste), named as such; at its default it is dropped (a configuration written out whole by an
        older release, every field in it)."""
        if not isinstance(data, dict):
            return data
        kind = data.get("format", "json")
        for name, formats in sorted(FORMAT_FIELDS.items()):
            if name not in data or kind in formats:
                continue
            value = data[name]
            if value != FORMAT_DEFAULTS[name] and not (name == "feature_names" and value == ()):
                raise ValueError(f"topic {data.get('topic')!r}: {name} does not apply to format {kind!r} "
                                 f"(only to {', '.join(formats)})")
            data = {k: v for k, v in data.items() if k != name}
        return data


class JsonTopic(_Topic):
    """Scoring events as JSON objects (docs/events.md)."""

    format: Literal["json"] = "json"


class AvroTopic(_Topic):
    """Raw Avro, one record per message, in one of driftline's schemas."""

    format: Literal["avro"]
    avro_schema: Literal["scoring_event.avsc", "scoring_request.avsc", "scoring_response.avsc"] = "scoring_event.avsc"
    """Which of driftline's schemas the topic carries."""


class ConfluentAvroTopic(_Topic):
    """Avro framed for the Confluent schema registry (``kafka.schema_registry_url``)."""

    format: Literal["avro-confluent"]


class _InferenceFields(_Topic):
    model: str | None = None
    """The model (else the body's ``model_name`` / KServe's service name)."""
    model_version: str | None = None
    """The version (else the body's ``model_version``)."""
    feature_names: tuple[str, ...] = ()
    """For one [N, F] input tensor (or V1 list rows): the names of its F columns, in order."""
    score_output: str | None = None
    """The output tensor that holds the score (default: the first output)."""
    decision_output: str | None = None


class InferenceTopic(_InferenceFields):
    """Inference payloads as JSON: the Open Inference Protocol's, or KServe's CloudEvents."""

    format: Literal["oip-json", "kserve-cloudevents"]


class OipProtobufTopic(_InferenceFields):
    """The Open Inference Protocol's protobuf messages (Seldon's ``….inputs`` / ``….outputs`` topics)."""

    format: Literal["oip-protobuf"]
    oip_message: Literal["request", "response"] | None = None
    """Whether the topic carries ``ModelInferRequest`` or ``ModelInferResponse`` messages; by default from
    the topic's name, as Seldon names them (``….inputs`` / ``….outputs``)."""

    @model_validator(mode="after")
    def _oip_message_known(self) -> OipProtobufTopic:
        if self.infer_message is None:
            raise ValueError(f"topic {self.topic!r}: set oip_message (request or response); the name does not end "
                             "in .inputs or .outputs")
        return self

    @property
    def infer_message(self) -> Literal["request", "response"] | None:
        """``oip_message``, else what the Seldon topic name says."""
        if self.oip_message is not None:
            return self.oip_message
        suffix = self.topic.rsplit(".", 1)[-1]
        return "request" if suffix == "inputs" else "response" if suffix == "outputs" else None


_TAGS = {"json": "json", "avro": "avro", "avro-confluent": "avro-confluent", "oip-json": "inference",
         "kserve-cloudevents": "inference", "oip-protobuf": "oip-protobuf"}


def _format_tag(value: Any) -> str | None:
    kind = value.get("format", "json") if isinstance(value, dict) else getattr(value, "format", None)
    return _TAGS.get(kind) if isinstance(kind, str) else None


TopicConfig = Annotated[
    Annotated[JsonTopic, Tag("json")] | Annotated[AvroTopic, Tag("avro")]
    | Annotated[ConfluentAvroTopic, Tag("avro-confluent")] | Annotated[InferenceTopic, Tag("inference")]
    | Annotated[OipProtobufTopic, Tag("oip-protobuf")],
    Discriminator(_format_tag, custom_error_type="topic_format",
                  custom_error_message=f"format must be one of {', '.join(_TAGS)}")]
"""A consumed topic: one model per ``format`` (``json`` when not given), so a field that does not apply to
the format cannot be set on it."""


class NewTopicsConfig(Strict):
    """How ``kafka.create_topics`` creates the topics driftline writes when they are missing."""

    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(-1, ge=-1)
    """-1: the broker's ``default.replication.factor``."""
    config: dict[str, str] = Field(default_factory=dict)
    """Topic settings, e.g. ``max.message.bytes``, ``retention.ms`` (docs/control-topic.md)."""

    @model_validator(mode="after")
    def _replicated(self) -> NewTopicsConfig:
        if self.replication_factor == 0:
            raise ValueError("replication_factor must be at least 1, or -1 for the broker's default")
        return self


class KafkaConfig(Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "driftline"
    group_instance_id: str | None = Field(None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    """Static group membership (``group.instance.id``), e.g. the pod name: a member restarted with the same id
    gets its partitions back at once instead of after the dead one's session times out; a member that
    stops for good holds its partitions until ``session.timeout.ms`` (docs/scaling.md). Unique per process."""
    topics: tuple[TopicConfig, ...] = ()
    dead_letter_topic: str = "driftline.dead-letter"
    control_topic: str = "driftline.control"
    schema_registry_url: str | None = None
    batch_size: int = Field(20_000, ge=1, le=1_000_000)
    """Messages per consume call, decoded and processed together (alerts are published after each)."""
    poll_timeout: DurationMs = 1_000
    checkpoint_interval: DurationMs = 5_000
    """How often the open state is checkpointed to the store and the offsets committed (and at every
    stop). A crash repeats at most this much consumption; 0 checkpoints after every batch."""
    idle_after: DurationMs = 30_000
    """How long a partition read to its end goes on holding the watermark with no new message (wall-clock
    time, the service's clock) before it counts as idle and stops holding: a partition minutes of event
    time ahead of the others (a producer backlog after a broker outage, a slow producer) cannot close
    their windows early, and a partition that has really stopped lets them close after this long. 0: a
    partition stops holding as soon as it is read to its end. Single stage only (docs/scaling.md)."""
    max_message_bytes: int = Field(1_048_576, ge=1)
    """Larger messages go to the dead-letter topic unread."""
    client: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka settings for every client (security.protocol, sasl.*, ssl.*, …); they override the
    consumers' defaults driftline sets (``connectors.kafka.CONSUMER_DEFAULTS``: fetch.queue.backoff.ms 50)."""
    retry_backoff: DurationMs = Field(500, ge=1)
    """First pause after the store or the broker failed a batch; doubled after each failed retry, up to
    ``retry_backoff_max``."""
    retry_backoff_max: DurationMs = Field(30_000, ge=1)
    publish_timeout: DurationMs = Field(30_000, ge=1)
    """How long a batch waits for the broker to acknowledge its control and dead-letter records; past it
    the batch counts as not published and is redone from the last checkpoint once the broker answers."""
    dead_letter_fetch_timeout: DurationMs = Field(5_000, ge=1)
    """How long a batch may spend fetching back, by offset, the messages of its bad events that were
    consumed in an earlier batch (unmatched join halves); past it they are dead-lettered with headers
    only, ``driftline.payload.missing`` saying why."""
    stages: Literal["single", "two"] = "single"
    """``single``: one process per consumer group counts and closes windows. ``two``: every member counts
    partial windows of its partitions and publishes them to ``partials_topic``; a second consumer group
    (``<group_id>.merge``) adds them up and closes windows, so several members of one group give the
    windows one gives (docs/scaling.md). Combined events only, for now."""
    partials_topic: str = Field("driftline.partials", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """With ``stages: two``: the topic of partial windows, keyed by ``model|version``."""
    create_topics: bool = False
    """At start, create the topics driftline writes (dead-letter, control, partials) that are missing, as
    ``new_topics`` says; otherwise a missing topic stops the start with an error naming it. Topics driftline
    consumes are never created."""
    new_topics: NewTopicsConfig = NewTopicsConfig()

    @model_validator(mode="after")
    def _two_stages_without_join(self) -> KafkaConfig:
        if self.stages != "two":
            return self
        halves = [t.topic for t in self.topics if isinstance(t, (InferenceTopic, OipProtobufTopic))
                  or (isinstance(t, AvroTopic) and t.avro_schema != "scoring_event.avsc")]
        if halves:
            raise ValueError(f"stages: two counts combined scoring events only (request and response in one "
                             f"record); {', '.join(halves)} carry requests or responses to join, which needs "
                             "stages: single for now")
        return self
