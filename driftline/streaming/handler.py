"""What the consumer loop asks of a service shape: a :class:`BatchHandler` (single stage,
:mod:`~driftline.streaming.single_stage`; two stages, :mod:`~driftline.streaming.two_stage`), and the
:class:`Outcome` of one batch it hands back for delivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from driftline.connectors.messages import MessageBatch
from driftline.events import BadEvent, Events
from driftline.outcome import StepResult, Totals
from driftline.streaming.offsets import OffsetTracker


class Committer(Protocol):
    """A consumer that commits offsets (:class:`~driftline.connectors.kafka.source.KafkaSource`)."""

    def commit_offsets(self, offsets: dict[str, int]) -> None: ...


Commit = tuple[Committer, dict[str, int]]
"""Offsets a checkpoint covers, to commit on the consumer they belong to."""


@dataclass
class Outcome:
    """One batch, handled: what the sinks write (``step``; its bad events go to the dead-letter topic) and
    the partials records to produce (two stages)."""

    step: StepResult = field(default_factory=StepResult)
    partials: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(key, value) records for ``kafka.partials_topic``."""
    messages: int = 0
    """Messages handled: the batch's, and the partials records stage 2 added up."""


class BatchHandler(Protocol):
    offsets: OffsetTracker
    """The main source's offsets."""

    @property
    def totals(self) -> Totals:
        """The restorable running counts (set back with the state after an outage)."""

    def start(self) -> None:
        """Before the first batch: read what to start from (may fail with the store away; it is tried again)."""

    def prepare(self, now: float) -> None:
        """Before each poll that is not paused."""

    def handle(self, batch: MessageBatch, events: Events, bad: list[BadEvent], now: float) -> Outcome:
        """Process one batch (no store or topic touched: the outcome is delivered by the loop)."""

    def delivered(self) -> None:
        """The last outcome went through: its offsets may be checkpointed."""

    def checkpoint(self) -> list[Commit]:
        """The state of what was delivered into the store; returns the offsets that may be committed now."""

    def rewind(self) -> None:
        """Back to the last checkpoint's state and offsets (an outage failed the batch)."""

    def keep_alive(self) -> None:
        """Each poll while paused: keep any other consumer in its group."""

    def resume(self) -> None:
        """The retry is due: any other consumer reads again from the checkpoint."""
