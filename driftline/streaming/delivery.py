"""The one delivery order of a batch, written once for both service shapes: sinks (the store, the
control topic) → produce (partials, dead letters) → flush (every record acknowledged) → what the broker
refused recorded → checkpoint → commit. A failed commit is counted in :class:`~driftline.streaming.outages.Health`,
never fatal: the checkpoint holds the offsets."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaException

from driftline.config import KafkaConfig
from driftline.connectors.kafka.fetch import MessageFetcher
from driftline.connectors.messages import MessageBatch
from driftline.protocols import ControlSink, Sink, Store
from driftline.sinks import ControlTopicSink, StoreSink
from driftline.streaming.dead_letters import DeadLetterSink
from driftline.streaming.handler import BatchHandler, Commit, Outcome
from driftline.streaming.outages import Health

log = logging.getLogger("driftline.service")


class Delivery:
    def __init__(self, config: KafkaConfig, store: Store, publisher: ControlSink, fetcher: MessageFetcher,
                 health: Health, sinks: Sequence[Sink] = ()) -> None:
        """``sinks``: more sinks of each batch's outcome, after the store and the control topic."""
        self.config, self.store, self.publisher, self.health = config, store, publisher, health
        self.sinks: list[Sink] = [StoreSink(store), ControlTopicSink(publisher), *sinks]
        self.dead_letters = DeadLetterSink(publisher, fetcher)

    def deliver(self, outcome: Outcome, batch: MessageBatch, handler: BatchHandler, now: float) -> None:
        """Steps 1-3 of the order: the outcome written, produced and acknowledged; then ``handler``'s
        offsets of the batch may be checkpointed."""
        for sink in self.sinks:
            sink.write(outcome.step)
        for key, value in outcome.partials:
            self.publisher.partial(key, value)
        self.dead_letters.write(outcome.step.bad, batch)
        self.publisher.flush(self.config.publish_timeout / 1000)
        self._record_undeliverable(now)
        handler.delivered()

    def _record_undeliverable(self, now: float) -> None:
        """Dead letters the broker refused (:attr:`Publisher.undeliverable`) into the store and the audit log,
        before the offsets that passed them are checkpointed and committed."""
        letters = self.publisher.take_undeliverable()
        if letters:
            self.store.write_undeliverable(letters, int(now * 1000))
            self.health.undeliverable_dead_letters += len(letters)

    def discard(self) -> None:
        """The batch is redone: the dead letters the broker refused will be sent again."""
        self.publisher.take_undeliverable()

    def checkpoint(self, handler: BatchHandler) -> None:
        """Steps 4-5: ``handler``'s checkpoint into the store, then the offsets it covers committed."""
        self.commit(handler.checkpoint())

    def commit(self, commits: list[Commit]) -> None:
        try:
            for source, offsets in commits:
                source.commit_offsets(offsets)
        except KafkaException as exc:  # the checkpoint holds the offsets: a restart starts from it
            self.health.commit_failures += 1
            self.health.reason = f"commit failed: {exc}"
            log.warning("offset commit failed (%s); the checkpoint holds the offsets, the next commit covers "
                        "them", exc)
