"""Which owned partitions a model's watermark waits for: each partition's state, and the idleness rule.

A partition this member owns is, in turn:

- ``FRESH`` from its assignment (or a seek back to re-read it) until something is read from it: it may
  carry any model's events, so it holds every model's watermark;
- ``READING`` while it delivers: it holds the watermark of the models whose events it carried;
- ``AT_END`` once read to its end (the consumer's end-of-partition event after its last message). It
  goes on holding, as ``READING`` does: one partition read to its end minutes of event time ahead of
  another (a producer's backlog flushed after a broker outage, a slow producer) must not close the
  windows the other has not delivered yet;
- ``IDLE`` once it has been at its end with no new message for ``kafka.idle_after`` of the service's
  clock (Flink's source idleness): it stops holding, so windows close when a partition has really
  stopped. A message arriving on it makes it ``READING`` again (events of windows closed meanwhile are
  counted late, as usual). ``idle_after: 0`` makes a partition idle as soon as it is read to its end.

The idle timer starts at a partition's last message, or, when nothing has been read from it since its
assignment or its seek back, at the first batch that finds it at its end. After the consumer reported
the broker unreachable, or was paused (an outage), the first batch that brings anything (a message or
an end of partition) restarts the timer of every partition at its end, idle ones included: nothing was
known of the partitions meanwhile, and their producers' backlogs, queued through the outage, reach the
broker one after the other, each partition getting ``idle_after`` to deliver its own. (Holding again
is always safe: the watermark never goes back, it only waits.) The states are runtime only, never
checkpointed: after a restart every partition is ``FRESH`` until read, then its timer starts anew.

Pure bookkeeping: times are handed in (seconds of the service's clock), nothing here reads a clock.
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
