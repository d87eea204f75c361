"""Runs of the consumer loop on in-memory topics, a store and a manual clock (:mod:`driftline.testing`),
shared by the single- and two-stage tests: a seeded stream of one model whose second half drifts (an
alert), and :class:`Member`, one member of the consumer group stepped by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from driftline.app.run import consumer_loop
from driftline.config import Config
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.testing import ManualClock, MemoryPublisher, MemorySink, MemorySource, MemoryStore

T0 = 1_767_225_600_000
MINUTE = 60_000
TOPIC, PARTIALS = "scoring", "partials"
PARTITIONS = 2
MINUTES = 8


def memory_config(folder: Path, windows: dict[str, Any] | None = None, **kafka: Any) -> Config:
    rng = np.random.default_rng(1)
    path = folder / "m-1.json"
    save_profile(build_profile({"x": rng.normal(size=5_000), "score": rng.random(5_000)}, model="m",
                               model_version="1", score_column="score"), path)
    return Config.model_validate({
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None, **(windows or {})},
        "models": [{"name": "m", "references": {"1": str(path)}, "policy": {"min_samples": 10}}],
        "kafka": {"topics": [{"topic": TOPIC}], "checkpoint_interval": "3s", "retry_backoff": "10s",
                  "partials_topic": PARTIALS, **kafka},
    })


def events(partition: int, minute: int) -> list[dict[str, Any]]:
    """A minute of one partition's traffic; the second half of the run scores higher (an alert)."""
    rng = np.random.default_rng([partition, minute])
    shift = 0.4 if minute >= MINUTES // 2 else 0.0
    return [{"request_id": f"p{partition}m{minute}e{i}", "model": "m", "model_version": "1",
             "event_time": T0 + minute * MINUTE + i * 600, "features": {"x": float(rng.normal() + 3 * shift)},
             "score": float(min(rng.random() + shift, 1.0))} for i in range(100)]


class Member:
    """One member of the group: its consumer loop over the in-memory topics. A member made with ``peer``
    is another process of the same group: same topics, same store, same clock; ``here`` and
    ``partials_here`` are the partitions the group hands it at its first poll (every one by default)."""

    def __init__(self, config: Config, peer: Member | None = None, here: list[int] | None = None,
                 partials_here: list[int] | None = None, clock: ManualClock | None = None) -> None:
        self.clock = peer.clock if peer is not None else clock if clock is not None else ManualClock()
        self.store = peer.store if peer is not None else MemoryStore()
        self.source = MemorySource(config, TOPIC, PARTITIONS, here)
        self.merge = MemorySource(config, PARTIALS, PARTITIONS, partials_here) if config.kafka.stages == "two" else None
        if peer is not None:
            self.source.share(peer.source)
            if self.merge is not None and peer.merge is not None:
                self.merge.share(peer.merge)
        self.publisher = MemoryPublisher(self.merge.memory if self.merge is not None else None)
        self.sink = MemorySink()
        self.loop = consumer_loop(config, self.store, self.source, self.publisher, clock=self.clock,
                                  merge_source=self.merge, sinks=[self.sink])
        self.counted: list[int] = []
        """The loop's event counter after each step."""

    def step(self, seconds: float = 1.0) -> int:
        self.clock.advance(seconds)
        messages = self.loop.step().messages
        self.counted.append(self.loop.counters.events)
        return messages

    def produce(self, minute: int) -> None:
        for p in range(PARTITIONS):
            self.source.produce(p, events(p, minute))

    def minute(self, minute: int) -> None:
        self.produce(minute)
        self.step()

    def drain(self, *others: Member, steps: int = 3) -> None:
        """Step this member and ``others`` in turn until ``steps`` rounds brought nothing."""
        quiet = 0
        while quiet < steps:
            quiet = quiet + 1 if not sum(member.step() for member in (self, *others)) else 0


def clean_run(config: Config) -> Member:
    """The run every disturbed one is compared with: one member, every minute in its own batch."""
    member = Member(config)
    for m in range(MINUTES):
        member.minute(m)
    member.drain()
    return member
