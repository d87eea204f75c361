"""In-memory twins of driftline's outside world, for tests without a broker or a store: a
:class:`MemoryStore`, a :class:`MemoryPublisher` and a :class:`MemorySink` (the :mod:`driftline.protocols`), a
:class:`MemorySource` (the real :class:`~driftline.connectors.kafka.source.KafkaSource` bookkeeping over
in-memory partitions) and a :class:`ManualClock`. Idempotent where the real ones are: a row written
again is kept once, under its id.

>>> clock = ManualClock()
>>> clock.advance(1.5)
>>> clock()
1000001.5
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from driftline.config import Config
from driftline.connectors.clickhouse import StoreUnavailable
from driftline.connectors.kafka.log import RepeatLimiter
from driftline.connectors.kafka.partitions import PartitionBook
from driftline.connectors.kafka.source import KafkaSource
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import WindowReport
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.engine.versions import VersionChange
from driftline.engine.window_spec import LateCount
from driftline.events import BadEvent
from driftline.outcome import AuditEntry, StepResult
from driftline.protocols import Checkpoint


class MemoryStore:
    """Everything the pipeline and the services write, by id. :meth:`fail_next` makes the next writes
    fail as an unreachable store does (:class:`~driftline.connectors.clickhouse.StoreUnavailable`)."""

    def __init__(self) -> None:
        self.windows: dict[str, WindowReport] = {}
        self.late: dict[str, int] = {}
        """Window id → the largest running late count written (as the store keeps it)."""
        self.alerts: dict[str, AlertEvent] = {}
        self.rollbacks: dict[str, RollbackRequest] = {}
        self.version_changes: dict[str, VersionChange] = {}
        self.detections: dict[str, ChangeDetection] = {}
        self.audit_log: dict[str, AuditEntry] = {}
        self.undeliverable: list[Any] = []
        self.checkpoints: dict[str, Checkpoint] = {}
        self.failures = 0
        """Writes still to fail."""

    def fail_next(self, calls: int) -> None:
        """The next ``calls`` writes or checkpoint reads fail."""
        self.failures = calls

    def _write(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("connection refused (a MemoryStore outage)", "unreachable")

    def write_windows(self, features: FeatureSet, reports: Sequence[WindowReport]) -> int:
        self._write()
        self.windows.update((r.window.window_id, r) for r in reports)
        return len(reports)

    def write_late(self, model: str, model_version: str, late: Sequence[LateCount]) -> int:
        self._write()
        for count in late:
            self.late[count.window_id] = max(self.late.get(count.window_id, 0), count.count)
        return len(late)

    def write_alerts(self, events: Sequence[AlertEvent]) -> int:
        return self._by_id(self.alerts, events, "alert_id")

    def write_rollbacks(self, requests: Sequence[RollbackRequest]) -> int:
        return self._by_id(self.rollbacks, requests, "request_id")

    def write_version_changes(self, changes: Sequence[VersionChange]) -> int:
        return self._by_id(self.version_changes, changes, "change_id")

    def write_detections(self, detections: Sequence[ChangeDetection]) -> int:
        return self._by_id(self.detections, detections, "detection_id")

    def audit(self, entries: Sequence[AuditEntry], recorded_at: datetime | None = None) -> int:
        return self._by_id(self.audit_log, entries, "entry_id")

    def _by_id(self, table: dict[str, Any], rows: Sequence[Any], key: str) -> int:
        """Rows written again are kept once, under their id (as the store's ReplacingMergeTree tables)."""
        self._write()
        table.update((getattr(row, key), row) for row in rows)
        return len(rows)

    def write_undeliverable(self, letters: Sequence[Any], now_ms: int) -> int:
        self._write()
        self.undeliverable += letters
        return len(letters)

    def write_checkpoint(self, group_id: str, seq: int, offsets: dict[str, int], state: dict[str, Any]) -> None:
        self.write_checkpoints([(group_id, seq, offsets, state)])

    def write_checkpoints(self, checkpoints: Sequence[tuple[str, int, dict[str, int], dict[str, Any]]]) -> None:
        self._write()
        for group_id, seq, offsets, state in checkpoints:  # (as stored: JSON)
            self.checkpoints[group_id] = (seq, dict(offsets), json.loads(json.dumps(state, allow_nan=False)))

    def read_checkpoint(self, group_id: str) -> Checkpoint | None:
        self._write()
        return self.checkpoints.get(group_id)

    def rows(self) -> dict[str, Any]:
        """What a comparison of two runs looks at: every table's rows, by id."""
        return {"windows": {i: (r.window.rows, r.assessment.severity) for i, r in sorted(self.windows.items())},
                "late": dict(sorted(self.late.items())), "alerts": sorted(self.alerts),
                "rollbacks": sorted(self.rollbacks), "version_changes": sorted(self.version_changes),
                "detections": sorted(self.detections), "audit_log": sorted(self.audit_log)}


class MemoryPublisher:
    """The control, dead-letter and partials topics as lists; every record is acknowledged at once. With
    ``partials_topic``, partials records are appended to that in-memory topic too (partition by key)."""

    def __init__(self, partials_topic: MemoryConsumer | None = None) -> None:
        self.partials_topic = partials_topic
        self.alerts: list[AlertEvent] = []
        self.rollbacks: list[RollbackRequest] = []
        self.version_changes: list[VersionChange] = []
        self.changes: list[ChangeDetection] = []
        self.dead_letters: list[tuple[BadEvent, bytes | None]] = []
        self.partials: list[tuple[bytes, bytes]] = []

    def alert(self, event: AlertEvent) -> None:
        self.alerts.append(event)

    def rollback(self, request: RollbackRequest) -> None:
        self.rollbacks.append(request)

    def version_change(self, change: VersionChange) -> None:
        self.version_changes.append(change)

    def change(self, detection: ChangeDetection) -> None:
        self.changes.append(detection)

    def dead_letter(self, bad: BadEvent, payload: bytes | None = None, key: bytes | None = None,
                    missing: str | None = None) -> None:
        self.dead_letters.append((bad, payload))

    def partial(self, key: bytes, value: bytes) -> None:
        self.partials.append((key, value))
        if self.partials_topic is not None:
            log = self.partials_topic.log
            log[zlib.crc32(key) % len(log)].append(value)

    def take_undeliverable(self) -> list[Any]:
        return []

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


class MemorySink:
    """A :class:`~driftline.protocols.Sink` that keeps every step's outcome in a list (``Delivery(sinks=...)``)."""

    def __init__(self) -> None:
        self.steps: list[StepResult] = []

    def write(self, step: StepResult) -> None:
        self.steps.append(step)


class ManualClock:
    """The service's clock (seconds), moved by the test."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeMessage:
    """A consumed Kafka message (or, with ``error``, a consumer event such as a partition's end)."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None,
                 error: KafkaError | None = None) -> None:
        self._topic, self._partition, self._offset, self._value, self._error = topic, partition, offset, value, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return None

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 0, 0  # (TIMESTAMP_NOT_AVAILABLE)

    def error(self) -> KafkaError | None:
        return self._error


class MemoryConsumer:
    """The confluent-kafka Consumer calls KafkaSource makes, over in-memory partitions of one topic: each
    ``consume`` hands out the unpaused partitions' new messages and then, once, the end-of-partition
    event of each partition read to its end (as librdkafka does with ``enable.partition.eof``)."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.owned: list[TopicPartition] = []
        self.log: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.position = {p: 0 for p in range(partitions)}
        self.ended = {p: False for p in range(partitions)}
        self.paused: set[int] = set()
        self.commits: list[dict[str, int]] = []

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.owned += partitions
        for tp in partitions:
            if tp.offset >= 0:  # (a start offset: the checkpoint's)
                self.position[tp.partition] = tp.offset

    def assignment(self) -> list[TopicPartition]:
        return list(self.owned)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        out: list[Any] = []
        for p in sorted({tp.partition for tp in self.owned} - self.paused):
            messages = self.log[p]
            new = messages[self.position[p]:self.position[p] + max(num_messages - len(out), 0)]
            out += [FakeMessage(self.topic, p, self.position[p] + i, value) for i, value in enumerate(new)]
            self.position[p] += len(new)
            if self.position[p] == len(messages) and (new or not self.ended[p]):
                out.append(FakeMessage(self.topic, p, self.position[p], None, KafkaError(KafkaError._PARTITION_EOF)))
                self.ended[p] = True
        return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, partition: TopicPartition) -> None:
        self.position[partition.partition] = partition.offset
        self.ended[partition.partition] = False

    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True) -> None:
        self.commits.append({f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets or []})

    def close(self) -> None:
        pass


class MemorySource(KafkaSource):
    """The real :class:`~driftline.connectors.kafka.source.KafkaSource` (batches, ends of partitions, idleness,
    pause, seek, commit) over a :class:`MemoryConsumer`: one topic, whose partitions ``here`` (all by
    default) the group hands to this member at its first poll; :meth:`hand_over` and :meth:`take_over`
    are a rebalance."""

    def __init__(self, config: Config, topic: str, partitions: int,
                 here: Sequence[int] | None = None) -> None:  # (no broker: no super().__init__)
        self.config = config.kafka
        self.consumer = MemoryConsumer(topic, partitions)  # type: ignore[assignment]
        self.assigned, self.start_offsets, self.paused, self.held, self.unreachable = set(), {}, False, set(), 0
        self.before_assign = self.before_revoke = None
        self.book = PartitionBook(config.kafka.idle_after / 1000)
        self._error_lines = RepeatLimiter()
        self.expected = {f"{topic}[{p}]" for p in range(partitions)}
        self._first = [TopicPartition(topic, p) for p in (range(partitions) if here is None else here)]
        self._joined = False

    def _join(self) -> None:
        if not self._joined:  # the group hands this member its partitions at its first poll
            self._joined = True
            self.take_over([tp.partition for tp in self._first])

    def poll_batch(self) -> list[Any]:
        self._join()
        return super().poll_batch()

    def poll_ready(self) -> list[Any]:
        self._join()
        return super().poll_ready()

    def take_over(self, partitions: Sequence[int]) -> None:
        """The group assigns these partitions to this member."""
        self._assigned(self.consumer, [TopicPartition(self.memory.topic, p) for p in partitions])

    def hand_over(self, partitions: Sequence[int], lost: bool = False) -> None:
        """The group takes these partitions away (``lost``: the session expired)."""
        self._revoked(self.consumer, [TopicPartition(self.memory.topic, p) for p in partitions], lost)
        self.memory.owned = [tp for tp in self.memory.owned if tp.partition not in partitions]
        self.memory.paused -= set(partitions)

    @property
    def memory(self) -> MemoryConsumer:
        return self.consumer  # type: ignore[return-value]

    def share(self, other: MemorySource) -> None:
        """Read the same in-memory topic as ``other`` (another member of the group)."""
        self.memory.log = other.memory.log

    def produce(self, partition: int, records: Sequence[dict[str, Any]]) -> None:
        """Scoring records, as JSON messages at the end of ``partition``."""
        self.memory.log[partition] += [json.dumps(r).encode() for r in records]
