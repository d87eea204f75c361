"""``driftline run`` with ``kafka.stages: two``: several members of one consumer group give the windows
one member gives (docs/scaling.md).

Delivery order of one batch, as :meth:`TwoStageService.step` does it:

1. decode every message (as :class:`~driftline.service.Service` does);
2. stage 1 (:mod:`driftline.stage`): count each (model version, source partition)'s events into panes;
   produce one partials record per (model version, partition) that had events to
   ``kafka.partials_topic`` and the bad events to the dead-letter topic; flush and check every record
   was acknowledged;
3. stage 2 (:mod:`driftline.merge`): read what has arrived on the partials partitions this member's
   ``<group_id>.merge`` consumer owns (without waiting); add it up, evaluate and decide what closes;
   write windows, late counts, alerts, rollback requests and the audit trail to the store; produce the
   alerts and rollback requests to the control topic; flush;
4. every ``kafka.checkpoint_interval`` (and when stopping, and for the partitions a rebalance takes
   away): one checkpoint per source partition read since the last one (``<group_id>/<topic>[<p>]``:
   its offset and its panes) and one per partials partition (``<group_id>.merge/<partials>[<p>]``: its
   offset, the merges, the monitors' recent windows, the decisions, the late counts);
5. only then commit those offsets (both consumers), synchronously.

A partition assigned to this member is started from its own checkpoint, loaded before anything of it is
consumed (from the beginning when it has none). So a partition moves between members, or a member
restarts, with its state: what was read after the checkpoint is read again, its partials produced
again, and stage 2 adds each (partition, pane) once and keeps the largest running late count (see
:mod:`driftline.merge`).

Outages (the store, the broker or the schema registry away) pause both consumers as in the single-stage
service; both stages go back to the partitions' last checkpoints (kept in memory) and, after the
backoff, read again from their offsets.

Not yet done: the request/response join (combined events only; the configuration
refuses topics of halves); the score change watch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException

from driftline.config import Config, KafkaConfig, TopicConfig
from driftline.connectors.clickhouse import StoreUnavailable
from driftline.connectors.kafka import KafkaSource, MessageBatch, split_partition_name
from driftline.connectors.kafka_fetch import MessageFetcher
from driftline.events import BadEvent, Events
from driftline.merge import MergeShard
from driftline.outcome import StepResult
from driftline.protocols import ControlSink, Store
from driftline.service import BatchReport, Service
from driftline.stage import PartialRecord, StageOne

log = logging.getLogger("driftline.two_stage")


def _load_or_hold(names: list[str], load: Callable[[str], int], source: KafkaSource) -> bool:
    """Each partition loaded (``load`` returns where to read it from) and released to be read; from the
    first the store cannot answer for, the rest are held. Whether every one was loaded."""
    for at, name in enumerate(names):
        try:
            start = load(name)
        except StoreUnavailable as exc:
            held = set(names[at:]) - source.held
            source.held |= set(names[at:])
            if held:
                log.warning("store unavailable (%s): partitions %s held, not read, until it answers", exc, sorted(held))
            return False
        if name in source.held:
            source.release({name: start})
    return True


def merge_settings(kafka: KafkaConfig) -> KafkaConfig:
    """The stage-2 consumer's settings: group ``<group_id>.merge`` on the partials topic."""
    return kafka.model_copy(update={"group_id": f"{kafka.group_id}.merge",
                                    "topics": (TopicConfig(topic=kafka.partials_topic),)})


class TwoStageService(Service):
    def __init__(self, config: Config, store: Store, source: KafkaSource, publisher: ControlSink,
                 clock: Callable[[], float] = time.time, fetcher: MessageFetcher | None = None,
                 merge_source: KafkaSource | None = None) -> None:
        super().__init__(config, store, source, publisher, clock, fetcher)
        self.stage1 = StageOne(self.registry, len(source.expected))
        self.merge_source = merge_source if merge_source is not None else KafkaSource(merge_settings(config.kafka))
        self.shards: dict[str, MergeShard] = {}
        """Partials partition → its stage-2 state."""
        self.merge_offsets: dict[str, int] = {}
        """Partials partition → the offset after its last record added up."""
        self._seqs: dict[str, int] = {}
        """Checkpoint key → the seq of its newest checkpoint."""
        self._dirty: set[str] = set()
        """Source partitions read since their checkpoint."""
        self._dirty_shards: set[str] = set()
        self._kept: dict[str, tuple[int | None, dict[str, Any] | None]] = {}
        """Checkpoint key → the (offset, state) of its newest checkpoint (None, None: none), to go back to."""
        self._held_retry_at = 0.0
        """When partitions held at their assignment are next tried (monotonic seconds)."""
        source.before_assign, source.before_revoke = self._load_partitions, self._hand_over_partitions
        self.merge_source.before_assign = self._load_shards
        self.merge_source.before_revoke = self._hand_over_shards

    def _process(self, batch: MessageBatch, events: Events, bad: list[BadEvent],
                 waiting: tuple[frozenset[str], frozenset[str], frozenset[str]]) -> BatchReport:
        """Steps 2-5 of the module docstring (``waiting`` is the single-stage watermark's; not used here)."""
        counted = self.stage1.count(events, int(self.clock() * 1000))
        totals = self.pipeline.totals
        totals.events += len(events) + len(bad)
        totals.accepted += counted.accepted
        totals.late += counted.late
        totals.duplicates += counted.duplicates
        bad = bad + counted.bad
        for item in bad:
            totals.bad[item.stage] += 1
        for record in counted.records:
            self.publisher.partial(record.key, record.encode())
        if bad:
            self._dead_letter(batch, bad)
        self.publisher.flush(self.config.kafka.publish_timeout / 1000)
        self.offsets.update(self._batch_offsets)
        self._dirty |= self._batch_offsets.keys()
        self._batch_offsets = {}
        merged, step = self._merge()
        self.store_sink.write(step)
        step.bad = bad
        self.control.write(step)
        self.publisher.flush(self.config.kafka.publish_timeout / 1000)
        self._batch_done(batch)
        return BatchReport(len(batch) + merged, step, len(bad))

    def _merge(self) -> tuple[int, StepResult]:
        """Stage 2 over the partials records that have arrived; returns how many, and what closed."""
        batch = self.merge_source.take(self.merge_source.consumer.consume(self.config.kafka.batch_size, 0))
        step = StepResult()
        per_shard: dict[str, StepResult] = {}
        for value, name in zip(batch.values, batch.sources, strict=True):
            shard = self.shards.get(name)
            if shard is None or value is None:  # (not assigned any more)
                continue
            shard.add(PartialRecord.decode(value), per_shard.setdefault(name, StepResult()))
        for name, result in sorted(per_shard.items()):
            self.shards[name].decide(result, self.pipeline.totals)
            step.absorb(result)
        offsets = batch.next_offsets()
        self.merge_offsets.update(offsets)
        self._dirty_shards |= offsets.keys()
        return len(batch), step

    # -- checkpoints, one per partition -------------------------------------------------------------

    def checkpoint(self) -> None:
        """Checkpoints of the partitions read since their last one, then their offsets committed."""
        self._checkpointed_at = self.clock()
        self._checkpoint(self._dirty & self.source.assigned, self._dirty_shards & self.shards.keys())

    def _checkpoint(self, partitions: set[str], shards: set[str]) -> None:
        group = self.config.kafka.group_id
        rows = [(f"{group}/{name}", self.offsets[name], {name: self.offsets[name]}, self.stage1.snapshot(name))
                for name in sorted(partitions)]
        rows += [(f"{group}.merge/{name}", self.merge_offsets[name], {name: self.merge_offsets[name]},
                  self.shards[name].snapshot()) for name in sorted(shards)]
        if not rows:
            return
        checkpoints = [(key, self._seqs.get(key, 0) + 1, offsets, state) for key, _, offsets, state in rows]
        self.store.write_checkpoints(checkpoints)
        self._seqs.update((key, seq) for key, seq, _, _ in checkpoints)
        self._kept.update((key, (next(iter(offsets.values())), state)) for key, _, offsets, state in checkpoints)
        self._dirty -= partitions
        self._dirty_shards -= shards
        try:
            self.source.commit_offsets({name: self.offsets[name] for name in partitions})
            self.merge_source.commit_offsets({name: self.merge_offsets[name] for name in shards})
        except KafkaException as exc:  # the checkpoints hold the offsets: a restart starts from them
            self.health.commit_failures += 1
            self.health.reason = f"commit failed: {exc}"
            log.warning("offset commit failed (%s); the checkpoints hold the offsets", exc)

    def _stored(self, key: str) -> tuple[int, int, dict[str, Any]] | None:
        """(seq, offset, state) of a partition's checkpoint."""
        found = self.store.read_checkpoint(key)
        if found is None:
            return None
        seq, offsets, state = found
        return seq, next(iter(offsets.values())), state

    def _load_partitions(self, names: set[str]) -> None:
        """Source partitions assigned: each starts from its checkpoint (state and offset), else anew. While
        the store is away they are held (assigned, not read) and loaded later (:meth:`_load_held`)."""
        _load_or_hold(sorted(names), self._load_partition, self.source)
        log.info("source partitions assigned: %s", sorted(names))

    def _load_partition(self, name: str) -> int:
        """One source partition's checkpoint loaded; returns where to start reading it."""
        key = f"{self.config.kafka.group_id}/{name}"
        found = self._stored(key)
        self._dirty.discard(name)
        self._kept[key] = (None, None) if found is None else (found[1], found[2])
        if found is None:
            self.stage1.restore(name, None)
            self.offsets.pop(name, None)
            start = OFFSET_BEGINNING
        else:
            self._seqs[key], self.offsets[name], state = found
            self.stage1.restore(name, state)
            start = self.offsets[name]
        self.source.start_offsets[name] = start
        return start

    def _hand_over_partitions(self, names: set[str], lost: bool) -> None:
        """Source partitions taken away: a last checkpoint of what was read (unless they were lost: another
        member may own them already), then forgotten here."""
        if not lost:
            self._last_checkpoint(self._dirty & names, set())
        self._dirty -= names
        for name in names:
            self.stage1.drop(name)
            self.offsets.pop(name, None)
        log.info("source partitions handed over: %s", sorted(names))

    def _load_shards(self, names: set[str]) -> None:
        _load_or_hold(sorted(names), self._load_shard, self.merge_source)
        log.info("partials partitions assigned: %s", sorted(names))

    def _load_shard(self, name: str) -> int:
        """One partials partition's stage-2 shard loaded; returns where to start reading it."""
        key = f"{self.config.kafka.group_id}.merge/{name}"
        found = self._stored(key)
        shard = MergeShard(self.registry, frozenset(self.source.expected) or None)
        self._dirty_shards.discard(name)
        self._kept[key] = (None, None) if found is None else (found[1], found[2])
        if found is None:
            self.merge_offsets.pop(name, None)
            start = OFFSET_BEGINNING
        else:
            self._seqs[key], self.merge_offsets[name], state = found
            shard.restore(state)
            start = self.merge_offsets[name]
        self.shards[name] = shard
        self.merge_source.start_offsets[name] = start
        return start

    def _load_held(self) -> None:
        """Partitions held since their assignment (the store was away): loaded now if the store answers,
        then read from their checkpoints. Tried once per ``kafka.retry_backoff``."""
        now = time.monotonic()
        if now < self._held_retry_at:
            return
        self._held_retry_at = now + self.config.kafka.retry_backoff / 1000
        for source, load in ((self.source, self._load_partition), (self.merge_source, self._load_shard)):
            if source.held and not _load_or_hold(sorted(source.held), load, source):
                return
        log.info("held partitions loaded: every assigned partition is read")

    def _last_checkpoint(self, partitions: set[str], shards: set[str]) -> None:
        """The checkpoint of partitions being taken away; without the store, none: the next owner reads them
        again from their previous checkpoint, as after a crash (stage 2 adds each pane once)."""
        try:
            self._checkpoint(partitions, shards)
        except StoreUnavailable as exc:
            log.warning("partitions handed over without a last checkpoint (%s): %s", exc,
                        sorted(partitions | shards))

    def _hand_over_shards(self, names: set[str], lost: bool) -> None:
        if not lost:
            self._last_checkpoint(set(), self._dirty_shards & names)
        self._dirty_shards -= names
        for name in names:
            self.shards.pop(name, None)
            self.merge_offsets.pop(name, None)
        log.info("partials partitions handed over: %s", sorted(names))

    # -- outages: back to the checkpoints, read again from their offsets --------------------------------

    def _restore(self) -> None:
        """Every owned partition as its last checkpoint left it (kept in memory), both stages; a retry reads
        each again from the checkpoint's offset (see :meth:`_wait`)."""
        group = self.config.kafka.group_id
        self._since = {}
        for name in self.source.assigned - self.source.held:
            offset, state = self._kept.get(f"{group}/{name}", (None, None))
            self.stage1.restore(name, state)
            if offset is None:
                self.offsets.pop(name, None)
            else:
                self.offsets[name] = offset
            self._since[split_partition_name(name)] = OFFSET_BEGINNING if offset is None else offset
        self._dirty.clear()
        self._batch_offsets = {}
        self.merge_source.pause()
        expected = frozenset(self.source.expected) or None
        for name in list(self.shards):
            offset, state = self._kept.get(f"{group}.merge/{name}", (None, None))
            shard = self.shards[name] = MergeShard(self.registry, expected)
            if state is not None:
                shard.restore(state)
            if offset is None:
                self.merge_offsets.pop(name, None)
            else:
                self.merge_offsets[name] = offset
        self._dirty_shards.clear()

    def step(self) -> BatchReport:
        if (self.source.held or self.merge_source.held) and self._retry_at is None:
            self._load_held()
        return super().step()

    def _wait(self) -> BatchReport:
        self.merge_source.consumer.consume(self.config.kafka.batch_size, 0)  # paused: kept in its group
        report = super()._wait()
        if self._retry_at is None:  # the retry: stage 2 reads its partials again from the checkpoints too
            self.merge_source.resume()
            self.merge_source.seek({split_partition_name(name): self.merge_offsets.get(name, OFFSET_BEGINNING)
                                    for name in self.shards})
        return report

    def close(self) -> None:
        self.merge_source.close()
