"""``driftline run``: the Kafka service wired up. Topics checked, the store opened, the consumer, producer
and fetcher made, the single-stage :class:`~driftline.service.Service` or the two-stage
:class:`~driftline.two_stage.TwoStageService` chosen by ``kafka.stages``, run until SIGTERM or SIGINT.

The services themselves never choose between them (they are chosen here, outside both)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from driftline.config import Config
from driftline.connectors.kafka import KafkaSource
from driftline.connectors.kafka_admin import checked_topics
from driftline.connectors.kafka_fetch import MessageFetcher
from driftline.connectors.kafka_publish import PublishError, Publisher
from driftline.replay import open_store
from driftline.runtime import settle_process
from driftline.service import BatchReport, Service
from driftline.two_stage import TwoStageService, merge_settings

log = logging.getLogger("driftline.service")


def run_service(config: Config, on_batch: Callable[[BatchReport], None] | None = None) -> None:
    """The ``driftline run`` entry point: SIGTERM and SIGINT finish the current batch, then stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    limits = checked_topics(config.kafka, stop)  # every topic there (or created), else MissingTopics names them
    store = open_store(config)
    source = KafkaSource(config.kafka)
    publisher = Publisher(config.kafka, limits)
    fetcher = MessageFetcher(config.kafka)
    merge_source = None
    try:
        if config.kafka.stages == "two":
            merge_source = KafkaSource(merge_settings(config.kafka))
            service: Service = TwoStageService(config, store, source, publisher, fetcher=fetcher,
                                               merge_source=merge_source)
        else:
            service = Service(config, store, source, publisher, fetcher=fetcher)
        settle_process()
        service.run(stop, on_batch)
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
