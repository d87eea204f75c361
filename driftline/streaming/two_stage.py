"""The two-stage service's batches (``kafka.stages: two``, docs/scaling.md): several members of one consumer
group give the windows one member gives. Stage 1 (:mod:`driftline.stage`) counts each source partition's
events into panes and hands out partials records; stage 2 (:mod:`driftline.merge`) adds up what has
arrived on the partials partitions this member's ``<group_id>.merge`` consumer owns, and decides. One
checkpoint per partition (source and partials), loaded when the partition is assigned here, written
when it is taken away; while the store is away, partitions assigned are held (owned, not read)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING

from driftline.config import Config, JsonTopic, KafkaConfig
from driftline.connectors.clickhouse import StoreUnavailable
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.messages import MessageBatch, split_partition_name
from driftline.events import BadEvent, Events
from driftline.merge import MergeShard
from driftline.outcome import StepResult, Totals
from driftline.protocols import Store
from driftline.registry import ModelRegistry
from driftline.stage import PartialRecord, StageOne
from driftline.streaming.handler import Commit, Outcome
from driftline.streaming.offsets import OffsetTracker

log = logging.getLogger("driftline.two_stage")

Loader = Callable[[str], int]
"""Loads one partition's checkpoint; returns where to read it from."""


def merge_settings(kafka: KafkaConfig) -> KafkaConfig:
    """The stage-2 consumer's settings: group ``<group_id>.merge`` on the partials topic."""
    return kafka.model_copy(update={"group_id": f"{kafka.group_id}.merge",
                                    "topics": (JsonTopic(topic=kafka.partials_topic),)})


def _load_or_hold(names: list[str], load: Loader, source: KafkaSource) -> bool:
    """Each partition loaded and released to be read; from the first the store cannot answer for, the rest
    are held. Whether every one was loaded."""
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


class TwoStageHandler:
    def __init__(self, config: Config, store: Store, registry: ModelRegistry, source: KafkaSource,
                 merge_source: KafkaSource, commit: Callable[[list[Commit]], None]) -> None:
        """``commit``: how the offsets of a last checkpoint (partitions taken away) are committed."""
        self.config, self.store, self.registry, self.commit = config, store, registry, commit
        self.source, self.merge_source = source, merge_source
        self.stage1 = StageOne(registry, len(source.expected))
        self.shards: dict[str, MergeShard] = {}
        """Partials partition → its stage-2 state."""
        self.offsets = OffsetTracker()
        self.merge_offsets = OffsetTracker()
        """Partials partition → the offset after its last record added up."""
        self.totals = Totals()
        """(Not checkpointed: after an outage they go on, the batches redone counted again.)"""
        self._seqs: dict[str, int] = {}
        """Checkpoint key → the seq of its newest checkpoint."""
        self._kept: dict[str, tuple[int | None, dict[str, Any] | None]] = {}
        """Checkpoint key → the (offset, state) of its newest checkpoint (None, None: none), to go back to."""
        self._held_retry_at = 0.0
        """When partitions held at their assignment are next tried (the service's clock, from :meth:`prepare`)."""
        source.before_assign, source.before_revoke = self._load_partitions, self._hand_over_partitions
        merge_source.before_assign, merge_source.before_revoke = self._load_shards, self._hand_over_shards

    def start(self) -> None:
        pass  # (each partition's checkpoint is loaded when it is assigned)

    def prepare(self, now: float) -> None:
        """Partitions held since their assignment (the store was away): loaded now if the store answers,
        then read from their checkpoints. Tried once per ``kafka.retry_backoff``."""
        if not (self.source.held or self.merge_source.held) or now < self._held_retry_at:
            return
        self._held_retry_at = now + self.config.kafka.retry_backoff / 1000
        for source, load in ((self.source, self._load_partition), (self.merge_source, self._load_shard)):
            if source.held and not _load_or_hold(sorted(source.held), load, source):
                return
        log.info("held partitions loaded: every assigned partition is read")

    def handle(self, batch: MessageBatch, events: Events, bad: list[BadEvent], now: float) -> Outcome:
        counted = self.stage1.count(events, int(now * 1000))
        totals = self.totals
        totals.events += len(events) + len(bad)
        totals.accepted += counted.accepted
        totals.late += counted.late
        totals.duplicates += counted.duplicates
        bad = bad + counted.bad
        for item in bad:
            totals.bad[item.stage] += 1
        merged, step = self._merge()
        step.bad = bad
        return Outcome(step, [(record.key, record.encode()) for record in counted.records], len(batch) + merged)

    def _merge(self) -> tuple[int, StepResult]:
        """Stage 2 over the partials records that have arrived; returns how many, and what closed."""
        batch = self.merge_source.take(self.merge_source.poll_ready())
        self.merge_offsets.read(batch)
        step = StepResult()
        per_shard: dict[str, StepResult] = {}
        for value, name in zip(batch.values, batch.sources, strict=True):
            shard = self.shards.get(name)
            if shard is None or value is None:  # (not assigned any more)
                continue
            shard.add(PartialRecord.decode(value), per_shard.setdefault(name, StepResult()))
        for name, result in sorted(per_shard.items()):
            self.shards[name].decide(result, self.totals)
            step.absorb(result)
        return len(batch), step

    def delivered(self) -> None:
        self.offsets.delivered()
        self.merge_offsets.delivered()

    # -- checkpoints, one per partition -------------------------------------------------------------

    def checkpoint(self) -> list[Commit]:
        """Checkpoints of the partitions delivered since their last one; returns their offsets to commit."""
        return self._checkpoint(self.offsets.dirty & self.source.assigned, self.merge_offsets.dirty & self.shards.keys())

    def _checkpoint(self, partitions: set[str], shards: set[str]) -> list[Commit]:
        group = self.config.kafka.group_id
        offsets, merge_offsets = self.offsets.offsets, self.merge_offsets.offsets
        rows = [(f"{group}/{name}", name, offsets[name], self.stage1.snapshot(name)) for name in sorted(partitions)]
        rows += [(f"{group}.merge/{name}", name, merge_offsets[name], self.shards[name].snapshot())
                 for name in sorted(shards)]
        if not rows:
            return []
        checkpoints = [(key, self._seqs.get(key, 0) + 1, {name: offset}, state) for key, name, offset, state in rows]
        self.store.write_checkpoints(checkpoints)
        self._seqs.update((key, seq) for key, seq, _, _ in checkpoints)
        self._kept.update((key, (offset, state)) for key, _, offset, state in rows)
        self.offsets.checkpointed(partitions)
        self.merge_offsets.checkpointed(shards)
        return [(self.source, {name: offsets[name] for name in partitions}),
                (self.merge_source, {name: merge_offsets[name] for name in shards})]

    def _stored(self, key: str) -> tuple[int, int, dict[str, Any]] | None:
        """(seq, offset, state) of a partition's checkpoint."""
        found = self.store.read_checkpoint(key)
        if found is None:
            return None
        seq, offsets, state = found
        return seq, next(iter(offsets.values())), state

    def _load(self, key: str, tracker: OffsetTracker, name: str) -> dict[str, Any] | None:
        """One partition's checkpoint read (its state, None without one); its offset tracked from there."""
        found = self._stored(key)
        self._kept[key] = (None, None) if found is None else (found[1], found[2])
        if found is None:
            tracker.start(name, None)
            return None
        self._seqs[key], offset, state = found
        tracker.start(name, offset)
        return state

    def _load_partitions(self, names: set[str]) -> None:
        """Source partitions assigned: each starts from its checkpoint (state and offset), else anew. While
        the store is away they are held (assigned, not read) and loaded later (:meth:`prepare`)."""
        _load_or_hold(sorted(names), self._load_partition, self.source)
        log.info("source partitions assigned: %s", sorted(names))

    def _load_partition(self, name: str) -> int:
        self.stage1.restore(name, self._load(f"{self.config.kafka.group_id}/{name}", self.offsets, name))
        start = self.offsets.offsets.get(name, OFFSET_BEGINNING)
        self.source.start_offsets[name] = start
        return start

    def _hand_over_partitions(self, names: set[str], lost: bool) -> None:
        """Source partitions taken away: a last checkpoint of what was read (unless they were lost: another
        member may own them already), then forgotten here."""
        if not lost:
            self._last_checkpoint(self.offsets.dirty & names, set())
        for name in names:
            self.stage1.drop(name)
        self.offsets.forget(names)
        log.info("source partitions handed over: %s", sorted(names))

    def _load_shards(self, names: set[str]) -> None:
        _load_or_hold(sorted(names), self._load_shard, self.merge_source)
        log.info("partials partitions assigned: %s", sorted(names))

    def _load_shard(self, name: str) -> int:
        state = self._load(f"{self.config.kafka.group_id}.merge/{name}", self.merge_offsets, name)
        self.shards[name] = self._shard(state)
        start = self.merge_offsets.offsets.get(name, OFFSET_BEGINNING)
        self.merge_source.start_offsets[name] = start
        return start

    def _shard(self, state: dict[str, Any] | None) -> MergeShard:
        shard = MergeShard(self.registry, frozenset(self.source.expected) or None)
        if state is not None:
            shard.restore(state)
        return shard

    def _hand_over_shards(self, names: set[str], lost: bool) -> None:
        if not lost:
            self._last_checkpoint(set(), self.merge_offsets.dirty & names)
        for name in names:
            self.shards.pop(name, None)
        self.merge_offsets.forget(names)
        log.info("partials partitions handed over: %s", sorted(names))

    def _last_checkpoint(self, partitions: set[str], shards: set[str]) -> None:
        """The checkpoint of partitions being taken away; without the store, none: the next owner reads them
        again from their previous checkpoint, as after a crash (stage 2 adds each pane once)."""
        try:
            self.commit(self._checkpoint(partitions, shards))
        except StoreUnavailable as exc:
            log.warning("partitions handed over without a last checkpoint (%s): %s", exc,
                        sorted(partitions | shards))

    # -- outages: back to the checkpoints, read again from their offsets --------------------------------

    def rewind(self) -> None:
        """Every owned partition as its last checkpoint left it (kept in memory), both stages; the retry
        reads each again from the checkpoint's offset."""
        group = self.config.kafka.group_id
        offsets, since = {}, {}
        for name in self.source.assigned - self.source.held:
            offset, state = self._kept.get(f"{group}/{name}", (None, None))
            self.stage1.restore(name, state)
            if offset is not None:
                offsets[name] = offset
            since[split_partition_name(name)] = OFFSET_BEGINNING if offset is None else offset
        self.offsets.rewind(offsets, since)
        self.merge_source.pause()
        merge_offsets, merge_since = {}, {}
        for name in list(self.shards):
            offset, state = self._kept.get(f"{group}.merge/{name}", (None, None))
            self.shards[name] = self._shard(state)
            if offset is not None:
                merge_offsets[name] = offset
            merge_since[split_partition_name(name)] = OFFSET_BEGINNING if offset is None else offset
        self.merge_offsets.rewind(merge_offsets, merge_since)

    def keep_alive(self) -> None:
        self.merge_source.poll_ready()  # paused: nothing comes, but the consumer stays in its group

    def resume(self) -> None:
        """Stage 2 reads its partials again from the checkpoints too."""
        self.merge_source.resume()
        self.merge_source.seek(self.merge_offsets.since)
