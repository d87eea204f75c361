"""One contract suite for the stateful pieces of the engine (style.md, "Proof"; after river's ``checks``).

Every aggregator and detector is wrapped in a small adapter that says how to build a fresh one, feed
it a batch and observe its state; the same checks then run over all of them:

* a batch ``update`` equals the same values fed in pieces;
* seeded runs are identical;
* snapshot → JSON → restore round-trips (where the piece has a snapshot);
* ``merge`` is associative and commutative (where it has one);
* ``reset()`` equals a fresh instance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.engine.changewatch import ScoreChangeWatch
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import ModelMonitor
from driftline.engine.window import WindowSpec, WindowState

from conftest import small_profile

PROFILE = small_profile()
FEATURES = FeatureSet(PROFILE)
CATEGORIES = np.array(["a", "b", "c", "d", "unseen", None], dtype=object)


def columns(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.2, n)
    special = rng.random(n)
    x[special < 0.05] = np.nan
    x[(special >= 0.05) & (special < 0.07)] = np.inf
    x[(special >= 0.07) & (special < 0.09)] = -np.inf
    return {
        "x": x,
        "c": CATEGORIES[rng.integers(0, len(CATEGORIES), n)],
        "score": rng.beta(2.0, 5.0, n),
        "decision": rng.choice(np.array(["approve", "decline"], dtype=object), n),
    }


def split(n: int, cuts: Sequence[int]) -> list[slice]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


@dataclass
class Batch:
    times: np.ndarray
    columns: dict[str, np.ndarray]

    def __getitem__(self, part: slice) -> Batch:
        return Batch(self.times[part], {k: v[part] for k, v in self.columns.items()})

    def __len__(self) -> int:
        return len(self.times)


def batch(n: int, seed: int, span_ms: int = 1_000) -> Batch:
    """Events in time order (the order a single partition delivers them in)."""
    rng = np.random.default_rng(seed + 1)
    return Batch(np.sort(rng.integers(0, span_ms, n)).astype(np.int64), columns(n, seed))


# -- adapters -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    name: str
    fresh: Callable[[], Any]
    feed: Callable[[Any, Batch], Any]
    """Feed one batch; return what the piece emitted for it (compared across runs)."""
    observe: Callable[[Any], Any]
    """The piece's state as plain data."""
    finish: Callable[[Any], Any] = lambda obj: None
    """What the piece emits at end of input (flush)."""
    snapshot: Callable[[Any], Any] | None = None
    restore: Callable[[Any], Any] | None = None
    merge: Callable[[Any, Any], Any] | None = None


class CountVector:
    """The count vector aggregator: one int64 vector per window of one plan."""

    def __init__(self) -> None:
        self.vector = FEATURES.empty()

    def update(self, b: Batch) -> CountVector:
        self.vector = self.vector + FEATURES.count(b.columns, len(b))
        return self


def describe_windows(windows: list[Any]) -> list[tuple[Any, ...]]:
    return [(w.window_id, w.start_ms, w.end_ms, w.counts.tolist()) for w in windows]


def window_adapter(name: str, spec: WindowSpec) -> Adapter:
    def feed(state: WindowState, b: Batch) -> Any:
        result = state.update(b.times, b.columns)
        return describe_windows(result.closed), [(lc.window_id, lc.count) for lc in result.late]

    return Adapter(
        name,
        fresh=lambda: WindowState(FEATURES, spec),
        feed=feed,
        observe=lambda s: json.loads(json.dumps(s.snapshot())),
        finish=lambda s: describe_windows(s.flush()),
        snapshot=lambda s: json.loads(json.dumps(s.snapshot(), allow_nan=False)),
        restore=lambda data: WindowState.restore(FEATURES, data),
        merge=lambda a, b: a.merge(b),
    )


def describe_reports(reports: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.window.window_id, r.window.counts.tolist(),
             {k: s.as_dict() for k, s in r.skew.items()},
             None if r.drift is None else {k: s.as_dict() for k, s in r.drift.items()},
             {k: (f.severity, f.breaches) for k, f in r.assessment.features.items()}) for r in reports]


def monitor_feed(monitor: ModelMonitor, b: Batch) -> Any:
    return describe_reports(monitor.update(b.times, b.columns).reports)


def sensitive_watch() -> ScoreChangeWatch:
    """A watch that fires often on short streams (δ = 0.3, a check every 4 values), so the contract
    covers detections and the restarts after them."""
    return ScoreChangeWatch(significance_level=0.3, clock=4, cuts_per_level=3, min_window_length=2, grace_period=3)


def shifted_scores(b: Batch) -> np.ndarray:
    """The batch's scores, shifted up for events in the second half of the 1 s span (a change)."""
    return b.columns["score"] + np.where(b.times >= 500, 0.3, 0.0)


def watched_monitor_feed(monitor: ModelMonitor, b: Batch) -> Any:
    update = monitor.update(b.times, b.columns)
    return describe_reports(update.reports) + [("detection", d.as_dict()) for d in update.detections]


def watched_monitor_restore(data: Any) -> ModelMonitor:
    monitor = ModelMonitor(PROFILE, WindowSpec(size_ms=100), watch_significance_level=0.3)
    monitor.restore(data)
    return monitor


def monitor_restore(data: Any) -> ModelMonitor:
    monitor = ModelMonitor(PROFILE, WindowSpec(size_ms=100), watch_score=False)
    monitor.restore(data)
    return monitor


ADAPTERS = [
    Adapter("count_vector", fresh=CountVector, feed=lambda v, b: v.update(b).vector.tolist(),
            observe=lambda v: v.vector.tolist(),
            merge=lambda a, b: _merged_vector(a, b)),
    window_adapter("window_tumbling", WindowSpec(size_ms=100)),
    window_adapter("window_hopping", WindowSpec(size_ms=100, hop_ms=25, allowed_lateness_ms=30)),
    Adapter("score_change_watch", fresh=sensitive_watch,
            feed=lambda w, b: w.update(shifted_scores(b), b.times).detections,
            observe=lambda w: w.snapshot().as_dict(),
            snapshot=lambda w: json.loads(json.dumps(w.snapshot().as_dict(), allow_nan=False)),
            restore=ScoreChangeWatch.restore),
    Adapter("model_monitor", fresh=lambda: ModelMonitor(PROFILE, WindowSpec(size_ms=100), watch_score=False),
            feed=monitor_feed,
            observe=lambda m: json.loads(json.dumps(m.snapshot())),
            finish=lambda m: describe_reports(m.flush()),
            snapshot=lambda m: json.loads(json.dumps(m.snapshot(), allow_nan=False)),
            restore=monitor_restore),
    Adapter("model_monitor_watched", fresh=lambda: ModelMonitor(PROFILE, WindowSpec(size_ms=100),
                                                                watch_significance_level=0.3),
            feed=watched_monitor_feed,
            observe=lambda m: json.loads(json.dumps(m.snapshot())),
            finish=lambda m: [describe_reports(m.flush()), [d.as_dict() for d in m.take_detections()]],
            snapshot=lambda m: json.loads(json.dumps(m.snapshot(), allow_nan=False)),
            restore=watched_monitor_restore),
]
ADAPTER_IDS = [a.name for a in ADAPTERS]


def _merged_vector(a: CountVector, b: CountVector) -> CountVector:
    merged = CountVector()
    merged.vector = a.vector + b.vector
    return merged


def feed_all(adapter: Adapter, obj: Any, b: Batch, parts: list[slice]) -> list[Any]:
    emitted: list[Any] = []
    for part in parts:
        out = adapter.feed(obj, b[part])
        emitted.extend(out if isinstance(out, list) else [out])
    return emitted


def emitted_items(adapter: Adapter, emitted: list[Any]) -> list[Any]:
    """What a run emitted, independent of which batch emitted it."""
    flat: list[Any] = []
    for out in emitted:
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], list):  # windows, late counts
            flat.extend(out[0])
            flat.extend(out[1])
        elif adapter.name == "count_vector":
            continue  # the running vector after each batch depends on the split by definition
        else:
            flat.append(out)
    if adapter.name == "model_monitor_watched":  # windows and detections, each in order
        return [x for x in flat if x[0] != "detection"] + [x for x in flat if x[0] == "detection"]
    return flat


# -- the checks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
@given(n=st.integers(0, 400), seed=st.integers(0, 1_000), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_batch_update_equals_the_same_values_fed_in_pieces(adapter: Adapter, n: int, seed: int,
                                                           cuts: list[int]) -> None:
    b = batch(n, seed)
    whole, pieces = adapter.fresh(), adapter.fresh()
    emitted_whole = feed_all(adapter, whole, b, [slice(0, n)])
    emitted_pieces = feed_all(adapter, pieces, b, split(n, cuts))
    assert emitted_items(adapter, emitted_whole) == emitted_items(adapter, emitted_pieces)
    assert adapter.observe(whole) == adapter.observe(pieces)
    assert adapter.finish(whole) == adapter.finish(pieces)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=ADAPTER_IDS)
def test_seeded_runs_are_identical(adapter: Adapter) -> None:
    runs = []
    for _ in range(2):
        obj = adapter.fresh()
        b = batch(1_500, seed=42, span_ms=700)
        emitted = feed_all(adapter, obj, b, split(1_500, [100, 700, 701, 1_200]))
        runs.append((emitted, adapter.observe(obj), adapter.finish(obj)))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a.snapshot is not None],
                         ids=[a.name for a in ADAPTERS if a.snapshot is not None])
@given(n=st.integers(0, 300), seed=st.integers(0, 1_000), cut=st.integers(0, 300))
def test_snapshot_restore_round_trips_and_continues(adapter: Adapter, n: int, seed: int, cut: int) -> None:
    assert adapter.snapshot is not None and adapter.restore is not None
    b = batch(n, seed)
    cut = min(cut, n)
    uninterrupted = adapter.fresh()
    expected = feed_all(adapter, uninterrupted, b, [slice(0, cut), slice(cut, n)])
    interrupted = adapter.fresh()
    head = feed_all(adapter, interrupted, b, [slice(0, cut)])
    data = adapter.snapshot(interrupted)
    restored = adapter.restore(data)
    assert adapter.snapshot(restored) == data
    tail = feed_all(adapter, restored, b, [slice(cut, n)])
    assert head + tail == expected
    assert adapter.observe(restored) == adapter.observe(uninterrupted)
    assert adapter.finish(restored) == adapter.finish(uninterrupted)


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a.merge is not None],
                         ids=[a.name for a in ADAPTERS if a.merge is not None])
@given(seeds=st.lists(st.integers(0, 1_000), min_size=3, max_size=3), sizes=st.lists(st.integers(0, 200), min_size=3,
                                                                                       max_size=3))
def test_merge_is_associative_and_commutative(adapter: Adapter, seeds: list[int], sizes: list[int]) -> None:
    assert adapter.merge is not None
    parts = []
    for seed, n in zip(seeds, sizes, strict=True):
        obj = adapter.fresh()
        adapter.feed(obj, batch(n, seed))
        parts.append(obj)
    a, b, c = parts
    merge = adapter.merge
    assert adapter.observe(merge(a, b)) == adapter.observe(merge(b, a))
    assert adapter.observe(merge(merge(a, b), c)) == adapter.observe(merge(a, merge(b, c)))
    assert adapter.observe(merge(a, adapter.fresh())) == adapter.observe(a)


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a.snapshot is not None],
                         ids=[a.name for a in ADAPTERS if a.snapshot is not None])
def test_a_fresh_snapshot_restores_a_fresh_instance(adapter: Adapter) -> None:
    assert adapter.snapshot is not None and adapter.restore is not None
    used = adapter.fresh()
    adapter.feed(used, batch(300, 1))
    restored = adapter.restore(adapter.snapshot(adapter.fresh()))
    assert adapter.observe(restored) == adapter.observe(adapter.fresh())
    assert adapter.observe(used) != adapter.observe(restored)


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a.name != "count_vector"],
                         ids=[a.name for a in ADAPTERS if a.name != "count_vector"])
def test_reset_equals_a_fresh_instance(adapter: Adapter) -> None:
    used = adapter.fresh()
    b = batch(300, 1)
    adapter.feed(used, b)
    assert adapter.observe(used) != adapter.observe(adapter.fresh())
    used.reset()
    assert adapter.observe(used) == adapter.observe(adapter.fresh())
    fresh = adapter.fresh()  # and it behaves as one afterwards
    assert adapter.feed(used, b) == adapter.feed(fresh, b)
    assert adapter.finish(used) == adapter.finish(fresh)


# -- count vectors ----------------------------------------------------------------------------------------


@given(n=st.integers(0, 300), seed=st.integers(0, 1_000), data=st.data())
def test_counting_rows_by_index_equals_counting_the_subset(n: int, seed: int, data: st.DataObject) -> None:
    cols = columns(n, seed)
    index = np.array(sorted(data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n))) if n else [], dtype=np.intp)
    by_index = FEATURES.count(cols, n, index=index)
    subset = FEATURES.count({k: v[index] for k, v in cols.items()}, len(index))
    np.testing.assert_array_equal(by_index, subset)
    whole = FEATURES.count(cols, n)
    for name in FEATURES.names:
        # every row lands in exactly one cell, or is counted invalid (±inf)
        assert int(FEATURES.counts(whole, name).sum()) + FEATURES.invalid(whole, name) == n


def test_a_column_absent_from_the_batch_counts_as_missing() -> None:
    cols = columns(50, 3)
    del cols["x"]
    vector = FEATURES.count(cols, 50)
    x = FEATURES.counts(vector, "x")
    assert x[-1] == 50 and x[:-1].sum() == 0


def test_the_reference_vector_holds_the_profile_counts() -> None:
    reference = FEATURES.reference()
    assert reference[0] == PROFILE.rows
    for name, feature in PROFILE.features.items():
        assert int(FEATURES.counts(reference, name).sum()) == feature.count


# -- the score change watch -------------------------------------------------------------------------------


@given(cuts=st.lists(st.integers(0, 4_000), max_size=12), seed=st.integers(0, 100))
def test_score_change_watch_detects_the_same_whatever_the_batch_split(cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.concatenate((rng.beta(2, 5, 2_000), rng.beta(5, 2, 2_000)))
    scores[rng.random(4_000) < 0.01] = np.nan
    times = np.arange(4_000, dtype=np.int64) * 1_000
    whole, pieces = ScoreChangeWatch(), ScoreChangeWatch()
    expected = whole.update(scores, times).detections
    assert expected, "the shift at 2,000 must be detected"
    found = [d for part in split(4_000, cuts) for d in pieces.update(scores[part], times[part]).detections]
    assert found == expected
    assert pieces.snapshot() == whole.snapshot()
    assert pieces.seen == whole.seen == 4_000 - int(np.isnan(scores).sum())
    first = expected[0]
    assert first.event_time_ms == times[~np.isnan(scores)][first.index]  # the event where it fired


@given(cut=st.integers(0, 30_000), seed=st.integers(0, 20))
def test_score_change_watch_restored_mid_stream_detects_the_same(cut: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.concatenate((rng.beta(2, 5, 20_000), rng.beta(2.4, 5, 10_000)))
    uninterrupted = ScoreChangeWatch()
    expected = uninterrupted.update(scores).detections
    head = ScoreChangeWatch()
    found = head.update(scores[:cut]).detections
    restored = ScoreChangeWatch.restore(json.loads(json.dumps(head.snapshot().as_dict())))
    found += restored.update(scores[cut:]).detections
    assert found == expected
    assert restored.snapshot() == uninterrupted.snapshot()


@pytest.mark.parametrize("shift", [0.05, 0.1, 0.3, 1.0, 3.0])
def test_score_change_watch_fires_where_rivers_adwin_fires(shift: float) -> None:
    """Same test, same cut density (five per size), same clock: the same detections as river's
    per-event ADWIN (delta 0.002), at the same events."""
    from river import drift

    rng = np.random.default_rng(int(shift * 100))
    values = np.concatenate((rng.normal(0, 1, 20_000), rng.normal(shift, 1, 20_000)))
    adwin = drift.ADWIN(delta=0.002)
    river_at = []
    for i, v in enumerate(values.tolist()):
        adwin.update(v)
        if adwin.drift_detected:
            river_at.append(i)
    watch = ScoreChangeWatch()
    ours = [d.index for part in np.array_split(values, 7) for d in watch.update(part).detections]
    assert ours == river_at


@pytest.mark.parametrize("min_window_length", [2, 12, 30])
def test_score_change_watch_takes_any_min_window_length(min_window_length: int) -> None:
    """Longer than the full-resolution cuts (2·cuts_per_level − 1 = 9) it crashed; now only the cuts
    whose both parts hold min_window_length values are tested. river's bucket scan and these cut
    positions coincide for the defaults (the test above), not for every setting: for 12 a detection
    comes a check or two away from river's. Each change is found, within 50 values of river's."""
    from river import drift

    rng = np.random.default_rng(min_window_length)
    values = np.concatenate((rng.normal(0, 1, 6_000), rng.normal(0.4, 1, 6_000), rng.normal(-0.2, 1, 6_000)))
    adwin = drift.ADWIN(delta=0.002, min_window_length=min_window_length)
    river_at = []
    for i, v in enumerate(values.tolist()):
        adwin.update(v)
        if adwin.drift_detected:
            river_at.append(i)
    watch = ScoreChangeWatch(min_window_length=min_window_length)
    ours = [d.index for part in np.array_split(values, 5) for d in watch.update(part).detections]
    assert len(ours) == len(river_at) >= 2
    assert all(abs(a - b) <= 50 for a, b in zip(ours, river_at, strict=True)), (ours, river_at)


def test_score_change_watch_is_quiet_without_a_change_and_fires_after_one() -> None:
    rng = np.random.default_rng(0)
    watch = ScoreChangeWatch()
    assert watch.update(rng.beta(2, 5, 64_000)).detections == []
    detections = watch.update(rng.beta(5, 2, 8_000)).detections
    assert detections and all(d.index >= 64_000 for d in detections)
    first = detections[0]
    assert first.detector == "adwin" and first.after_mean > first.before_mean
    assert abs(first.change_index - 64_000) <= 32 and first.change_index <= first.index  # at the cut resolution


def test_monitor_score_watch_input_does_not_depend_on_how_late_events_are_batched() -> None:
    spec = WindowSpec(size_ms=1_000)
    on_time = batch(64, 1)
    on_time = Batch(np.full(64, 10_000, dtype=np.int64), on_time.columns)
    late = Batch(np.zeros(64, dtype=np.int64), columns(64, 2))
    later = Batch(np.full(64, 10_001, dtype=np.int64), columns(64, 3))
    both = Batch(np.concatenate((late.times, later.times)),
                 {k: np.concatenate((late.columns[k], later.columns[k])) for k in late.columns})

    separate = ModelMonitor(PROFILE, spec)
    for b in (on_time, late, later):
        separate.update(b.times, b.columns)
    together = ModelMonitor(PROFILE, spec)
    for b in (on_time, both):
        together.update(b.times, b.columns)

    # the windows agree: the late events are late either way
    assert separate.state.snapshot() == together.state.snapshot()
    assert separate.watch is not None and together.watch is not None
    assert separate.watch.snapshot() == together.watch.snapshot()
    assert separate.held_scores == together.held_scores


def test_monitor_score_watch_is_fed_in_event_time_order_only() -> None:
    """A window [0, 10 s) still open, the watermark at 8 s (scores before it fed): an event at 5 s is
    counted in the window but is older than what the watch was fed, so it is left out and counted, and
    the watch's input stays in event-time order (a restart from the snapshot goes on the same)."""
    spec = WindowSpec(size_ms=10_000)
    monitor = ModelMonitor(PROFILE, spec)
    assert monitor.watch is not None
    monitor.update(np.arange(0, 8_001, 125, dtype=np.int64), columns(65, 1))
    fed = monitor.watch.seen
    assert fed == 64 and monitor.fed_upto == 8_000
    restored = ModelMonitor(PROFILE, spec)
    restored.restore(json.loads(json.dumps(monitor.snapshot())))
    for m in (monitor, restored):
        update = m.update(np.array([5_000, 8_500], dtype=np.int64), columns(2, 2))
        assert update.accepted == 2 and m.watch_late == 1
        assert m.watch is not None and m.watch.seen + m.held_scores == fed + 2  # 8 000 (held before) and 8 500
    assert monitor.snapshot() == restored.snapshot()


def test_monitor_score_watch_sees_only_accepted_events() -> None:
    """Rejected events are dead-lettered by the caller, fully late ones never reach a window: neither
    reaches the score watch, so re-driving dead letters cannot count a score twice."""
    spec = WindowSpec(size_ms=1_000, max_future_ms=0)
    monitor = ModelMonitor(PROFILE, spec)
    assert monitor.watch is not None
    monitor.update(np.full(64, 10_000, dtype=np.int64), columns(64, 1), now_ms=10_000)
    watched = lambda: monitor.watch.seen + monitor.held_scores  # noqa: E731  (fed, or held for the watermark)
    assert watched() == 64
    too_far = monitor.update(np.full(64, 99_999, dtype=np.int64), columns(64, 2), now_ms=10_000)
    assert too_far.rejected.size == 64 and watched() == 64
    mixed_times = np.concatenate((np.zeros(64, dtype=np.int64), np.full(32, 10_000, dtype=np.int64)))
    mixed = monitor.update(mixed_times, columns(96, 3), now_ms=10_000)
    assert mixed.accepted == 32 and watched() == 96


def test_monitor_detections_name_the_model_version_and_survive_a_restore() -> None:
    spec = WindowSpec(size_ms=60_000)
    rng = np.random.default_rng(5)
    n = 20_000
    times = np.arange(n, dtype=np.int64) * 10
    cols = columns(n, 9)
    cols["score"] = np.concatenate((rng.beta(2, 5, n // 2), rng.beta(5, 2, n // 2)))
    uninterrupted = ModelMonitor(PROFILE, spec)
    expected = uninterrupted.update(times, cols).detections
    uninterrupted.flush()
    expected += uninterrupted.take_detections()
    assert expected and {(d.model, d.model_version) for d in expected} == {(PROFILE.model, PROFILE.model_version)}
    assert all(d.reference_hash == PROFILE.content_hash for d in expected)
    head = ModelMonitor(PROFILE, spec)
    found = head.update(times[:7_000], {k: v[:7_000] for k, v in cols.items()}).detections
    restored = ModelMonitor(PROFILE, spec)
    restored.restore(json.loads(json.dumps(head.snapshot())))
    found += restored.update(times[7_000:], {k: v[7_000:] for k, v in cols.items()}).detections
    restored.flush()
    found += restored.take_detections()
    assert found == expected


def test_monitor_feeds_the_watch_in_event_time_order_whatever_the_partition_interleaving() -> None:
    """Three partitions, each in time order, read in different interleavings and batches: the watch sees
    the same stream (ordered by event time once the watermark, which waits for every partition, passes)."""
    spec = WindowSpec(size_ms=60_000)
    rng = np.random.default_rng(2)
    n = 12_000
    times = np.arange(n, dtype=np.int64) * 10
    cols = columns(n, 4)
    cols["score"] = np.concatenate((rng.beta(2, 5, n // 2), rng.beta(4, 5, n // 2)))
    partition = np.array(["p0", "p1", "p2"], dtype=object)[np.arange(n) % 3]
    runs = []
    for seed in range(3):
        order_rng = np.random.default_rng(seed)
        cursors = {p: list(np.flatnonzero(partition == p)) for p in ("p0", "p1", "p2")}
        monitor = ModelMonitor(PROFILE, spec)
        monitor.hold(frozenset(cursors))  # the consumer's assignment: every partition holds the watermark
        found = []
        while any(cursors.values()):
            p = order_rng.choice([q for q, rows in cursors.items() if rows])
            take = int(order_rng.integers(1, 700))
            rows, cursors[p] = np.array(cursors[p][:take]), cursors[p][take:]
            update = monitor.update(times[rows], {k: v[rows] for k, v in cols.items()}, sources=partition[rows])
            found += update.detections
        monitor.flush()
        found += monitor.take_detections()
        runs.append([d.as_dict() for d in found])
    assert runs[0] and runs[0] == runs[1] == runs[2]
