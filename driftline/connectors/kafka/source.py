"""Kafka consumption on confluent-kafka (librdkafka): :class:`KafkaSource`, the consumer-group member that
hands out batches (:class:`MessageBatch`), keeps each partition's state (read to its end, idle, held), and
commits only what the service says is safe. Producing (the control, dead-letter and partials topics) is :mod:`driftline.connectors.kafka.publish`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from itertools import repeat
from operator import is_not
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from driftline.config import KafkaConfig
from driftline.connectors.kafka.log import RepeatLimiter, client_settings
from driftline.connectors.kafka.partitions import Holding, PartitionBook, PartitionState
from driftline.connectors.messages import MessageBatch, partition_name, split_partition_name

log = logging.getLogger("driftline.kafka")

UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._TIMED_OUT}
"""Client errors (librdkafka's error callback) that say the broker cannot be reached: the idle timers start again."""


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
            "error_cb": self._error,
            **({"group.instance.id": config.group_instance_id} if config.group_instance_id else {}),
        })
        self.assigned: set[str] = set()
        """Partitions this member owns, as ``topic[partition]``."""
        self.book = PartitionBook(config.idle_after / 1000)
        """Each owned partition's state (fresh, reading, at its end, idle): which hold the watermark."""
        self._error_lines = RepeatLimiter()
        self.unreachable = 0
        """Times the consumer reported the broker unreachable (the partitions' idle timers start again)."""
        self.before = Holding(frozenset(), frozenset(), frozenset())
        """What the watermarks waited for before the last batch :meth:`take` handed out counted as read."""
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

    def _error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (called from ``consume``): a broker that cannot be reached says
        nothing of what its partitions hold, so the idle timers start again once it delivers."""
        if error.code() in UNREACHABLE:
            self.unreachable += 1
            self.book.unreachable()
        for line in self._error_lines.offer(error.code(), f"consumer: {error}"):  # (a broker down: many a second)
            log.warning("%s", line)

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
        self.book.assigned(names)

    def _lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._revoked(consumer, partitions, lost=True)

    def _revoked(self, consumer: Any, partitions: list[TopicPartition], lost: bool = False) -> None:
        names = {partition_name(p.topic, p.partition) for p in partitions}
        if self.before_revoke is not None:
            self.before_revoke(names & self.assigned, lost)
        self.held -= names
        self.assigned -= names
        self.book.revoked(names)

    def take(self, polled: list[Message], now: float | None = None) -> MessageBatch:
        """A consume call's messages, field by field. End-of-partition events note their partition as
        read to its end and are left out, as are consumer errors (logged); every partition a message
        came from counts as read (not fresh, not at its end, unless its end came after its messages).
        ``now`` (the service's clock, seconds) starts the idle timers (:mod:`driftline.connectors.kafka.partitions`)
        and sets :attr:`before`."""
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
        at_end = [name for name, before in ended.items() if name not in batch.sources[before:]]  # none after its end
        self.book.arrived(bool(batch.sources or ended))
        if now is not None:
            self.before = self.holding(now)
        self.book.read(set(batch.sources), at_end, now)
        return batch

    @property
    def fresh(self) -> set[str]:
        """Owned partitions nothing has been read from yet."""
        return self.book.in_state(PartitionState.FRESH)

    @property
    def at_end(self) -> set[str]:
        """Owned partitions read to their end (until their next message), idle or not."""
        return self.book.in_state(PartitionState.AT_END, PartitionState.IDLE)

    def holding(self, now: float) -> Holding:
        """The partitions the watermarks wait for at ``now`` (the service's clock, seconds): those still to
        deliver (not idle), those nothing was read from yet in this process — owned, or not handed to this
        member yet —, and every owned one."""
        return self.book.holding(now, self.expected - self.assigned)

    def poll_batch(self) -> list[Message]:
        """Up to ``batch_size`` messages: what has arrived, at once; when nothing has, the first message
        within ``poll_timeout`` and what came with it. (One blocking ``consume(batch_size, timeout)``
        would wait for a full batch, or the whole timeout, before a window-closing event is seen.)"""
        size = self.config.batch_size
        ready = self.poll_ready()
        if ready:
            return ready
        first = self.consumer.consume(1, self.config.poll_timeout / 1000)
        if not first or size == 1:
            return first
        return first + self.consumer.consume(size - 1, 0)

    def poll_ready(self) -> list[Message]:
        """Up to ``batch_size`` messages of what has arrived, without waiting."""
        return self.consumer.consume(self.config.batch_size, 0)

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
        self.book.unreachable()  # nothing was read while paused: the idle timers start again
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
            self.book.sought([partition_name(topic, partition)])

    def close(self) -> None:
        self.consumer.close()
