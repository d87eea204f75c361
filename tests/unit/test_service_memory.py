"""The single-stage service without a broker or a store (:mod:`driftline.testing`): an outage of the store
mid-stream, and a member that dies between checkpoints, leave the same rows as a run without either; the
retry waits its backoff on the service's own clock; the process's counters never go backwards while
the restorable totals go back to the checkpoint's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.config import Config
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.service import Service
from driftline.testing import ManualClock, MemoryPublisher, MemorySource, MemoryStore

T0 = 1_767_225_600_000
MINUTE = 60_000
TOPIC = "scoring"
MINUTES = 8


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("profiles") / "m-1.json"
    save_profile(build_profile({"x": rng.normal(size=5_000), "score": rng.random(5_000)}, model="m",
                               model_version="1", score_column="score"), path)
    return Config.model_validate({
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "m", "references": {"1": str(path)}, "policy": {"min_samples": 10}}],
        "kafka": {"topics": [{"topic": TOPIC}], "checkpoint_interval": "3s", "retry_backoff": "10s"},
    })


def events(partition: int, minute: int) -> list[dict[str, Any]]:
    """A minute of one partition's traffic; the second half of the run scores higher (an alert)."""
    rng = np.random.default_rng([partition, minute])
    shift = 0.4 if minute >= MINUTES // 2 else 0.0
    return [{"request_id": f"p{partition}m{minute}e{i}", "model": "m", "model_version": "1",
             "event_time": T0 + minute * MINUTE + i * 600, "features": {"x": float(rng.normal() + 3 * shift)},
             "score": float(min(rng.random() + shift, 1.0))} for i in range(100)]


class Run:
    def __init__(self, config: Config, store: MemoryStore | None = None, log: Any = None) -> None:
        self.config, self.clock = config, ManualClock()
        self.store = store if store is not None else MemoryStore()
        self.source = MemorySource(config, TOPIC, 2)
        if log is not None:  # (another member of the group, on the same partitions)
            self.source.memory.log = log
        self.service = Service(config, self.store, self.source, MemoryPublisher(), clock=self.clock)
        self.counted: list[int] = []

    def step(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.service.step()
        self.counted.append(self.service.counters.events)

    def minute(self, m: int) -> None:
        for p in range(2):
            self.source.produce(p, events(p, m))
        self.step()


def clean(config: Config) -> Run:
    run = Run(config)
    for m in range(MINUTES):
        run.minute(m)
    run.step()
    return run


def test_a_store_outage_mid_stream_leaves_the_same_rows(config: Config) -> None:
    expected = clean(config)
    assert len(expected.store.windows) == MINUTES - 1 and expected.store.alerts  # the comparison means something
    run = Run(config)
    for m in range(4):
        run.minute(m)
    run.store.fail_next(1)
    totals_before = run.service.pipeline.totals.events
    run.minute(4)  # the batch fails: paused, back to the last checkpoint's state
    assert run.service.health.paused and run.service.health.outages == 1
    assert run.service.pipeline.totals.events < totals_before  # the restorable totals went back …
    for m in range(5, MINUTES):
        run.minute(m)  # (produced meanwhile; nothing is consumed while paused)
    assert run.service.health.paused  # the backoff (10 s) runs on the service's clock: 3 s have passed
    run.step(10.0)  # the retry: everything since the checkpoint read again
    run.step()
    run.step()
    assert not run.service.health.paused
    assert run.store.rows() == expected.store.rows()
    assert run.counted == sorted(run.counted)  # … the process's counters never did
    assert run.service.counters.events > expected.service.counters.events  # (a redone batch counts again)


def test_a_member_dying_between_checkpoints_leaves_the_same_rows(config: Config) -> None:
    expected = clean(config)
    first = Run(config)
    for m in range(5):
        first.minute(m)
    assert first.store.checkpoints and first.service.seq >= 1
    # first dies (no checkpoint at stop); another member starts from the store's checkpoint
    second = Run(config, first.store, first.source.memory.log)
    for m in range(5, MINUTES):
        second.minute(m)
    second.step()
    assert second.store.rows() == expected.store.rows()
