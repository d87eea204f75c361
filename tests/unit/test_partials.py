"""Partial windows merge exactly: stage 1 per partition, stage 2 per model, against a straightforward
computation over each partition's events, for any batching, interleaving, split over processes and
redelivery of the partials."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.engine.features import FeatureSet
from driftline.engine.partials import PanePartial, PartialMerge, PartitionPanes
from driftline.engine.profile import build_profile
from driftline.engine.window_spec import ClosedWindow, WindowSpec

T0 = 1_767_225_600_000
MINUTE = 60_000


@pytest.fixture(scope="module")
def features() -> FeatureSet:
    rng = np.random.default_rng(1)
    reference = {"income": rng.lognormal(10, 1, 5000), "age": rng.integers(18, 90, 5000).astype(float),
                 "channel": rng.choice(["web", "app", "branch"], 5000), "score": rng.random(5000)}
    return FeatureSet(build_profile(reference, model="credit", model_version="1", categorical=["channel"],
                                    score_column="score"))


def stream(seed: int, n: int, partitions: int) -> dict[str, Any]:
    """Events spread over a few minutes, each partition's times out of order by up to 40 s."""
    rng = np.random.default_rng(seed)
    part = rng.integers(0, partitions, n)
    times = T0 + np.sort(rng.integers(0, 6 * MINUTE, n)) + rng.integers(-40_000, 40_000, n)
    return {"partition": part, "time": times.astype(np.int64),
            "columns": {"income": rng.lognormal(10, 1, n), "age": rng.integers(18, 90, n).astype(float),
                        "channel": rng.choice(["web", "app", "branch", "kiosk"], n), "score": rng.random(n)}}


def reference(features: FeatureSet, spec: WindowSpec, data: dict[str, Any],
              partitions: int) -> tuple[list[tuple[int, list[int]]], int]:
    """Closed windows as (start, counts) and the number of late events, computed event by event."""
    hop, size, lateness = spec.hop, spec.size_ms, spec.allowed_lateness_ms
    accepted, late, marks = [], 0, {}
    for row, (p, t) in enumerate(zip(data["partition"].tolist(), data["time"].tolist(), strict=True)):
        before = marks.get(p)
        if before is not None and (t // hop + 1) * hop + lateness <= before:
            late += 1
        else:
            accepted.append(row)
        marks[p] = t if before is None else max(before, t)
    if len(marks) < partitions:
        return [], late
    watermark = min(marks.values()) - lateness
    rows = np.asarray(accepted, dtype=np.intp)
    panes = data["time"][rows] // hop
    windows = []
    for start_pane in range(int(panes.min()) - spec.panes_per_window + 1, int(panes.max()) + 1):
        start = start_pane * hop
        if start + size > watermark:
            continue
        inside = rows[(panes >= start_pane) & (panes < start_pane + spec.panes_per_window)]
        if len(inside):
            windows.append((start, features.count(data["columns"], len(data["time"]), index=inside).tolist()))
    return windows, late


def merged(features: FeatureSet, spec: WindowSpec, data: dict[str, Any], partitions: int,
           rng: random.Random) -> tuple[list[tuple[int, list[int]]], int]:
    """Stage 1 per partition in random batches, the partitions' batches interleaved at random (any split
    over processes is one such interleaving); stage 2 gets the messages in another random interleaving
    that keeps each partition's order, some of them twice."""
    names = [f"scoring[{p}]" for p in range(partitions)]
    queues = {p: list(np.flatnonzero(data["partition"] == p)) for p in range(partitions)}
    stage1 = {p: PartitionPanes(features, spec) for p in range(partitions)}
    outbox: dict[int, list[tuple[list[PanePartial], int | None]]] = {p: [] for p in range(partitions)}
    late = 0
    while any(queues.values()):
        p = rng.choice([q for q, rows in queues.items() if rows])
        take = rng.randint(1, 40)
        rows, queues[p] = np.asarray(queues[p][:take], dtype=np.intp), queues[p][take:]
        update = stage1[p].update(data["time"][rows], {k: v[rows] for k, v in data["columns"].items()})
        late += sum(update.late.values())
        outbox[p].append((update.partials, update.mark))
    merge = PartialMerge(features, spec)
    merge.hold(frozenset(names))
    closed: list[ClosedWindow] = []
    pending = {p: list(messages) for p, messages in outbox.items()}
    delivered: dict[int, list[tuple[list[PanePartial], int | None]]] = {p: [] for p in range(partitions)}
    while any(pending.values()):
        p = rng.choice([q for q, messages in pending.items() if messages])
        message = pending[p].pop(0)
        closed += merge.add(names[p], *message)
        delivered[p].append(message)
        if rng.random() < 0.2:  # a partition re-read after a crash: an earlier message again
            closed += merge.add(names[p], *rng.choice(delivered[p]))
    return sorted((w.start_ms, w.counts.tolist()) for w in closed), late


SPECS = [WindowSpec(size_ms=MINUTE), WindowSpec(size_ms=MINUTE, allowed_lateness_ms=20_000),
         WindowSpec(size_ms=2 * MINUTE, hop_ms=30_000, allowed_lateness_ms=10_000)]


@pytest.mark.parametrize("spec", SPECS, ids=["tumbling", "tumbling+lateness", "hopping+lateness"])
@pytest.mark.parametrize("seed", range(4))
def test_merged_partials_equal_the_computation_event_by_event(features: FeatureSet, spec: WindowSpec,
                                                              seed: int) -> None:
    data = stream(seed, 3000, partitions=4)
    expected, expected_late = reference(features, spec, data, 4)
    got, late = merged(features, spec, data, 4, random.Random(seed))
    assert expected and got == expected
    assert late == expected_late > 0  # out-of-order by up to 40 s: some events are late


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), partitions=st.integers(1, 5), order=st.integers(0, 10_000))
def test_any_batching_interleaving_and_redelivery_give_the_same_windows(features: FeatureSet, seed: int,
                                                                         partitions: int, order: int) -> None:
    spec = SPECS[2]
    data = stream(seed, 800, partitions)
    one = merged(features, spec, data, partitions, random.Random(order))
    other = merged(features, spec, data, partitions, random.Random(order + 1))
    assert one == other == reference(features, spec, data, partitions)


def test_a_window_waits_for_every_partition_held(features: FeatureSet) -> None:
    spec = SPECS[0]
    merge = PartialMerge(features, spec)
    merge.hold(frozenset({"t[0]", "t[1]"}))
    stage = PartitionPanes(features, spec)
    columns = {"income": np.array([1.0, 2.0]), "age": np.array([30.0, 40.0]), "channel": np.array(["web", "app"]),
               "score": np.array([0.1, 0.2])}
    update = stage.update(np.array([T0, T0 + 2 * MINUTE]), columns)
    assert [p.pane for p in update.partials] == [T0 // MINUTE]
    assert merge.add("t[0]", update.partials, update.mark) == []  # t[1] has said nothing yet
    closed = merge.add("t[1]", [], T0 + 3 * MINUTE)
    assert [w.start_ms for w in closed] == [T0] and closed[0].rows == 1


def test_stage_one_snapshot_round_trip(features: FeatureSet) -> None:
    data = stream(3, 500, partitions=1)
    spec = SPECS[1]
    half = np.arange(250)
    first = PartitionPanes(features, spec)
    first.update(data["time"][half], {k: v[half] for k, v in data["columns"].items()})
    again = PartitionPanes(features, spec)
    again.restore(first.snapshot())
    rest = np.arange(250, 500)
    a = first.update(data["time"][rest], {k: v[rest] for k, v in data["columns"].items()})
    b = again.update(data["time"][rest], {k: v[rest] for k, v in data["columns"].items()})
    assert a.partials == b.partials and a.late == b.late and a.mark == b.mark


@pytest.mark.parametrize("spec", SPECS, ids=["tumbling", "tumbling+lateness", "hopping+lateness"])
def test_stage_two_snapshot_round_trip(features: FeatureSet, spec: WindowSpec) -> None:
    """A merge restored half-way (as after a crash or a handover) closes the same windows as one that went
    on, and still recognises the partials it had added (they are delivered again after a restore)."""
    data = stream(7, 2000, partitions=3)
    names = [f"scoring[{p}]" for p in range(3)]
    messages = []
    for p in range(3):
        stage = PartitionPanes(features, spec)
        rows = np.flatnonzero(data["partition"] == p)
        for chunk in np.array_split(rows, 8):
            update = stage.update(data["time"][chunk], {k: v[chunk] for k, v in data["columns"].items()})
            messages.append((names[p], update.partials, update.mark))
    messages.sort(key=lambda m: m[2] or 0)  # the partitions interleaved by time
    half = len(messages) // 2
    first = PartialMerge(features, spec)
    first.hold(frozenset(names))
    closed = [w for m in messages[:half] for w in first.add(*m)]
    again = PartialMerge(features, spec)
    again.restore(json.loads(json.dumps(first.snapshot())))
    assert again.snapshot() == first.snapshot()
    redelivered = [w for m in messages[half - 3:half] for w in again.add(*m)]  # added before the snapshot
    assert redelivered == []
    rest_first = [w for m in messages[half:] for w in first.add(*m)]
    rest_again = [w for m in messages[half:] for w in again.add(*m)]
    assert rest_first and rest_again == rest_first
    whole = _fresh(features, spec, names)
    assert closed + rest_first == [w for m in messages for w in whole.add(*m)]


def _fresh(features: FeatureSet, spec: WindowSpec, names: list[str]) -> PartialMerge:
    merge = PartialMerge(features, spec)
    merge.hold(frozenset(names))
    return merge


def test_late_exactly_at_the_boundary(features: FeatureSet) -> None:
    """A pane is final once the partition's largest time reaches its end plus the lateness: an event for
    it after that is late; one while the largest time is a millisecond short is not."""
    spec = SPECS[1]  # 1 minute, 20 s lateness
    columns = {"income": np.ones(3), "age": np.ones(3) * 30, "channel": np.array(["web"] * 3),
               "score": np.ones(3) / 2}
    stage = PartitionPanes(features, spec)
    boundary = T0 + MINUTE + 20_000
    update = stage.update(np.array([boundary - 1, T0 + 5, boundary]), columns)
    assert update.late == {} and [p.pane for p in update.partials] == [T0 // MINUTE]
    update = stage.update(np.array([T0 + 7]), {k: v[:1] for k, v in columns.items()})
    assert update.late == {T0 // MINUTE: 1}


def test_vectors_from_before_invalid_counts_are_read_with_zero_invalid() -> None:
    # a checkpoint or a stage-1 partial written before the invalid slots existed: same cells, no invalid
    import numpy as np

    from driftline.engine.features import FeatureSet
    from driftline.engine.profile import build_profile

    profile = build_profile({"x": np.arange(100.0), "c": np.array(["a", "b"] * 50)}, model="m", model_version="1")
    features = FeatureSet(profile)
    vector = features.count({"x": np.array([1.0, np.inf, np.nan]), "c": np.array(["a", "a", None], dtype=object)}, 3)
    assert features.invalid(vector, "x") == 1 and features.invalid_slots == {"x": features.size - 1}
    old = vector[: features.size - 1].copy()
    old[features.slices["x"].stop - 2] += 1  # the inf, where the old layout counted it: the ladder's last cell
    upgraded = features.upgrade(old)
    assert upgraded.shape == (features.size,) and features.invalid(upgraded, "x") == 0
    assert features.upgrade(vector) is vector


def test_a_window_snapshot_from_before_invalid_counts_restores() -> None:
    import numpy as np

    from driftline.engine.features import FeatureSet
    from driftline.engine.profile import build_profile
    from driftline.engine.window import WindowSpec, WindowState

    features = FeatureSet(build_profile({"x": np.arange(100.0)}, model="m", model_version="1"))
    state = WindowState(features, WindowSpec(size_ms=60_000))
    state.update(np.array([1_000, 2_000]), {"x": np.array([1.0, 2.0])})
    snapshot = state.snapshot()
    snapshot["panes"] = {p: c[:-1] for p, c in snapshot["panes"].items()}  # as an older release wrote them
    (window,) = WindowState.restore(features, snapshot).flush()
    assert window.rows == 2 and features.invalid(window.counts, "x") == 0
