"""The topics at start: every topic driftline reads or writes must exist, and the ones it writes say how
large a record they take.

:func:`check_topics` stops the start with :class:`MissingTopics` (or creates the topics driftline
writes, with ``kafka.create_topics``) and reads their ``max.message.bytes`` (docs/control-topic.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from driftline.config import KafkaConfig
from driftline.connectors.kafka.log import client_settings
from driftline.errors import DriftlineError

log = logging.getLogger("driftline.kafka")

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default ``message.max.bytes`` (a topic's ``max.message.bytes``): assumed when it cannot be read."""
ADMIN_TIMEOUT_S = 10.0


class MissingTopics(DriftlineError):
    """Topics that do not exist on the broker; ``topics`` maps each to the setting that names it."""

    def __init__(self, topics: dict[str, str], bootstrap: str) -> None:
        self.topics = topics
        named = ", ".join(f"{topic} ({setting})" for topic, setting in sorted(topics.items()))
        super().__init__(f"{len(topics)} Kafka topic{'s' if len(topics) > 1 else ''} missing on {bootstrap} "
                         f"(or not visible to this client): "
                         f"{named}. Create them (docs/control-topic.md says which settings), or set "
                         "kafka.create_topics: true to have driftline create the ones it writes")


def consumed_topics(config: KafkaConfig) -> dict[str, str]:
    """Topic → the setting that names it, for the topics driftline reads."""
    out = {t.topic: f"kafka.topics.{i}.topic" for i, t in enumerate(config.topics)}
    if config.stages == "two":
        out.setdefault(config.partials_topic, "kafka.partials_topic")
    return out


def written_topics(config: KafkaConfig) -> dict[str, str]:
    """Topic → the setting that names it, for the topics driftline writes."""
    out = {config.dead_letter_topic: "kafka.dead_letter_topic", config.control_topic: "kafka.control_topic"}
    if config.stages == "two":
        out.setdefault(config.partials_topic, "kafka.partials_topic")
    return out


def admin_client(config: KafkaConfig) -> AdminClient:
    return AdminClient(client_settings(config))


def check_topics(config: KafkaConfig, admin: Any, timeout_s: float = ADMIN_TIMEOUT_S) -> dict[str, int]:
    """Raise :class:`MissingTopics` unless every topic exists (creating the written ones first if
    ``kafka.create_topics``); return each written topic's ``max.message.bytes``. A broker that does not
    answer raises ``KafkaException``."""
    needed = {**consumed_topics(config), **written_topics(config)}
    metadata = admin.list_topics(timeout=timeout_s)
    missing = {topic: setting for topic, setting in needed.items() if topic not in metadata.topics
               or (metadata.topics[topic].error is not None
                   and metadata.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)}
    if missing and config.create_topics:
        creatable = [topic for topic in missing if topic in written_topics(config)]
        for topic in _create(config, admin, creatable, timeout_s):
            del missing[topic]
    if missing:
        raise MissingTopics(missing, config.bootstrap_servers)
    return topic_limits(admin, written_topics(config), timeout_s)


def _create(config: KafkaConfig, admin: Any, topics: list[str], timeout_s: float) -> list[str]:
    """Create ``topics``; the ones that exist now (created here, or meanwhile by another member)."""
    if not topics:
        return []
    spec = config.new_topics
    futures = admin.create_topics([NewTopic(topic, num_partitions=spec.partitions,
                                            replication_factor=spec.replication_factor, config=dict(spec.config))
                                   for topic in topics], operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s + 5)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DriftlineError(f"cannot create Kafka topic {topic} (kafka.create_topics, kafka.new_topics "
                                     f"{spec.model_dump()}): {exc.args[0].str()}") from None
        log.info("created Kafka topic %s: %d partitions, replication factor %s, %s", topic, spec.partitions,
                 spec.replication_factor if spec.replication_factor > 0 else "the broker's default", spec.config)
        created.append(topic)
    _wait_for_leaders(admin, created, timeout_s)
    return created


def _wait_for_leaders(admin: Any, topics: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while topics:
        metadata = admin.list_topics(timeout=timeout_s).topics
        if all(t in metadata and metadata[t].error is None and metadata[t].partitions
               and all(p.leader >= 0 for p in metadata[t].partitions.values()) for t in topics):
            return
        if time.monotonic() > deadline:
            raise DriftlineError(f"created Kafka topics {', '.join(topics)} have no leader after {timeout_s:g} s")
        time.sleep(0.1)


def topic_limits(admin: Any, topics: Iterable[str], timeout_s: float = ADMIN_TIMEOUT_S) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` (its own, or the broker's it inherits); topics whose setting
    cannot be read (missing, not authorized) are left out."""
    resources = {topic: ConfigResource("TOPIC", topic) for topic in topics}
    if not resources:
        return {}
    futures = admin.describe_configs(list(resources.values()), request_timeout=timeout_s)
    out = {}
    for topic, resource in resources.items():
        try:
            entries = futures[resource].result(timeout=timeout_s + 5)
            out[topic] = int(entries["max.message.bytes"].value)
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            log.warning("cannot read max.message.bytes of Kafka topic %s (%s): assuming Kafka's default, %d",
                        topic, exc, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    return out


def checked_topics(config: KafkaConfig, stop: threading.Event | None = None,
                   backoff: Callable[[], float] | None = None) -> dict[str, int]:
    """:func:`check_topics`, retried while the broker does not answer (logged, with backoff); a missing
    topic raises at once. Returns the written topics' ``max.message.bytes`` ({} if stopped first)."""
    admin = admin_client(config)
    delay = 0.5
    while stop is None or not stop.is_set():
        try:
            return check_topics(config, admin)
        except KafkaException as exc:
            wait = backoff() if backoff is not None else delay
            delay = min(delay * 2, 30.0)
            log.warning("checking the Kafka topics: the broker at %s does not answer (%s); retrying in %.1f s",
                        config.bootstrap_servers, exc, wait)
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
    return {}
