"""Property-based tests of event-time windowing (``driftline.engine.window``).

What the module docstring promises, checked on generated streams:

* arrival order within the allowed lateness, and batching, do not change the closed windows;
* ``merge`` is exact, associative and commutative, and partial windows add up to the whole;
* replay is deterministic; snapshot → JSON → restore → continue equals an uninterrupted run;
* an event is accepted, counted late against the right closed windows, or rejected by index:
  never silently dropped; retained panes stay bounded.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.engine.features import FeatureSet
from driftline.engine.window import ClosedWindow, LateCount, UpdateResult, WindowSpec, WindowState, window_id
from driftline.errors import InvalidInput

from conftest import small_profile

FEATURES = FeatureSet(small_profile())
CATEGORIES = np.array(["a", "b", "c", "d", "zz"], dtype=object)  # "zz" is unseen by the reference
DECISIONS = np.array(["approve", "decline"], dtype=object)


def make_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5, n)
    x[rng.random(n) < 0.1] = np.nan
    c = CATEGORIES[rng.integers(0, len(CATEGORIES), n)].copy()
    c[rng.random(n) < 0.1] = None
    return {"x": x, "c": c, "score": rng.random(n), "decision": DECISIONS[rng.integers(0, 2, n)]}


def take(columns: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in columns.items()}


@dataclass
class Stream:
    spec: WindowSpec
    times: np.ndarray
    """Event times in arrival order."""
    columns: dict[str, np.ndarray]
    """Columns in arrival order."""
    cuts: list[int]
    """Batch boundaries (indices into the arrival order)."""

    @property
    def batches(self) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        bounds = [0, *self.cuts, len(self.times)]
        return [(self.times[a:b], {k: v[a:b] for k, v in self.columns.items()}) for a, b in zip(bounds, bounds[1:])]

    def sorted_single_batch(self) -> Stream:
        order = np.argsort(self.times, kind="stable")
        return Stream(self.spec, self.times[order], take(self.columns, order), [])


@st.composite
def specs(draw: st.DrawFn, hopping: bool | None = None, lateness: int | None = None) -> WindowSpec:
    hop = draw(st.sampled_from([10, 25, 40]))
    if hopping is None:
        hopping = draw(st.booleans())
    per_window = draw(st.integers(2, 4)) if hopping else 1
    allowed = draw(st.sampled_from([0, 1, 9, 10, 33, 100])) if lateness is None else lateness
    return WindowSpec(size_ms=hop * per_window, hop_ms=hop if hopping else None, allowed_lateness_ms=allowed)


@st.composite
def streams(draw: st.DrawFn, hopping: bool | None = None, within_lateness: bool = True,
            lateness: int | None = None, max_events: int = 60) -> Stream:
    """Events whose disorder stays within the allowed lateness (or arbitrary disorder), in random batches.

    Arrival order sorts by ``time + jitter`` with jitter in [0, lateness]: an event arriving after
    another then has ``t ≥ t_other − lateness``, so every event is at least the running maximum minus
    the lateness.
    """
    spec = draw(specs(hopping, lateness))
    n = draw(st.integers(1, max_events))
    times = np.array(draw(st.lists(st.integers(-60, 600), min_size=n, max_size=n)), dtype=np.int64)
    if within_lateness:
        jitter = np.array(draw(st.lists(st.integers(0, spec.allowed_lateness_ms), min_size=n, max_size=n)))
        order = np.argsort(times + jitter, kind="stable")
    else:
        order = np.array(draw(st.permutations(range(n))), dtype=np.intp)
    columns = make_columns(n, draw(st.integers(0, 2**16)))
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=8)) - {n})
    return Stream(spec, times[order], take(columns, order), cuts)


@dataclass
class Run:
    closed: list[ClosedWindow]
    late: list[LateCount]
    results: list[UpdateResult]
    state: WindowState


def run(stream: Stream, state: WindowState | None = None, flush: bool = True,
        batches: list[tuple[np.ndarray, dict[str, np.ndarray]]] | None = None) -> Run:
    state = state if state is not None else WindowState(FEATURES, stream.spec)
    closed: list[ClosedWindow] = []
    late: list[LateCount] = []
    results = []
    for times, columns in stream.batches if batches is None else batches:
        result = state.update(times, columns)
        results.append(result)
        closed += result.closed
        late += result.late
    if flush:
        closed += state.flush()
    return Run(closed, late, results, state)


def describe(windows: list[ClosedWindow]) -> list[tuple[Any, ...]]:
    return [(w.window_id, w.start_ms, w.end_ms, w.reference_hash, w.counts.tolist()) for w in windows]


def windows_by_id(windows: list[ClosedWindow]) -> dict[str, tuple[int, int, list[int]]]:
    summed: dict[str, tuple[int, int, np.ndarray]] = {}
    for w in windows:
        if w.window_id in summed:
            start, end, counts = summed[w.window_id]
            summed[w.window_id] = (start, end, counts + w.counts)
        else:
            summed[w.window_id] = (w.start_ms, w.end_ms, w.counts.copy())
    return {k: (s, e, c.tolist()) for k, (s, e, c) in summed.items()}


def expected_windows(spec: WindowSpec, times: np.ndarray) -> Counter[tuple[int, int]]:
    """Rows per window ``(start, end)`` of the whole stream, computed from the event times alone."""
    rows: Counter[tuple[int, int]] = Counter()
    for t in times.tolist():
        pane = t // spec.hop
        for start_pane in range(pane - spec.panes_per_window + 1, pane + 1):
            rows[(start_pane * spec.hop, start_pane * spec.hop + spec.size_ms)] += 1
    return rows


def snapshot_json(state: WindowState) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(state.snapshot(), allow_nan=False))
    return data


# -- (a) arrival order within the lateness ------------------------------------------------------------


@pytest.mark.parametrize("hopping", [False, True], ids=["tumbling", "hopping"])
@given(data=st.data())
def test_arrival_order_within_lateness_does_not_change_closed_windows(hopping: bool, data: st.DataObject) -> None:
    stream = data.draw(streams(hopping=hopping))
    running_max = np.maximum.accumulate(stream.times)
    assert np.all(stream.times[1:] >= running_max[:-1] - stream.spec.allowed_lateness_ms)  # the generator's promise

    shuffled = run(stream)
    ordered = run(stream.sorted_single_batch())

    assert describe(shuffled.closed) == describe(ordered.closed)
    assert shuffled.late == [] and ordered.late == []
    assert all(r.rejected.size == 0 for r in shuffled.results)
    assert sum(r.accepted for r in shuffled.results) == len(stream.times)
    # and both agree with windows computed from the event times alone
    assert {(w.start_ms, w.end_ms): w.rows for w in ordered.closed} == dict(expected_windows(stream.spec, stream.times))
    ends = [w.end_ms for w in shuffled.closed]
    assert ends == sorted(ends) and len(set(w.window_id for w in shuffled.closed)) == len(shuffled.closed)
    for w in shuffled.closed:
        assert w.window_id == window_id("m", "1", w.start_ms, w.end_ms)
        assert w.end_ms - w.start_ms == stream.spec.size_ms and w.start_ms % stream.spec.hop == 0
        for name in FEATURES.names:  # every column accounts for every row of the window
            assert int(FEATURES.counts(w.counts, name).sum()) == w.rows


@given(stream=streams(), data=st.data())
def test_rebatching_the_same_arrival_order_does_not_change_closed_windows(stream: Stream, data: st.DataObject) -> None:
    n = len(stream.times)
    other_cuts = sorted(data.draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=n)) - {n})
    rebatched = Stream(stream.spec, stream.times, stream.columns, other_cuts)
    assert describe(run(stream).closed) == describe(run(rebatched).closed)


def test_closed_windows_come_out_as_soon_as_the_watermark_passes_their_end() -> None:
    spec = WindowSpec(size_ms=30, hop_ms=10, allowed_lateness_ms=5)
    state = WindowState(FEATURES, spec)
    columns = make_columns(3, 0)
    first = state.update(np.array([0, 12, 34]), columns)  # watermark 29: windows ending <= 29 close
    assert [(w.start_ms, w.end_ms, w.rows) for w in first.closed] == [(-20, 10, 1), (-10, 20, 2)]
    second = state.update(np.array([35]), take(columns, np.array([0])))  # watermark 30
    assert [(w.start_ms, w.end_ms, w.rows) for w in second.closed] == [(0, 30, 2)]
    assert [(w.start_ms, w.end_ms, w.rows) for w in state.flush()] == [(10, 40, 3), (20, 50, 2), (30, 60, 2)]


# -- (b) merge ------------------------------------------------------------------------------------------


@st.composite
def partitioned(draw: st.DrawFn, parts: int, lateness: int | None = None) -> tuple[Stream, list[Stream]]:
    """A stream (arrival order within lateness) and its events dealt to ``parts`` partitions."""
    stream = draw(streams(lateness=lateness))
    owner = np.array(draw(st.lists(st.integers(0, parts - 1), min_size=len(stream.times),
                                   max_size=len(stream.times))))
    pieces = []
    for part in range(parts):
        index = np.flatnonzero(owner == part)
        n = len(index)
        cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=4)) - {n}) if n else []
        pieces.append(Stream(stream.spec, stream.times[index], take(stream.columns, index), cuts))
    return stream, pieces


NEVER_CLOSES = 100_000  # allowed lateness far beyond the generated time range: nothing closes before flush


@given(partitioned(parts=3, lateness=NEVER_CLOSES))
def test_merging_partial_states_gives_the_panes_of_one_state_fed_everything(case: tuple[Stream, list[Stream]]) -> None:
    stream, pieces = case
    whole = run(stream, flush=False)
    states = [run(piece, flush=False).state for piece in pieces]
    assert whole.closed == [] and all(run(p, flush=False).closed == [] for p in pieces)

    merged = reduce(WindowState.merge, states)
    assert merged.panes.keys() == whole.state.panes.keys()
    for pane, counts in whole.state.panes.items():
        np.testing.assert_array_equal(merged.panes[pane], counts)
    marks = [s.watermark for s in states if s.watermark is not None]
    assert merged.watermark == min(marks)
    assert describe(merged.flush()) == describe(whole.state.flush())


@given(partitioned(parts=3))
def test_merge_is_associative_and_commutative(case: tuple[Stream, list[Stream]]) -> None:
    _, pieces = case
    a, b, c = (run(piece, flush=False).state for piece in pieces)
    assert snapshot_json(a.merge(b)) == snapshot_json(b.merge(a))
    assert snapshot_json(a.merge(b).merge(c)) == snapshot_json(a.merge(b.merge(c)))
    assert snapshot_json(a.merge(c).merge(b)) == snapshot_json(c.merge(b).merge(a))
    empty = WindowState(FEATURES, a.spec)
    assert snapshot_json(a.merge(empty)) == snapshot_json(a) == snapshot_json(empty.merge(a))
    before = snapshot_json(a)
    a.merge(b)
    assert snapshot_json(a) == before  # merge returns a new state, leaves its inputs alone


@given(partitioned(parts=3))
def test_partial_windows_from_partitions_add_up_to_the_whole(case: tuple[Stream, list[Stream]]) -> None:
    """Consumers of different partitions close their own partial windows; summed by id they are exact."""
    stream, pieces = case
    partial = [w for piece in pieces for w in run(piece).closed]
    assert windows_by_id(partial) == windows_by_id(run(stream).closed)


def test_merge_refuses_states_of_another_plan_or_spec() -> None:
    spec = WindowSpec(size_ms=60)
    state = WindowState(FEATURES, spec)
    with pytest.raises(InvalidInput, match="same reference profile and window spec"):
        state.merge(WindowState(FEATURES, WindowSpec(size_ms=120)))
    with pytest.raises(InvalidInput, match="same reference profile and window spec"):
        state.merge(WindowState(FeatureSet(small_profile(seed=12)), spec))


# -- (c) replay ----------------------------------------------------------------------------------------


@given(streams(within_lateness=False))
def test_replay_into_a_fresh_state_is_identical(stream: Stream) -> None:
    first, second = run(stream, flush=False), run(stream, flush=False)
    assert describe(first.closed) == describe(second.closed)
    assert first.late == second.late
    assert [r.rejected.tolist() for r in first.results] == [r.rejected.tolist() for r in second.results]
    assert snapshot_json(first.state) == snapshot_json(second.state)
    assert describe(first.state.flush()) == describe(second.state.flush())


# -- (d) snapshot → JSON → restore → continue ------------------------------------------------------------


@given(stream=streams(within_lateness=False), data=st.data())
def test_snapshot_json_restore_continue_equals_an_uninterrupted_run(stream: Stream, data: st.DataObject) -> None:
    batches = stream.batches
    cut = data.draw(st.integers(0, len(batches)))
    uninterrupted = run(stream)

    head = run(stream, flush=False, batches=batches[:cut])
    restored = WindowState.restore(FEATURES, json.loads(json.dumps(head.state.snapshot(), allow_nan=False)))
    assert snapshot_json(restored) == snapshot_json(head.state)
    tail = run(stream, state=restored, batches=batches[cut:])

    assert describe(head.closed + tail.closed) == describe(uninterrupted.closed)
    assert head.late + tail.late == uninterrupted.late
    assert snapshot_json(tail.state) == snapshot_json(uninterrupted.state)


def test_restore_refuses_a_snapshot_of_another_reference_or_plan() -> None:
    state = WindowState(FEATURES, WindowSpec(size_ms=60))
    state.update(np.array([1, 2]), make_columns(2, 0))
    data = snapshot_json(state)
    with pytest.raises(InvalidInput, match="snapshot was taken against reference"):
        WindowState.restore(FeatureSet(small_profile(seed=12)), data)
    data["panes"]["0"] = data["panes"]["0"][:-1]
    with pytest.raises(InvalidInput, match="snapshot pane 0 has"):
        WindowState.restore(FEATURES, data)


# -- (e) late and rejected events ------------------------------------------------------------------------


@given(streams(within_lateness=False, max_events=80))
def test_late_events_are_counted_against_the_right_windows_never_dropped(stream: Stream) -> None:
    spec = stream.spec
    hop, size, per_window = spec.hop, spec.size_ms, spec.panes_per_window
    state = WindowState(FEATURES, spec)
    emitted: Counter[str] = Counter()
    emitted_once: set[str] = set()
    late_total: Counter[str] = Counter()
    seen_max: int | None = None
    partly_late_events = 0

    for times, columns in stream.batches:
        watermark = None if seen_max is None else seen_max - spec.allowed_lateness_ms  # judged before the batch
        expected_late: Counter[str] = Counter()
        fully_late = 0
        for t in times.tolist():
            pane = t // hop
            closed_starts = [s for s in range(pane - per_window + 1, pane + 1)
                             if watermark is not None and s * hop + size <= watermark]
            for s in closed_starts:
                expected_late[window_id("m", "1", s * hop, s * hop + size)] += 1
            partly_late_events += bool(closed_starts)
            fully_late += watermark is not None and pane * hop + size <= watermark

        result = state.update(times, columns)

        assert result.rejected.size == 0
        assert result.accepted + fully_late + result.rejected.size == len(times)
        assert {lc.window_id: lc.count for lc in result.late} == dict(expected_late)
        for lc in result.late:
            assert lc.window_id == window_id("m", "1", lc.start_ms, lc.end_ms) and lc.count > 0
        assert [lc.end_ms for lc in result.late] == sorted(lc.end_ms for lc in result.late)
        for w in result.closed:
            assert w.window_id not in emitted_once
            emitted_once.add(w.window_id)
            emitted[w.window_id] += w.rows
        late_total.update({lc.window_id: lc.count for lc in result.late})
        if len(times):
            seen_max = max(int(times.max()), seen_max if seen_max is not None else int(times.max()))
        # retained panes stay bounded by (size + allowed lateness) / hop + 1, whatever the disorder
        assert len(state.panes) <= (size + spec.allowed_lateness_ms) // hop + 1

    for w in state.flush():
        assert w.window_id not in emitted_once
        emitted[w.window_id] += w.rows

    truth = {window_id("m", "1", s, e): n for (s, e), n in expected_windows(spec, stream.times).items()}
    accounted = emitted + late_total
    assert dict(accounted) == truth  # every event of every window: in the closed window or counted late
    assert state.late_events == partly_late_events
    assert state.rejected_events == 0


def test_a_late_event_still_counts_in_the_open_windows_that_contain_it() -> None:
    spec = WindowSpec(size_ms=30, hop_ms=10)
    state = WindowState(FEATURES, spec)
    state.update(np.array([25]), make_columns(1, 0))  # watermark 25: [-10, 20) closed
    result = state.update(np.array([15]), make_columns(1, 1))  # pane 1: [-10,20) closed, [0,30), [10,40) open
    assert result.accepted == 1
    assert [(lc.start_ms, lc.end_ms, lc.count) for lc in result.late] == [(-10, 20, 1)]
    assert [(w.start_ms, w.end_ms, w.rows) for w in state.flush()] == [(0, 30, 2), (10, 40, 2), (20, 50, 1)]


@given(stream=streams(within_lateness=False, max_events=80), data=st.data())
def test_rejected_events_are_reported_by_index(stream: Stream, data: st.DataObject) -> None:
    """Events too far in the future or over the pane bound are rejected by index, never lost."""
    base = stream.spec
    spec = WindowSpec(size_ms=base.size_ms, hop_ms=base.hop_ms, allowed_lateness_ms=base.allowed_lateness_ms,
                      max_open_panes=data.draw(st.integers(base.min_open_panes, base.min_open_panes + 6)),
                      max_future_ms=data.draw(st.integers(0, 200)))
    now = data.draw(st.integers(-100, 600))
    state = WindowState(FEATURES, spec)
    total_accepted = total_fully_late = total_rejected = 0
    for times, columns in stream.batches:
        watermark = state.watermark
        panes_before = set(state.panes)
        fully_late = (np.zeros(len(times), dtype=bool) if watermark is None
                      else (times // spec.hop) * spec.hop + spec.size_ms <= watermark)
        result = state.update(times, columns, now_ms=now)
        rejected = result.rejected
        assert len(np.unique(rejected)) == len(rejected) and np.all((rejected >= 0) & (rejected < len(times)))
        assert not np.any(fully_late[rejected])
        assert spec.max_future_ms is not None
        too_far = times > now + spec.max_future_ms
        assert np.all(np.isin(np.flatnonzero(too_far), rejected))
        # every other rejection is an event of a pane the bound refused to open
        for i in np.setdiff1d(rejected, np.flatnonzero(too_far)).tolist():
            assert times[i] // spec.hop not in panes_before
        assert result.accepted + int(fully_late.sum()) + len(rejected) == len(times)
        assert len(state.panes) <= spec.pane_limit
        total_accepted += result.accepted
        total_fully_late += int(fully_late.sum())
        total_rejected += len(rejected)
    assert total_accepted + total_fully_late + total_rejected == len(stream.times)
    assert state.rejected_events == total_rejected


def test_windows_of_negative_and_epoch_aligned_times() -> None:
    spec = WindowSpec(size_ms=60_000)
    state = WindowState(FEATURES, spec)
    closed = state.update(np.array([-1, 0, 59_999, 60_000], dtype=np.int64), make_columns(4, 0)).closed
    windows = closed + state.flush()
    assert [(w.start_ms, w.end_ms, w.rows) for w in windows] == [(-60_000, 0, 1), (0, 60_000, 2), (60_000, 120_000, 1)]


def test_an_empty_batch_changes_nothing() -> None:
    state = WindowState(FEATURES, WindowSpec(size_ms=60))
    state.update(np.array([5, 70]), make_columns(2, 0))
    before = snapshot_json(state)
    result = state.update(np.zeros(0, dtype=np.int64), {k: v[:0] for k, v in make_columns(2, 0).items()})
    assert (result.accepted, result.closed, result.late, result.rejected.size) == (0, [], [], 0)
    assert snapshot_json(state) == before
    assert WindowState(FEATURES, WindowSpec(size_ms=60)).flush() == []


def test_unmergeable_window_specs_are_refused() -> None:
    with pytest.raises(InvalidInput, match="size_ms must be positive"):
        WindowSpec(size_ms=0)
    with pytest.raises(InvalidInput, match="hop_ms must divide"):
        WindowSpec(size_ms=60, hop_ms=25)
    with pytest.raises(InvalidInput, match="allowed_lateness_ms"):
        WindowSpec(size_ms=60, allowed_lateness_ms=-1)
    with pytest.raises(InvalidInput, match="max_open_panes"):
        WindowSpec(size_ms=60, hop_ms=10, max_open_panes=5)

