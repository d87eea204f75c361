"""What processing and the services need of the world, as Protocols: a :class:`Source` of batches
(:class:`~driftline.connectors.kafka.source.KafkaSource`; in memory, :class:`driftline.testing.MemorySource`),
a :class:`Store` the outcomes are
written to (ClickHouse, :class:`~driftline.connectors.clickhouse.ClickHouseStore`; in memory,
:class:`driftline.testing.MemoryStore`), a :class:`ControlSink` for the control, dead-letter and partials
topics (:class:`~driftline.connectors.kafka.publish.Publisher`; :class:`driftline.testing.MemoryPublisher`),
a :class:`Sink` that takes a step's outcome (:mod:`driftline.sinks`), and a :class:`ProfileSource` the model
registry loads reference profiles from (:mod:`driftline.registry`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from driftline.connectors.messages import MessageBatch
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import WindowReport
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.engine.profile import ReferenceProfile
from driftline.engine.versions import VersionChange
from driftline.engine.window_spec import LateCount
from driftline.events import BadEvent
from driftline.outcome import AuditEntry, StepResult

if TYPE_CHECKING:
    from driftline.config import ModelConfig

Checkpoint = tuple[int, dict[str, int], dict[str, Any]]
"""(seq, offsets, state) of a consumer group's newest checkpoint."""


class Source(Protocol):
    """What the consumer loop needs of a consumer-group member: batches, and pause, resume and seek for an
    outage (the batch handlers also use the member's partition bookkeeping, a KafkaSource's)."""

    def poll_batch(self) -> list[Any]: ...

    def take(self, polled: list[Any], now: float | None = None) -> MessageBatch: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def seek(self, positions: dict[tuple[str, int], int]) -> None: ...

    def commit_offsets(self, offsets: Mapping[str, int]) -> None: ...


class Store(Protocol):
    """Where windows, late counts, decisions, the audit trail and checkpoints go. Every write is
    idempotent: the same rows written again leave one copy."""

    def write_windows(self, features: FeatureSet, reports: Sequence[WindowReport]) -> int: ...

    def write_late(self, model: str, model_version: str, late: Sequence[LateCount]) -> int: ...

    def write_alerts(self, events: Sequence[AlertEvent]) -> int: ...

    def write_rollbacks(self, requests: Sequence[RollbackRequest]) -> int: ...

    def write_version_changes(self, changes: Sequence[VersionChange]) -> int: ...

    def write_detections(self, detections: Sequence[ChangeDetection]) -> int: ...

    def audit(self, entries: Sequence[AuditEntry], recorded_at: datetime | None = None) -> int: ...

    def write_undeliverable(self, letters: Sequence[Any], now_ms: int) -> int: ...

    def write_checkpoint(self, group_id: str, seq: int, offsets: dict[str, int], state: dict[str, Any]) -> None: ...

    def write_checkpoints(self, checkpoints: Sequence[tuple[str, int, dict[str, int], dict[str, Any]]]) -> None: ...

    def read_checkpoint(self, group_id: str) -> Checkpoint | None: ...


class ControlSink(Protocol):
    """The control topic (alerts, rollback requests, version switches, early warnings), the dead-letter
    topic, and the partials topic of two stages; :meth:`flush` returns once every record is acknowledged."""

    def alert(self, event: AlertEvent) -> None: ...

    def rollback(self, request: RollbackRequest) -> None: ...

    def version_change(self, change: VersionChange) -> None: ...

    def change(self, detection: ChangeDetection) -> None: ...

    def dead_letter(self, bad: BadEvent, payload: bytes | None = None, key: bytes | None = None,
                    missing: str | None = None) -> None: ...

    def partial(self, key: bytes, value: bytes) -> None: ...

    def take_undeliverable(self) -> list[Any]: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class Sink(Protocol):
    """Takes the outcome of a step (a batch, a hold, the end of input) once processing is done with it."""

    def write(self, step: StepResult) -> None: ...


class ProfileSource(Protocol):
    """Where a model version's reference profile comes from: files today, the MLflow registry later."""

    def profile(self, model: ModelConfig, version: str) -> ReferenceProfile: ...
