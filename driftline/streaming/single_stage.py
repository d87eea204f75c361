"""The single-stage service's batches (``kafka.stages: one``, docs/service.md): the whole
:class:`~driftline.pipeline.Pipeline` over every partition this consumer reads, and one checkpoint per
consumer group — the offsets consumed so far and the state they leave."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from driftline.config import Config
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.messages import MessageBatch, split_partition_name
from driftline.events import BadEvent, Events
from driftline.outcome import Totals
from driftline.pipeline import Pipeline
from driftline.protocols import Store
from driftline.registry import ModelRegistry
from driftline.streaming.handler import Commit, Outcome
from driftline.streaming.offsets import OffsetTracker


@dataclass
class _Checkpoint:
    """The newest checkpoint in the store, kept in memory to go back to."""

    seq: int
    offsets: dict[str, int]
    state: dict[str, Any]
    totals: Totals = field(default_factory=Totals)


class SingleStageHandler:
    def __init__(self, config: Config, store: Store, registry: ModelRegistry, source: KafkaSource) -> None:
        self.config, self.store, self.registry, self.source = config, store, registry, source
        self.pipeline = Pipeline(config, registry)
        self.offsets = OffsetTracker()
        self.seq = 0
        self._good = _Checkpoint(0, {}, self.pipeline.snapshot())

    @property
    def totals(self) -> Totals:
        return self.pipeline.totals

    def start(self) -> None:
        """Go on where the last run left off: its open windows, its offsets."""
        found = self.store.read_checkpoint(self.config.kafka.group_id)
        if found is None:
            return
        self.seq, offsets, state = found
        self.pipeline.restore(copy.deepcopy(state))
        self.offsets.rewind(offsets)
        self._good = _Checkpoint(self.seq, dict(offsets), state)
        self.source.start_offsets = dict(offsets)
        # (partitions assigned already, while a store away at the start was waited out, start there too)
        self.source.seek({split_partition_name(name): offset for name, offset in offsets.items()})

    def prepare(self, now: float) -> None:
        pass

    def handle(self, batch: MessageBatch, events: Events, bad: list[BadEvent], now: float) -> Outcome:
        # The partitions to wait for: as they were before the batch (a partition first read in it still
        # holds the watermark while its events are counted), then as they are after it.
        before = self.pipeline.hold(*self.source.before)
        result = self.pipeline.process(events, bad, now_ms=int(now * 1000), partitioned=True)
        after = self.pipeline.hold(*self.source.holding(now))
        result.absorb(before)
        result.absorb(after)
        return Outcome(result, messages=len(batch))

    def delivered(self) -> None:
        self.offsets.delivered()

    def checkpoint(self) -> list[Commit]:
        if not self.offsets.dirty:
            return []
        offsets = dict(self.offsets.offsets)
        state = self.pipeline.snapshot()
        self.store.write_checkpoint(self.config.kafka.group_id, self.seq + 1, offsets, state)
        self.seq += 1
        self._good = _Checkpoint(self.seq, offsets, state, copy.deepcopy(self.pipeline.totals))
        self.offsets.checkpointed()
        self.source.start_offsets = dict(offsets)  # where a partition handed back to this member starts
        return [(self.source, offsets)]

    def rewind(self) -> None:
        """The pipeline as the last checkpoint left it, rebuilt as a restart would (its profiles kept);
        every partition read since it is read again from where it was first read."""
        pipeline = Pipeline(self.config, self.registry)
        pipeline.restore(copy.deepcopy(self._good.state))
        pipeline.totals = copy.deepcopy(self._good.totals)
        self.pipeline, self.seq = pipeline, self._good.seq
        self.offsets.rewind(self._good.offsets)

    def keep_alive(self) -> None:
        pass

    def resume(self) -> None:
        pass
