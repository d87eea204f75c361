"""The consumer loop of ``driftline run``: poll a batch, decode it, hand it to the
:class:`~driftline.streaming.handler.BatchHandler`, deliver the outcome
(:class:`~driftline.streaming.delivery.Delivery`), checkpoint every ``kafka.checkpoint_interval``. An outage
(:func:`~driftline.streaming.outages.transient`) pauses consumption, rewinds the handler to its last
checkpoint and retries after a backoff; all timing is on the one injected clock (docs/service.md)."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from driftline.config import Config
from driftline.connectors.clickhouse import StoreUnavailable
from driftline.connectors.formats.batch_decode import BatchDecoder
from driftline.connectors.messages import MessageBatch, partition_name
from driftline.outcome import StepResult, Totals
from driftline.protocols import Source
from driftline.streaming.delivery import Delivery
from driftline.streaming.handler import BatchHandler
from driftline.streaming.outages import TRANSIENT, Backoff, Health, transient

log = logging.getLogger("driftline.service")


@dataclass
class BatchReport:
    messages: int = 0
    step: StepResult = field(default_factory=StepResult)
    dead_letters: int = 0


class ConsumerLoop:
    def __init__(self, config: Config, source: Source, handler: BatchHandler, delivery: Delivery,
                 clock: Callable[[], float] = time.time, decoder: BatchDecoder | None = None) -> None:
        self.config, self.source, self.handler, self.delivery, self.clock = config, source, handler, delivery, clock
        self.decoder = decoder if decoder is not None else BatchDecoder(config.kafka)
        self.health: Health = delivery.health
        self.backoff = Backoff(config.kafka.retry_backoff / 1000, config.kafka.retry_backoff_max / 1000)
        self.counters = Totals()
        """What this process has counted, monotonic: every batch that went through added once, a batch
        redone after an outage added again (for counters, e.g. Prometheus'). :attr:`totals` are the
        state's own counts instead: set back to the checkpoint's with it."""
        self._started = False
        self._retry_at: float | None = None
        """While paused: when (the service's clock) to resume from the last checkpoint."""
        self._attempts = 0
        self._checkpointed_at = clock()

    @property
    def totals(self) -> Totals:
        return self.handler.totals

    @property
    def offsets(self) -> dict[str, int]:
        """The main source's delivered offsets, by partition."""
        return self.handler.offsets.offsets

    def step(self) -> BatchReport:
        """One batch: consumed, delivered, checkpointed when due. While paused by an outage: one poll
        (nothing is consumed, the group membership is kept), and the retry once it is due."""
        if self._retry_at is not None:
            return self._wait()
        if not self._started and not self._start():
            return BatchReport()
        self.handler.prepare(self.clock())
        polled = self.source.poll_batch()
        now = self.clock()
        batch = self.source.take(polled, now)  # ends of partitions noted, and dropped; idle timers
        counted = copy.deepcopy(self.handler.totals)
        try:
            report = self.handle(batch, now)
        except TRANSIENT as exc:
            reason = transient(exc)
            if reason is None:
                raise
            self._pause(reason)
            return BatchReport()
        self.counters.add(self.handler.totals.since(counted))
        return report

    def _start(self) -> bool:
        """The handler started (its checkpoint read); with the store away, an outage like any other."""
        try:
            self.handler.start()
        except StoreUnavailable as exc:
            self._pause(f"store unavailable at the start ({exc.reason}): {exc}")
            return False
        self._started = True
        return True

    def handle(self, batch: MessageBatch, now: float) -> BatchReport:
        """One consumed batch: decoded, handled, delivered, checkpointed when due (a step after its poll)."""
        self.handler.offsets.read(batch)
        events, bad = self.decoder.decode(batch)
        outcome = self.handler.handle(batch, events, bad, now)
        self.delivery.deliver(outcome, batch, self.handler, now)
        if self.clock() - self._checkpointed_at >= self.config.kafka.checkpoint_interval / 1000:
            self.checkpoint()
        if self.health.paused and len(batch):  # (right after a retry's seek, a poll may bring nothing yet)
            log.info("store and broker answer again after %d failures: consumption goes on", self._attempts)
            self.health.paused = False
            self.backoff.reset()
        return BatchReport(outcome.messages, outcome.step, len(outcome.step.bad))

    def _pause(self, reason: str) -> None:
        """Stop consuming, go back to the last checkpoint's state, and schedule the retry."""
        if not self.health.paused:
            self.health.outages += 1
            self._attempts = 0
        self.health.paused, self.health.reason = True, reason
        self.health.retries += 1
        self._attempts += 1
        delay = self.backoff.failed()
        log.warning("%s; consumption paused, redone from the last checkpoint in %.1f s (failure %d of this "
                    "outage)", reason, delay, self._attempts)
        self.source.pause()
        self.delivery.discard()
        self.handler.rewind()
        self._retry_at = self.clock() + delay

    def _wait(self) -> BatchReport:
        self.handler.keep_alive()
        self.handler.offsets.polled_while_paused(self.source.poll_batch())  # (anything consumed is read again)
        assert self._retry_at is not None
        if self.clock() >= self._retry_at:
            self._retry_at = None
            since = self.handler.offsets.since
            self.source.resume()
            self.source.seek(since)
            self.handler.resume()
            log.info("retrying from the last checkpoint: %d partitions read again from %s", len(since),
                     {partition_name(t, p): o for (t, p), o in sorted(since.items())})
        return BatchReport()

    def checkpoint(self) -> None:
        """The handler's checkpoint, then its offsets committed: a restart goes on from here. Called every
        ``kafka.checkpoint_interval`` and when stopping."""
        self._checkpointed_at = self.clock()
        self.delivery.checkpoint(self.handler)

    def run(self, stop: threading.Event, on_batch: Callable[[BatchReport], None] | None = None) -> None:
        """Step until ``stop`` is set; the batch in hand is finished (delivered, committed) first."""
        while not stop.is_set():
            report = self.step()
            if on_batch is not None and report.messages:
                on_batch(report)
        if self._retry_at is None and self._started:  # (while paused, the last checkpoint is where a restart goes on)
            try:
                self.checkpoint()
            except StoreUnavailable as exc:
                log.warning("no checkpoint at stop, the store is unavailable (%s): a restart redoes what was "
                            "consumed since the last one", exc)
