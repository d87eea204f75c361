"""A partition read to its end holds the watermark until it is idle (``kafka.idle_after``): one partition
minutes of event time ahead of the others closes no window early and makes none of their events late, and
windows close once the partitions at their end have been idle for ``idle_after`` of the service's clock.

The service runs without a broker (:mod:`driftline.testing`): :class:`MemorySource` is the real
:class:`KafkaSource` (its ``take``, ``holding``, assignment and seek bookkeeping) over an in-memory log of
JSON messages that hands out, like librdkafka, each partition's messages and one end-of-partition event
once a partition is read to its end. The store and the publisher are in-memory twins; the clock is a
fake the test moves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError

from driftline.app.run import consumer_loop
from driftline.config import Config
from driftline.connectors.kafka.partitions import PartitionBook, PartitionState
from driftline.connectors.messages import partition_name
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.streaming.loop import ConsumerLoop
from driftline.testing import ManualClock, MemoryPublisher, MemorySource, MemoryStore

T0 = 1_767_225_600_000
MINUTE = 60_000
PER_MINUTE = 100
"""Events per partition and minute, 500 ms apart (the last at 49.5 s of its minute)."""
TOPIC = "scoring"
NAMES = [partition_name(TOPIC, p) for p in range(3)]


def rows_by_minute(store: MemoryStore) -> dict[int, int]:
    """Window start (minutes after T0) → rows, of the windows written."""
    return {(r.window.start_ms - T0) // MINUTE: r.window.rows for r in store.windows.values()}


def events(partition: int, minute: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([partition, minute])
    return [{"request_id": f"p{partition}m{minute}e{i}", "model": "m", "model_version": "1",
             "event_time": T0 + minute * MINUTE + i * 500, "features": {"x": float(rng.normal())},
             "score": float(rng.random())} for i in range(PER_MINUTE)]


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "m-1.json"
    save_profile(build_profile({"x": rng.normal(size=5_000), "score": rng.random(5_000)}, model="m",
                               model_version="1", score_column="score"), path)
    return path


def service(profile_path: Path, idle_after: str | int) -> tuple[ConsumerLoop, MemorySource, MemoryStore, ManualClock]:
    cfg = Config.model_validate({
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "m", "references": {"1": str(profile_path)}, "policy": {"min_samples": 10}}],
        "kafka": {"topics": [{"topic": TOPIC}], "idle_after": idle_after, "batch_size": 1_000_000},
    })
    source, store, clock = MemorySource(cfg, TOPIC, 3), MemoryStore(), ManualClock()
    return consumer_loop(cfg, store, source, MemoryPublisher(), clock=clock), source, store, clock


def step(svc: ConsumerLoop, clock: ManualClock, seconds: float = 1.0) -> None:
    clock.now += seconds
    svc.step()


def skewed_run(svc: ConsumerLoop, source: MemorySource, clock: ManualClock) -> None:
    """Partition 0 delivers minutes 0-8 at once and is read to its end; partitions 1 and 2 deliver a
    minute at a time, a few seconds of the clock apart (18 s in all)."""
    source.produce(0, [e for m in range(9) for e in events(0, m)])
    for m in range(9):
        for p in (1, 2):
            source.produce(p, events(p, m))
        step(svc, clock)
        step(svc, clock)


def test_a_partition_ahead_and_at_its_end_holds_until_idle(profile_path: Path) -> None:
    svc, source, store, clock = service(profile_path, "30s")
    skewed_run(svc, source, clock)
    assert rows_by_minute(store) == {m: 3 * PER_MINUTE for m in range(8)}  # every window whole; minute 8 still open
    assert svc.totals.late == 0
    # partition 1 moves on to minute 9; partitions 0 and 2, at their ends in minute 8, hold window 8 …
    source.produce(1, events(1, 9))
    step(svc, clock)
    step(svc, clock, 27.0)  # 29 s after partition 2's last message
    assert 8 not in rows_by_minute(store)
    assert source.book.partitions[NAMES[2]].state is PartitionState.AT_END
    step(svc, clock, 2.0)  # … until they have been idle for idle_after
    assert rows_by_minute(store)[8] == 3 * PER_MINUTE
    assert source.book.partitions[NAMES[2]].state is PartitionState.IDLE
    # a message on an idle partition: counted late as usual, and the partition holds again
    source.produce(2, [{**events(2, 8)[-1], "request_id": "p2-late"}])
    step(svc, clock)
    assert svc.totals.late == 1
    assert source.book.partitions[NAMES[2]].state is PartitionState.AT_END
    assert NAMES[2] in source.holding(clock.now).active


def test_after_an_outage_longer_than_idle_after_the_partitions_behind_hold_again(profile_path: Path) -> None:
    """Every partition idle through a long broker outage; producers queued through it, and partition 0's
    backlog (minutes ahead) arrives first: partitions 1 and 2 hold again, for idle_after from the first
    batch the broker delivers, and their backlogs arrive in time — nothing late, every window whole."""
    svc, source, store, clock = service(profile_path, "30s")
    for p in range(3):
        source.produce(p, events(p, 0))
    step(svc, clock)
    step(svc, clock, 60.0)  # quiet for a minute: every partition idle
    assert source.book.in_state(PartitionState.IDLE) == set(NAMES)
    source._error(KafkaError(KafkaError._ALL_BROKERS_DOWN))  # librdkafka's error callback, during a poll
    step(svc, clock, 300.0)  # five minutes of outage
    assert source.unreachable == 1
    source.produce(0, [e for m in range(1, 6) for e in events(0, m)])  # partition 0's backlog first
    step(svc, clock)
    assert rows_by_minute(store) == {} and NAMES[1] in source.holding(clock.now).active
    step(svc, clock, 20.0)
    for p in (1, 2):  # then the others', within idle_after
        source.produce(p, [e for m in range(1, 6) for e in events(p, m)])
    step(svc, clock)
    assert rows_by_minute(store) == {m: 3 * PER_MINUTE for m in range(5)}
    assert svc.totals.late == 0


def test_without_idleness_the_partition_ahead_makes_the_others_late(profile_path: Path) -> None:
    """``idle_after: 0`` is the rule before ``idle_after``: a partition at its end stops holding at once."""
    svc, source, store, clock = service(profile_path, 0)
    skewed_run(svc, source, clock)
    assert svc.totals.late > 0
    assert rows_by_minute(store) != {m: 3 * PER_MINUTE for m in range(8)}


def test_idle_timers() -> None:
    book = PartitionBook(idle_after=30.0)
    book.assigned(["a", "b"])
    assert book.holding(0.0).active == {"a", "b"} and book.holding(0.0).fresh == {"a", "b"}
    book.read([], ["b"], now=10.0)  # b read to its end with nothing in it: its timer starts
    book.read(["a"], [], now=15.0)  # a delivers
    assert book.in_state(PartitionState.READING) == {"a"} and book.in_state(PartitionState.AT_END) == {"b"}
    book.read([], ["a"], now=20.0)  # a read to its end: its timer began at its last message
    assert book.holding(39.9).active == {"a", "b"}
    assert book.holding(40.0).active == {"a"} and book.in_state(PartitionState.IDLE) == {"b"}
    assert book.holding(45.0).active == frozenset()
    book.unreachable()  # the broker away: nothing is known of the ends …
    assert book.holding(100.0).active == frozenset()
    book.arrived(news=False)  # (a batch that brings nothing changes nothing)
    book.read([], [], now=100.0)
    assert book.holding(100.0).active == frozenset()
    book.arrived(news=True)  # … once it delivers again, every partition at its end holds anew
    book.read(["b"], ["b"], now=110.0)
    assert book.in_state(PartitionState.AT_END) == {"a", "b"}
    assert book.holding(139.0).active == {"a", "b"} and book.holding(140.0).active == frozenset()
    book.sought(["a"])  # read again from an earlier offset: fresh
    assert book.holding(200.0).fresh == {"a"} and book.holding(200.0).active == {"a"}
    book.revoked(["a"])
    assert book.holding(200.0, unowned=["a"]) == (frozenset(), frozenset({"a"}), frozenset({"b"}))


def test_idle_after_zero_lets_go_at_the_end() -> None:
    book = PartitionBook(idle_after=0.0)
    book.assigned(["a"])
    book.read(["a"], ["a"], now=5.0)
    assert book.holding(5.0).active == frozenset()
