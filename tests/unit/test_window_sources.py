"""Per-source watermarks: a backlog read one partition at a time gives the windows of live traffic."""

from __future__ import annotations

import json

import numpy as np

from driftline.engine.features import FeatureSet
from driftline.engine.profile import build_profile
from driftline.engine.window import WindowSpec, WindowState

FEATURES = FeatureSet(build_profile({"x": np.arange(100.0)}, model="m", model_version="1"))
MINUTE = 60_000


def feed(state: WindowState, source: str, start: int, stop: int) -> list[tuple[int, int]]:
    times = np.arange(start, stop, 1_000, dtype=np.int64)
    result = state.update(times, {"x": np.ones(len(times))}, sources=np.full(len(times), source, dtype=object))
    return [(w.start_ms, w.rows) for w in result.closed]


def test_a_partition_read_ahead_does_not_make_the_others_late() -> None:
    state = WindowState(FEATURES, WindowSpec(size_ms=MINUTE))
    state.hold(frozenset({"p0", "p1"}))  # both assigned, nothing read yet
    assert feed(state, "p0", 0, 5 * MINUTE) == []  # p1 has delivered nothing: the watermark waits
    closed = feed(state, "p1", 0, 5 * MINUTE)
    assert closed == [(i * MINUTE, 120) for i in range(4)]
    assert state.late_events == 0


def test_a_partition_read_to_its_end_lets_go() -> None:
    state = WindowState(FEATURES, WindowSpec(size_ms=MINUTE))
    state.hold(frozenset({"p0", "p1"}))
    feed(state, "p0", 0, 3 * MINUTE)
    feed(state, "p1", 0, MINUTE // 2)
    assert state.watermark is not None and state.watermark < MINUTE
    closed = state.hold(frozenset({"p1"}) - {"p1"})  # p1 read to its end: nothing holds the watermark back
    assert [(w.start_ms, w.rows) for w in closed] == [(0, 90), (MINUTE, 60)]


def test_without_holding_every_seen_source_holds() -> None:
    """(A source not yet seen cannot hold anything: that is what :meth:`WindowState.hold` is for.)"""
    state = WindowState(FEATURES, WindowSpec(size_ms=MINUTE))
    feed(state, "b", 0, MINUTE + 1_000)
    feed(state, "a", 0, 3 * MINUTE)
    assert state.watermark == MINUTE  # the slower source's newest event
    assert feed(state, "b", MINUTE + 1_000, 3 * MINUTE) == [(MINUTE, 120)]


def test_source_marks_survive_a_snapshot() -> None:
    state = WindowState(FEATURES, WindowSpec(size_ms=MINUTE))
    state.hold(frozenset({"p0", "p1"}))
    feed(state, "p0", 0, 2 * MINUTE)
    restored = WindowState.restore(FEATURES, json.loads(json.dumps(state.snapshot())))
    assert restored.source_marks == state.source_marks and restored.holding == state.holding
    assert feed(restored, "p1", 0, 2 * MINUTE) == feed(state, "p1", 0, 2 * MINUTE)


def test_source_marks_are_the_same_for_runs_and_for_events_interleaved_one_by_one() -> None:
    from driftline.engine.window import _FEW_RUNS, _marked

    rng = np.random.default_rng(7)
    times = rng.integers(0, 10 ** 6, 4 * _FEW_RUNS).astype(np.int64)
    for sources in (np.asarray([f"t[{i % 3}]" for i in range(len(times))], dtype=object),  # one by one
                    np.repeat(np.asarray(["t[0]", "t[1]", "t[2]", "t[0]"]), _FEW_RUNS)):   # a few runs
        rows = np.flatnonzero(rng.random(len(times)) < 0.8)
        expected = {name: int(times[rows][sources[rows] == name].max()) for name in set(sources[rows].tolist())}
        assert _marked({"t[1]": 2 * 10 ** 6}, times, rows, sources) == {**expected, "t[1]": 2 * 10 ** 6}
