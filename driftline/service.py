"""``driftline run``: the Kafka service. Consume a batch, decode, run the pipeline, act, commit.

Delivery order of one batch, as :meth:`Service.step` does it:

1. decode every message (raw Avro a batch at a time, :mod:`driftline.connectors.avro_events`); what
   cannot be decoded or validated becomes a bad event;
2. run the pipeline (and the holds before and after it), then write what they produced — windows, late
   counts, alerts, rollback requests, change detections, version changes, the audit trail — to the store
   (:class:`~driftline.sinks.StoreSink`, idempotent inserts);
3. produce the alerts, rollback requests, change detections (early warnings) and version changes to the
   control topic and the bad events to the dead-letter topic, then flush the producer and check every
   record was acknowledged;
4. when ``kafka.checkpoint_interval`` has passed since the last one (and at every stop), write a
   checkpoint to the store: the offsets consumed so far and the state they leave (open windows, the
   join's waiting halves, the decisions' history, the score change watch);
5. only then commit those offsets, synchronously.

A restart restores the newest checkpoint and starts each partition at its offsets: a crash before 4
repeats what was consumed since the previous checkpoint, from its state (the idempotent store and the
deterministic ids on the control topic absorb the repetition); a crash between 4 and 5 goes on after
it. So open windows survive a crash with nothing lost and nothing counted twice, for one consumer per
group.

Outages do not stop the service. When 1–4 fail for a reason that passes — the store unreachable, timed
out or overloaded (:class:`~driftline.connectors.clickhouse.StoreUnavailable`), the broker not
acknowledging the control or dead-letter records within ``kafka.publish_timeout``
(:class:`~driftline.connectors.kafka_publish.PublishError`), the schema registry away — the batch is redone
from the last checkpoint, as a restart would, without leaving the process:

- consumption pauses (every assigned partition, and any assigned meanwhile); the service keeps
  polling, so it stays in its consumer group within ``max.poll.interval.ms``;
- the pipeline is rebuilt from the last checkpoint's state, kept in memory (the failed batch may have
  moved windows, the join and the decisions before the write failed);
- after a pause of ``kafka.retry_backoff``, doubled after each failed retry up to
  ``kafka.retry_backoff_max`` (each retry logged with its reason), consumption resumes from the
  checkpoint's offsets: every message read since it is read again.

Nothing is committed past the checkpoint meanwhile. A failed commit (5) is logged and counted, never
fatal: the checkpoint already holds the offsets, a restart starts from it, and the next commit
covers the batch. Any other error — a statement the store rejects, a schema mismatch, a fatal producer
error, a bug — stops the process loudly, before anything is committed. A dead letter the broker refuses
for what it is (too large even cut to the topic's ``max.message.bytes``, invalid for the topic) is not an
error of the batch: :class:`~driftline.connectors.kafka_publish.Publisher` retries it alone, then hands it back as
undeliverable, and :meth:`Service._record_undeliverable` writes it to the store and the audit log (before
the checkpoint that commits past it) and counts it in :attr:`Health.undeliverable_dead_letters`.

At start (:func:`run_service`) every topic is checked (:mod:`driftline.connectors.kafka_admin`): a missing
one stops the start at once, named, unless ``kafka.create_topics`` creates it. :attr:`Service.health` holds
what an exporter would show (paused, outages, retries, commit failures, the last reason).

Each partition keeps its own watermark: a model's windows close when every partition that carries
its events (and every assigned partition nothing has been read from yet) has moved past them, or is
*idle*: read to its end and without a new message for ``kafka.idle_after`` of the service's clock
(:mod:`driftline.connectors.partitions`). So a backlog handed out one partition at a time gives the
same windows as live traffic, and a partition read to its end minutes of event time ahead of the
others (a producer's backlog flushed after a broker outage, a slow producer) does not close their
windows early; a partition that has really stopped lets them close ``idle_after`` later. A message on
an idle partition makes it hold again (its events of windows closed meanwhile are counted late). The
partitions' states are not checkpointed: after a restart each is fresh (holding every model) until
read, and its idle timer starts anew. After a pause (an outage) or the consumer's report of a broker it
cannot reach, the first batch that brings anything restarts the timer of every partition at its end,
idle ones included, before it is counted: the producers' backlogs queued through an outage arrive one
partition after the other, and each partition behind gets ``idle_after`` to deliver its own.

Several consumers in one group: not with this service, whose checkpoint is one state per consumer
group; ``kafka.stages: two`` runs :class:`~driftline.two_stage.TwoStageService` instead, which
checkpoints per partition (docs/scaling.md). A partition that carried a model's events holds that
model's watermark while it is not assigned here. An outage keeps the state of the last checkpoint in
memory and re-reads everything since it, so a long outage costs a re-read of up to one checkpoint
interval, not more (nothing is consumed while paused). A
synchronous offset commit while the group coordinator is down blocks until librdkafka gives up (45 s
was seen with default settings) before it is logged; committing asynchronously would avoid the stall.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import KafkaException

from driftline.config import Config
from driftline.connectors.batch_decode import BatchDecoder
from driftline.connectors.clickhouse import StoreUnavailable
from driftline.connectors.codecs import RegistryUnavailable
from driftline.connectors.kafka import KafkaSource, MessageBatch, parse_origin, partition_name
from driftline.connectors.kafka_fetch import Fetched, MessageFetcher, describe_missing
from driftline.connectors.kafka_publish import PublishError
from driftline.connectors.partitions import Holding
from driftline.events import BadEvent, Events
from driftline.outcome import StepResult, Totals
from driftline.pipeline import Pipeline
from driftline.protocols import ControlSink, Store
from driftline.registry import ModelRegistry
from driftline.sinks import ControlTopicSink, StoreSink

log = logging.getLogger("driftline.service")
T = TypeVar("T")


@dataclass
class BatchReport:
    messages: int
    step: StepResult
    dead_letters: int


@dataclass
class Health:
    """The service's outage figures, for an exporter (gauges and counters) or a log line."""

    paused: bool = False
    """Consumption is paused: the store or the broker failed the last batch; a retry is due."""
    outages: int = 0
    """Times consumption paused (an outage is counted once however many retries it takes)."""
    retries: int = 0
    """Batches failed by a transient error (the first failure of an outage included)."""
    commit_failures: int = 0
    """Offset commits that failed (harmless: the checkpoint holds the offsets)."""
    reason: str = ""
    """Why the last batch failed, or the last commit."""
    undeliverable_dead_letters: int = 0
    """Dead letters the broker refused even cut to the topic's limit: recorded in the store and the audit log
    (``undeliverable_dead_letters``) instead, and their partitions went on."""


@dataclass
class _Checkpoint:
    """The newest checkpoint in the store, kept in memory to go back to."""

    seq: int
    offsets: dict[str, int]
    state: dict[str, Any]
    totals: Totals = field(default_factory=Totals)


class Backoff:
    """Capped exponential backoff: ``initial``, doubled after each failure up to ``cap`` (seconds)."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, max(cap, initial)
        self.next = initial

    def failed(self) -> float:
        delay, self.next = self.next, min(self.next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.next = self.initial


def _transient(exc: BaseException) -> str | None:
    """Why a batch's failure is worth a retry, or None when it must stop the service."""
    if isinstance(exc, StoreUnavailable):
        return f"store unavailable ({exc.reason}): {exc}"
    if isinstance(exc, PublishError) and exc.transient:
        return f"broker did not acknowledge the batch's records: {exc.reason}"
    if isinstance(exc, RegistryUnavailable):
        return f"schema registry unavailable: {exc}"
    return None


class Service:
    def __init__(self, config: Config, store: Store, source: KafkaSource, publisher: ControlSink,
                 clock: Callable[[], float] = time.time, fetcher: MessageFetcher | None = None) -> None:
        self.config = config
        self.store = store
        self.source = source
        self.publisher = publisher
        self.fetcher = fetcher if fetcher is not None else MessageFetcher(config.kafka)
        """Fetches back the messages of dead letters from earlier batches (connects on its first use)."""
        self.clock = clock
        self.registry = ModelRegistry(config)
        self.pipeline = Pipeline(config, self.registry)
        self.store_sink, self.control = StoreSink(store), ControlTopicSink(publisher)
        self.decoder = BatchDecoder(config.kafka)
        self.health = Health()
        self.backoff = Backoff(config.kafka.retry_backoff / 1000, config.kafka.retry_backoff_max / 1000)
        self._retry_at: float | None = None
        """While paused: when (the service's clock) to resume from the last checkpoint."""
        self.counters = Totals()
        """What this process has counted, monotonic: every batch that went through added once, a batch
        redone after an outage added again (for counters, e.g. Prometheus'). ``pipeline.totals`` are the
        state's own counts instead: set back to the checkpoint's with it."""
        self._attempts = 0
        self._since: dict[tuple[str, int], int] = {}
        """(topic, partition) → the first offset read since the last checkpoint: where a retry starts."""
        self.seq, self.offsets = 0, {}
        self._checkpointed_at = clock()
        self._uncommitted = False
        """Offsets consumed since the last checkpoint."""
        self._batch_offsets: dict[str, int] = {}
        """The offset after each partition's last message in the batch in hand."""
        checkpoint = self._patiently(lambda: store.read_checkpoint(config.kafka.group_id), "reading the checkpoint")
        if checkpoint is not None:  # go on where the last run left off: its open windows, its offsets
            self.seq, self.offsets, state = checkpoint
            self.pipeline.restore(copy.deepcopy(state))
            source.start_offsets = dict(self.offsets)
        else:
            state = self.pipeline.snapshot()
        self._good = _Checkpoint(self.seq, dict(self.offsets), state)

    def _patiently(self, call: Callable[[], T], what: str) -> T:
        """``call()``, retried with backoff while the store is unavailable (before consuming anything)."""
        while True:
            try:
                result = call()
            except StoreUnavailable as exc:
                delay = self.backoff.failed()
                log.warning("%s: store unavailable (%s): %s; retrying in %.1f s", what, exc.reason, exc, delay)
                time.sleep(delay)
                continue
            self.backoff.reset()
            return result

    def step(self) -> BatchReport:
        """One batch: consumed, persisted, published, checkpointed, committed. While paused by an outage:
        one poll (nothing is consumed, the group membership is kept), and the retry once it is due."""
        if self._retry_at is not None:
            return self._wait()
        polled = self.source.poll_batch()
        batch = self.source.take(polled, self.clock())  # ends of partitions noted, and dropped; idle timers
        waiting = self.source.before  # what the watermarks wait for before this batch's partitions count as read
        counted = copy.deepcopy(self.pipeline.totals)
        try:
            events, bad = self._decode(batch)
            report = self._process(batch, events, bad, waiting)
        except (StoreUnavailable, PublishError, RegistryUnavailable) as exc:
            reason = _transient(exc)
            if reason is None:
                raise
            self._pause(reason)
            return BatchReport(0, StepResult(), 0)
        self.counters.add(self.pipeline.totals.since(counted))
        return report

    def _read(self, messages: list[Any]) -> None:
        for message in messages:
            if message.error() is None:
                key = (message.topic(), message.partition())
                self._since[key] = min(self._since.get(key, message.offset()), message.offset())

    def _pause(self, reason: str) -> None:
        """Stop consuming, go back to the last checkpoint's state, and schedule the retry."""
        if not self.health.paused:
            self.health.outages += 1
            self._attempts = 0
        self.health.paused, self.health.reason = True, reason
        self.health.retries += 1
        self._attempts += 1
        delay = self.backoff.failed()
        log.warning("%s; consumption paused, redone from checkpoint %d in %.1f s (failure %d of this outage)",
                    reason, self._good.seq, delay, self._attempts)
        self.source.pause()
        self.publisher.take_undeliverable()  # (the batch is redone: its dead letters are sent again)
        self._restore()
        self._retry_at = self.clock() + delay

    def _restore(self) -> None:
        """The pipeline as the last checkpoint left it, rebuilt as a restart would (its profiles kept)."""
        pipeline = Pipeline(self.config, self.registry)
        pipeline.restore(copy.deepcopy(self._good.state))
        pipeline.totals = copy.deepcopy(self._good.totals)
        self.pipeline = pipeline
        self.seq, self.offsets = self._good.seq, dict(self._good.offsets)
        self._batch_offsets, self._uncommitted = {}, False

    def _wait(self) -> BatchReport:
        for message in self.source.poll_batch():  # paused: nothing is consumed; anything that was is read again
            if message.error() is None:
                self._read([message])
        assert self._retry_at is not None
        if self.clock() >= self._retry_at:
            self._retry_at = None
            self.source.resume()
            self.source.seek(self._since)
            log.info("retrying from checkpoint %d: %d partitions read again from %s", self._good.seq,
                     len(self._since), {partition_name(t, p): o for (t, p), o in sorted(self._since.items())})
        return BatchReport(0, StepResult(), 0)

    def _decode(self, batch: MessageBatch) -> tuple[Events, list[BadEvent]]:
        """Note where the batch's partitions end (the offsets to commit) and begin (where a retry starts
        reading again), then decode it (:class:`~driftline.connectors.batch_decode.BatchDecoder`)."""
        self._batch_offsets = batch.next_offsets()
        for key, offset in batch.first_offsets().items():
            self._since.setdefault(key, offset)
        return self.decoder.decode(batch)

    def _process(self, batch: MessageBatch, events: Events, bad: list[BadEvent], waiting: Holding) -> BatchReport:
        # The partitions to wait for: as they were before the batch (a partition first read in it still
        # holds the watermark while its events are counted), then as they are after it.
        before = self.pipeline.hold(*waiting)
        now = self.clock()
        result = self.pipeline.process(events, bad, now_ms=int(now * 1000), partitioned=True)
        after = self.pipeline.hold(*self.source.holding(now))
        result.absorb(before)
        result.absorb(after)
        self.store_sink.write(result)
        self.control.write(result)
        if result.bad:
            self._dead_letter(batch, result.bad)
        self.publisher.flush(self.config.kafka.publish_timeout / 1000)
        self.offsets.update(self._batch_offsets)
        self._uncommitted |= bool(self._batch_offsets)
        self._batch_offsets = {}
        self._batch_done(batch)
        return BatchReport(len(batch), result, len(result.bad))

    def _batch_done(self, batch: MessageBatch) -> None:
        """A batch went through: checkpoint when the interval has passed; a paused service goes on."""
        self._record_undeliverable()
        if self.clock() - self._checkpointed_at >= self.config.kafka.checkpoint_interval / 1000:
            self.checkpoint()
        if self.health.paused and len(batch):  # (right after a retry's seek, a poll may bring nothing yet)
            log.info("store and broker answer again after %d failures: consumption goes on", self._attempts)
            self.health.paused = False
            self.backoff.reset()

    def _record_undeliverable(self) -> None:
        """Dead letters the broker refused (:attr:`Publisher.undeliverable`) into the store and the audit log,
        before the offsets that passed them are checkpointed and committed."""
        letters = self.publisher.take_undeliverable()
        if letters:
            self.store.write_undeliverable(letters, int(self.clock() * 1000))
            self.health.undeliverable_dead_letters += len(letters)

    def _dead_letter(self, batch: MessageBatch, bad: list[BadEvent]) -> None:
        """Each bad event to the dead-letter topic with its message's value and key: from the batch in hand,
        else fetched back by offset (a join half that expired unmatched, a pair that failed validation a
        batch later), else with the reason it could not be (``driftline.payload.missing``)."""
        in_batch = {(m.topic(), m.partition(), m.offset()): m for m in batch.messages}
        positions = [parse_origin(item.origin) for item in bad]
        earlier = {p for p in positions if p is not None and p not in in_batch}
        fetched = self.fetcher.fetch(earlier) if earlier else Fetched()
        if fetched.missing:
            log.warning("%d dead letters go out without their original message: %s", len(fetched.missing),
                        describe_missing(fetched.missing))
        for item, position in zip(bad, positions):
            if position is None:  # (not from Kafka: nothing to fetch)
                self.publisher.dead_letter(item)
            elif (message := in_batch.get(position)) is not None:  # (a Message is falsy when empty)
                self.publisher.dead_letter(item, message.value(), message.key())
            elif position in fetched.found:
                self.publisher.dead_letter(item, *fetched.found[position])
            else:
                self.publisher.dead_letter(item, missing=fetched.missing.get(position, "not fetched"))

    def checkpoint(self) -> None:
        """The offsets consumed so far and the state they leave, into the store; then commit the offsets:
        a restart goes on from here. Called every ``kafka.checkpoint_interval`` and when stopping."""
        self._checkpointed_at = self.clock()
        if not self._uncommitted:
            return
        self.seq += 1
        state = self.pipeline.snapshot()
        self.store.write_checkpoint(self.config.kafka.group_id, self.seq, self.offsets, state)
        self._good = _Checkpoint(self.seq, dict(self.offsets), state, copy.deepcopy(self.pipeline.totals))
        self._since.clear()
        self.source.start_offsets = dict(self.offsets)  # where a partition handed back to this member starts
        self._uncommitted = False
        try:
            self.source.commit_offsets(self.offsets)
        except KafkaException as exc:  # the checkpoint holds the offsets: a restart starts from it
            self.health.commit_failures += 1
            self.health.reason = f"commit failed: {exc}"
            log.warning("offset commit failed (%s); the checkpoint holds the offsets, the next commit covers "
                        "them", exc)

    def run(self, stop: threading.Event, on_batch: Callable[[BatchReport], None] | None = None) -> None:
        """Step until ``stop`` is set; the batch in hand is finished (persisted, published, committed) first."""
        while not stop.is_set():
            report = self.step()
            if on_batch is not None and report.messages:
                on_batch(report)
        if self._retry_at is None:  # (while paused, the last checkpoint is where a restart goes on)
            try:
                self.checkpoint()
            except StoreUnavailable as exc:
                log.warning("no checkpoint at stop, the store is unavailable (%s): a restart redoes what was "
                            "consumed since the last one", exc)
