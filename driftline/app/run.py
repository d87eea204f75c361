"""``driftline run``: the Kafka service wired up. Topics checked, the store opened, the consumers, producer
and fetcher made, the batch handler chosen by ``kafka.stages`` (:func:`consumer_loop`, outside both
handlers), run until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from driftline.app.replay import open_store
from driftline.app.runtime import settle_process
from driftline.config import Config
from driftline.connectors.kafka.admin import checked_topics
from driftline.connectors.kafka.fetch import MessageFetcher
from driftline.connectors.kafka.publish import PublishError, Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.protocols import ControlSink, Sink, Store
from driftline.registry import ModelRegistry
from driftline.streaming.delivery import Delivery
from driftline.streaming.handler import BatchHandler
from driftline.streaming.loop import BatchReport, ConsumerLoop
from driftline.streaming.outages import Health
from driftline.streaming.single_stage import SingleStageHandler
from driftline.streaming.two_stage import TwoStageHandler, merge_settings

log = logging.getLogger("driftline.service")


def consumer_loop(config: Config, store: Store, source: KafkaSource, publisher: ControlSink, *,
                  clock: Callable[[], float] = time.time, fetcher: MessageFetcher | None = None,
                  merge_source: KafkaSource | None = None, registry: ModelRegistry | None = None,
                  sinks: Sequence[Sink] = ()) -> ConsumerLoop:
    """The service of ``config.kafka.stages`` over these clients. Two stages read the partials topic with
    ``merge_source`` (made here when not given: the caller closes ``source`` and it). ``sinks``: more sinks
    of every batch's outcome, after the store and the control topic."""
    registry = registry if registry is not None else ModelRegistry(config)
    delivery = Delivery(config.kafka, store, publisher, fetcher if fetcher is not None else MessageFetcher(config.kafka),
                        Health(), sinks)
    handler: BatchHandler
    if config.kafka.stages == "two":
        merge_source = merge_source if merge_source is not None else KafkaSource(merge_settings(config.kafka))
        handler = TwoStageHandler(config, store, registry, source, merge_source, delivery.commit)
    else:
        handler = SingleStageHandler(config, store, registry, source)
    return ConsumerLoop(config, source, handler, delivery, clock)


def run_service(config: Config, on_batch: Callable[[BatchReport], None] | None = None) -> None:
    """The ``driftline run`` entry point: SIGTERM and SIGINT finish the current batch, then stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    limits = checked_topics(config.kafka, stop)  # every topic there (or created), else MissingTopics names them
    store = open_store(config)
    source = KafkaSource(config.kafka)
    merge_source = KafkaSource(merge_settings(config.kafka)) if config.kafka.stages == "two" else None
    publisher = Publisher(config.kafka, limits)
    fetcher = MessageFetcher(config.kafka)
    try:
        loop = consumer_loop(config, store, source, publisher, fetcher=fetcher, merge_source=merge_source)
        settle_process()
        loop.run(stop, on_batch)
    finally:
        source.close()
        if merge_source is not None:
            merge_source.close()
        fetcher.close()
        try:
            publisher.flush(config.kafka.publish_timeout / 1000)
        except PublishError as exc:  # the batches they belong to are not committed: they are redone
            log.warning("records left unpublished at shutdown: %s", exc)
        store.close()


def describe(report: BatchReport) -> dict[str, Any]:
    return {"messages": report.messages, "windows": len(report.step.reports), "alerts": len(report.step.alerts),
            "rollback_requests": len(report.step.rollbacks), "version_changes": len(report.step.version_changes),
            "dead_letters": report.dead_letters}
