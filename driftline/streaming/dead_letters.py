"""The dead-letter topic's sink: each bad event with its message's value and key — from the batch in hand,
else fetched back by offset (a join half that expired unmatched, a pair that failed validation a batch
later), else with the reason it could not be (``driftline.payload.missing``)."""

from __future__ import annotations

import logging

from driftline.connectors.kafka.fetch import Fetched, MessageFetcher, describe_missing
from driftline.connectors.messages import MessageBatch
from driftline.events import BadEvent
from driftline.protocols import ControlSink

log = logging.getLogger("driftline.service")


class DeadLetterSink:
    def __init__(self, publisher: ControlSink, fetcher: MessageFetcher) -> None:
        self.publisher, self.fetcher = publisher, fetcher

    def write(self, bad: list[BadEvent], batch: MessageBatch) -> None:
        if not bad:
            return
        in_batch = {(m.topic(), m.partition(), m.offset()): m for m in batch.messages}
        positions = [item.at.message if item.at is not None else None for item in bad]
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
