"""The score change watch through the pipeline: detections in the batch's outcome, in the audit trail at
the detection's event time, and restored from a pipeline snapshot (a restart gives the same ones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from driftline.audit import audit_entries
from driftline.config import Config
from driftline.connectors.profiles import save_profile
from driftline.events import COMBINED, Events
from driftline.pipeline import Pipeline

from conftest import small_profile

T0 = 1_767_225_600_000


def config(tmp_path: Path, **watch: object) -> Config:
    profile = small_profile()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m-1.json"
    save_profile(profile, path)
    return Config.model_validate({
        "windows": {"size": "1h", "allowed_lateness": "1m"},
        "models": [{"name": "m", "references": {"1": str(path)}, "policy": {"change_watch": watch}}],
    })


def events(n: int, seed: int = 3, shift_at: int | None = None, spacing_ms: int = 2_400) -> Events:
    rng = np.random.default_rng(seed)
    score = rng.beta(2.0, 5.0, n)
    if shift_at is not None:
        score[shift_at:] = rng.beta(3.0, 5.0, n - shift_at)
    return Events(
        np.full(n, COMBINED, dtype=np.int8), np.array([f"r{i}" for i in range(n)], dtype=object),
        np.full(n, "m", dtype=object), np.full(n, "1", dtype=object),
        T0 + np.arange(n, dtype=np.int64) * spacing_ms, score,
        rng.choice(np.array(["approve", "decline"], dtype=object), n),
        {"x": rng.normal(0, 1, n), "c": rng.choice(np.array(["a", "b", "c"], dtype=object), n)},
        np.array([f"line {i}" for i in range(n)], dtype=object))


def run(pipeline: Pipeline, batch: Events, cuts: list[int]) -> tuple[list[object], list[object]]:
    detections, audit = [], []
    bounds = [0, *cuts, len(batch)]
    for lo, hi in zip(bounds, bounds[1:]):
        step = pipeline.process(batch.take(np.arange(lo, hi)))
        detections += step.detections
        audit += [e for e in audit_entries(step)]
    return detections, audit


def test_detections_are_dated_by_the_event_where_the_watch_fired(tmp_path: Path) -> None:
    batch = events(30_000, shift_at=20_000)
    pipeline = Pipeline(config(tmp_path))
    detections, audit = run(pipeline, batch, [7_000, 21_000])
    assert detections, "the score shift at event 20,000 is detected"
    first = detections[0]
    assert (first.model, first.model_version, first.detector) == ("m", "1", "adwin")
    assert 20_000 <= first.index < 22_000
    assert first.event_time_ms == int(batch.event_time[first.index])  # not the batch's newest event
    entries = [e for e in audit if e.action == "changewatch.adwin"]
    assert [(e.event_time_ms, e.subject_id) for e in entries] == [(d.event_time_ms, d.detection_id) for d in detections]
    details = json.loads(entries[0].details)
    assert details["event_index"] == first.index and details["after_mean"] > details["before_mean"]


def test_stationary_scores_raise_no_detection(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path))
    detections, _ = run(pipeline, events(60_000, seed=8), [10_000, 30_000])
    assert detections == []


@pytest.mark.parametrize("cut", [5_000, 20_001, 20_700, 27_000])
def test_a_restart_from_a_pipeline_snapshot_gives_the_same_detections_and_audit(tmp_path: Path, cut: int) -> None:
    batch = events(30_000, shift_at=20_000)
    cuts = [3_000, cut, 29_000]
    expected = run(Pipeline(config(tmp_path)), batch, cuts)
    assert expected[0]

    first = Pipeline(config(tmp_path))
    head = run(first, batch.take(np.arange(cut)), [3_000] if cut > 3_000 else [])
    state = json.loads(json.dumps(first.snapshot(), allow_nan=False))  # as a checkpoint stores it
    restarted = Pipeline(config(tmp_path))
    restarted.restore(state)
    tail = run(restarted, batch.take(np.arange(cut, len(batch))), [29_000 - cut])
    assert head[0] + tail[0] == expected[0]
    assert [e.entry_id for e in head[1] + tail[1]] == [e.entry_id for e in expected[1]]


def test_the_watch_can_be_switched_off(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path, enabled=False))
    detections, _ = run(pipeline, events(30_000, shift_at=20_000), [])
    assert detections == []


def test_a_detection_asks_for_a_rollback_only_when_the_policy_says_so(tmp_path: Path) -> None:
    batch = events(30_000, shift_at=20_000)
    quiet = Pipeline(config(tmp_path / "off"))
    steps = [quiet.process(batch)]
    assert steps[0].detections and not [r for s in steps for r in s.rollbacks if r.alert_id ==
                                        steps[0].detections[0].detection_id]
    acting = Pipeline(config(tmp_path / "on", rollback=True))
    step = acting.process(batch)
    first = step.detections[0]
    requests = [r for r in step.rollbacks if r.alert_id == first.detection_id]
    assert len(requests) == 1
    request = requests[0]
    assert (request.model, request.model_version, request.subject) == ("m", "1", "score")
    assert request.status == "dry_run"  # the fleet's guards still apply (dry-run is on by default)
    assert request.window.end_ms == first.event_time_ms


def test_scores_outside_the_valid_range_never_reach_the_watch() -> None:
    # a corrupt score of 1e29 on a model whose scores lie in [0, 1]: counted invalid by the windows, and
    # no change detection (before, ADWIN saw the mean jump to 1e25 and fired)
    from driftline.engine.monitor import ModelMonitor
    from driftline.engine.profile import build_profile
    from driftline.engine.window_spec import WindowSpec

    rng = np.random.default_rng(3)
    profile = build_profile({"score": rng.beta(2.0, 5.0, 5_000), "x": rng.normal(size=5_000)}, model="m",
                            model_version="1", score_column="score", valid_ranges={"score": (0.0, 1.0)})
    monitor = ModelMonitor(profile, WindowSpec(size_ms=3_600_000), watch_score=True)
    scores = rng.beta(2.0, 5.0, 20_000)
    scores[10_000] = 1e29
    times = np.arange(20_000, dtype=np.int64) * 1_000
    update = monitor.update(times, {"score": scores, "x": rng.normal(size=20_000)})
    monitor.flush()
    assert update.detections + monitor.take_detections() == []
