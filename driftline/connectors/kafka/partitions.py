"""Which owned partitions a model's watermark waits for: each partition's state, and the idleness rule.

A partition is ``FRESH``, ``READING``, ``AT_END`` or ``IDLE`` (at its end for ``kafka.idle_after``: it
stops holding). Pure bookkeeping: times are handed in, nothing here reads a clock. The rules:
docs/scaling.md, *Idle partitions*.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

log = logging.getLogger("driftline.kafka")


class PartitionState(Enum):
    FRESH = "fresh"
    READING = "reading"
    AT_END = "at end"
    IDLE = "idle"


@dataclass
class Partition:
    state: PartitionState = PartitionState.FRESH
    quiet_since: float | None = None
    """When its idle timer started (service clock, seconds); None: it starts at the next batch."""


class Holding(NamedTuple):
    """Which partitions the watermarks wait for, as :meth:`driftline.pipeline.Pipeline.hold` takes them."""

    active: frozenset[str]
    """Owned and still to deliver: not idle (fresh, reading, or at their end for less than ``idle_after``)."""
    fresh: frozenset[str]
    """Nothing read from them yet in this process: owned ones, and those not handed to this member yet."""
    assigned: frozenset[str]
    """Every owned partition."""


class PartitionBook:
    """The state of each owned partition (``topic[partition]`` → :class:`Partition`)."""

    def __init__(self, idle_after: float) -> None:
        self.idle_after = idle_after
        """Seconds at its end without a message before a partition stops holding the watermark."""
        self.partitions: dict[str, Partition] = {}
        self.cut_off = False
        """The broker was unreachable, or consumption paused, and nothing has been read since."""

    def in_state(self, *states: PartitionState) -> set[str]:
        return {name for name, p in self.partitions.items() if p.state in states}

    def assigned(self, names: Iterable[str]) -> None:
        for name in names:
            self.partitions[name] = Partition()

    def revoked(self, names: Iterable[str]) -> None:
        for name in names:
            self.partitions.pop(name, None)

    def sought(self, names: Iterable[str]) -> None:
        """Read again from an earlier offset: nothing of them read yet, their timers not started."""
        for name in names:
            if name in self.partitions:
                self.partitions[name] = Partition()

    def unreachable(self) -> None:
        """The consumer could not reach the broker, or was paused: whether a partition has new messages is
        not known, so every idle timer starts again at the first batch that brings anything."""
        self.cut_off = True

    def arrived(self, news: bool) -> None:
        """A batch came, with messages or ends of partitions (``news``) or without. The first news since the
        broker was unreachable (or consumption paused) restarts the timer of every partition at its end."""
        if not (self.cut_off and news):
            return
        self.cut_off = False
        back = self.in_state(PartitionState.AT_END, PartitionState.IDLE)
        if back:
            log.info("the broker delivers again: %d partitions at their end hold the watermark for idle_after "
                     "more", len(back))
        for name in back:
            self.partitions[name] = Partition(PartitionState.AT_END)

    def read(self, delivered: Iterable[str], ended: Iterable[str], now: float | None) -> None:
        """A batch: messages from the ``delivered`` partitions, and the ``ended`` ones at their end after
        them. Timers not started yet start at ``now`` for the partitions at their end."""
        for name in delivered:
            if (partition := self.partitions.get(name)) is not None:
                if partition.state is PartitionState.IDLE:
                    log.info("%s delivers again after being idle: it holds the watermark again", name)
                partition.state, partition.quiet_since = PartitionState.READING, now
        for name in ended:
            if (partition := self.partitions.get(name)) is not None:
                if partition.state is not PartitionState.IDLE:
                    partition.state = PartitionState.AT_END
        if now is not None:
            for partition in self.partitions.values():
                if partition.quiet_since is None and partition.state is PartitionState.AT_END:
                    partition.quiet_since = now

    def holding(self, now: float, unowned: Iterable[str] = ()) -> Holding:
        """The partitions to wait for at ``now``; partitions at their end for ``idle_after`` become idle."""
        for name, partition in self.partitions.items():
            if (partition.state is PartitionState.AT_END and partition.quiet_since is not None
                    and now - partition.quiet_since >= self.idle_after):
                partition.state = PartitionState.IDLE
                if self.idle_after > 0:
                    log.info("%s idle: read to its end, no message for %.0f s; it no longer holds the watermark",
                             name, now - partition.quiet_since)
        active = frozenset(name for name, p in self.partitions.items() if p.state is not PartitionState.IDLE)
        fresh = frozenset(self.in_state(PartitionState.FRESH)) | frozenset(unowned)
        return Holding(active, fresh, frozenset(self.partitions))
