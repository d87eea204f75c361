"""Fetch messages back from Kafka by topic, partition and offset, for dead letters.

:class:`MessageFetcher` reads again the messages of bad events found after their batch (a join half
that expires unmatched), all of a batch's in one go; what cannot be fetched is returned with the
reason, never raised (docs/control-topic.md, *Dead letters*).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from driftline.config import KafkaConfig
from driftline.connectors.kafka.log import client_settings
from driftline.connectors.messages import partition_name

Position = tuple[str, int, int]
"""(topic, partition, offset) of one message."""
SEEK_GAP = 1_000
"""Needed offsets further apart than this are reached by a seek rather than by reading through."""
PARTITION_GONE = {KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE, KafkaError.UNKNOWN_TOPIC_OR_PART,
                  KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError.TOPIC_AUTHORIZATION_FAILED}
"""Errors after which nothing more of a partition will come (others are retried until the timeout)."""


@dataclass
class Fetched:
    found: dict[Position, tuple[bytes | None, bytes | None]] = field(default_factory=dict)
    """Position → (value, key) of each message fetched back."""
    missing: dict[Position, str] = field(default_factory=dict)
    """Position → why it could not be fetched."""


class MessageFetcher:
    """Reads single messages again by position, outside any consumer group; see the module docstring."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.timeout_s = config.dead_letter_fetch_timeout / 1000
        self._consumer: Any = None

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer({
                **client_settings(self.config),
                "group.id": f"{self.config.group_id}.dead-letter-fetch",  # never joined: assign() only
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",  # an offset gone meanwhile is reported, not skipped to another
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            })
        return self._consumer

    def fetch(self, positions: Iterable[Position]) -> Fetched:
        """The messages at these positions (value and key), and why any could not be had."""
        deadline = time.monotonic() + self.timeout_s
        out = Fetched()
        wanted: dict[tuple[str, int], list[int]] = {}
        for topic, partition, offset in set(positions):
            wanted.setdefault((topic, partition), []).append(offset)
        try:
            plan = self._in_range(wanted, deadline, out)
            if plan:
                self._read(plan, deadline, out)
        except KafkaException as exc:  # never raised to the service: the dead letters go out regardless
            for (topic, partition), offsets in wanted.items():
                for offset in offsets:
                    if (topic, partition, offset) not in out.found:
                        out.missing.setdefault((topic, partition, offset), f"fetch failed: {_describe(exc)}")
        return out

    def _in_range(self, wanted: dict[tuple[str, int], list[int]], deadline: float,
                  out: Fetched) -> dict[tuple[str, int], list[int]]:
        """The offsets (sorted) still in each partition's log; the others are noted missing, with why."""
        plan = {}
        for (topic, partition), offsets in sorted(wanted.items()):
            offsets.sort()
            left = deadline - time.monotonic()
            if left <= 0:
                _give_up(out, topic, partition, offsets, f"not fetched within {self.timeout_s:g} s")
                continue
            try:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=left,
                                                                cached=False)
            except KafkaException as exc:
                _give_up(out, topic, partition, offsets, f"partition unreadable: {_describe(exc)}")
                continue
            keep = []
            for offset in offsets:
                if offset < low:
                    out.missing[(topic, partition, offset)] = (f"no longer in the log (deleted by retention or "
                                                               f"delete_records: it starts at offset {low})")
                elif offset >= high:
                    out.missing[(topic, partition, offset)] = f"past the end of the partition (next offset {high})"
                else:
                    keep.append(offset)
            if keep:
                plan[(topic, partition)] = keep
        return plan

    def _read(self, plan: dict[tuple[str, int], list[int]], deadline: float, out: Fetched) -> None:
        consumer = self.consumer
        assignment = [TopicPartition(t, p, offsets[0]) for (t, p), offsets in plan.items()]
        consumer.assign(assignment)
        consumer.resume(assignment)  # (a partition stays paused from a fetch before, assign or not)
        at = {key: 0 for key in plan}  # index of the next needed offset, per partition
        last_error = ""
        try:
            while plan and (left := deadline - time.monotonic()) > 0:
                for message in consumer.consume(1_000, min(left, 0.1)):
                    key = (message.topic(), message.partition())
                    offsets = plan.get(key)
                    if offsets is None:  # done with that partition, or an error of the client as a whole
                        if message.error() is not None:
                            last_error = f": {message.error().str()}"
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            self._done(plan, at, key, out, "not in the log (removed by compaction?)")
                        elif error.code() in PARTITION_GONE or error.fatal():
                            self._done(plan, at, key, out, f"partition unreadable: {error.str()}")
                        else:
                            last_error = f": {error.str()}"
                        continue
                    offset, i = message.offset(), at[key]
                    while i < len(offsets) and offsets[i] < offset:  # passed over: not in the log
                        out.missing[(*key, offsets[i])] = "not in the log (removed by compaction?)"
                        i += 1
                    if i < len(offsets) and offsets[i] == offset:
                        out.found[(*key, offset)] = (message.value(), message.key())
                        i += 1
                    at[key] = i
                    if i == len(offsets):
                        self._done(plan, at, key, out, "")
                    elif offsets[i] - offset > SEEK_GAP:
                        try:
                            consumer.seek(TopicPartition(*key, offsets[i]))
                        except KafkaException:  # (not fetching right now): read through instead
                            pass
            for key in list(plan):
                self._done(plan, at, key, out, f"not fetched within {self.timeout_s:g} s{last_error}")
        finally:
            consumer.unassign()

    def _done(self, plan: dict[tuple[str, int], list[int]], at: dict[tuple[str, int], int], key: tuple[str, int],
              out: Fetched, reason: str) -> None:
        """Stop reading a partition; its needed offsets not found yet are missing for ``reason``."""
        _give_up(out, key[0], key[1], plan.pop(key)[at.pop(key):], reason)
        self.consumer.pause([TopicPartition(*key)])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _give_up(out: Fetched, topic: str, partition: int, offsets: list[int], reason: str) -> None:
    for offset in offsets:
        out.missing[(topic, partition, offset)] = reason


def _describe(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def describe_missing(missing: dict[Position, str], limit: int = 3) -> str:
    """A log line's worth: each reason with how many and the first few origins."""
    by_reason: dict[str, list[Position]] = {}
    for position, reason in sorted(missing.items()):
        by_reason.setdefault(reason, []).append(position)
    return "; ".join(f"{len(ps)} {reason} ({', '.join(_named(p) for p in ps[:limit])}"
                     f"{', …' if len(ps) > limit else ''})" for reason, ps in by_reason.items())


def _named(position: Position) -> str:
    topic, partition, offset = position
    return f"{partition_name(topic, partition)}@{offset}"
