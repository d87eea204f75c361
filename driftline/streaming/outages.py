"""Outages: which failures pass (:func:`transient`), how long to wait before a retry (:class:`Backoff`), and
what an exporter shows of them (:class:`Health`)."""

from __future__ import annotations

from dataclasses import dataclass

from driftline.connectors.clickhouse import StoreUnavailable
from driftline.connectors.formats.codecs import RegistryUnavailable
from driftline.connectors.kafka.publish import PublishError

TRANSIENT = (StoreUnavailable, PublishError, RegistryUnavailable)
"""The errors a batch may fail with and be redone after a pause (:func:`transient` says which really pass)."""


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


def transient(exc: BaseException) -> str | None:
    """Why a batch's failure is worth a retry, or None when it must stop the service."""
    if isinstance(exc, StoreUnavailable):
        return f"store unavailable ({exc.reason}): {exc}"
    if isinstance(exc, PublishError) and exc.transient:
        return f"broker did not acknowledge the batch's records: {exc.reason}"
    if isinstance(exc, RegistryUnavailable):
        return f"schema registry unavailable: {exc}"
    return None
