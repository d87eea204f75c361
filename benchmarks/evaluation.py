"""Window evaluation: one window of current rows against the reference profile, end to end.

Timed region per window: ``FeatureSet.count`` of the window's raw columns (all 32 monitored
columns), ``FeatureSet.compare`` against the reference vector (every statistic of every column) and
``assess`` (Holm correction, min-sample gate, thresholds, dataset rule). Building the reference
profile from the reference rows is timed separately (:func:`measure_profile_build`): it happens
once per model version, not per window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.data import CATEGORICAL, DECISION, SCORE, Columns
from benchmarks.timing import Timing, measure
from driftline.engine.assess import Assessment, assess
from driftline.engine.bins import Counts
from driftline.engine.features import FeatureSet
from driftline.engine.profile import ReferenceProfile, build_profile

MODEL, MODEL_VERSION = "credit-risk", "1"


def build_reference(reference: Columns) -> tuple[ReferenceProfile, FeatureSet, Counts]:
    """Profile of the reference rows, its counting plan (layouts built) and its count vector."""
    profile = build_profile(reference, model=MODEL, model_version=MODEL_VERSION, categorical=CATEGORICAL,
                            score_column=SCORE, decision_column=DECISION)
    features = FeatureSet(profile)
    return profile, features, features.reference()


def evaluate_window(features: FeatureSet, reference: Counts, roles: Mapping[str, str], window: Columns) -> Assessment:
    rows = len(next(iter(window.values())))
    counts = features.count(window, rows)
    return assess(features.compare(reference, counts), roles)


def measure_profile_build(reference: Columns, repeats: int) -> dict[str, Any]:
    timing = measure(lambda: build_reference(reference), repeats)
    rows = len(next(iter(reference.values())))
    return {"rows": rows, **timing.as_dict(), "rows_per_s": rows / timing.median}


def measure_window(features: FeatureSet, reference: Counts, window: Columns, repeats: int) -> dict[str, Any]:
    """Timing of one window's evaluation, its stages, and what the assessment flagged."""
    roles = {name: f.role for name, f in features.profile.features.items()}
    rows = len(next(iter(window.values())))
    counts = features.count(window, rows)
    stats = features.compare(reference, counts)
    total = measure(lambda: evaluate_window(features, reference, roles, window), repeats, warmup=1)
    stages: dict[str, Timing] = {
        "count": measure(lambda: features.count(window, rows), repeats),
        "compare": measure(lambda: features.compare(reference, counts), repeats),
        "assess": measure(lambda: assess(stats, roles), repeats),
    }
    outcome = assess(stats, roles)
    columns = len(features.names)
    return {
        "rows": rows,
        "columns": columns,
        **total.as_dict(),
        "rows_per_s": rows / total.median,
        "ns_per_value": total.median / (rows * columns) * 1e9,
        "stages": {name: t.as_dict() for name, t in stages.items()},
        "flagged": {name: {"severity": f.severity, "metrics": sorted({b.metric for b in f.breaches})}
                    for name, f in outcome.features.items() if f.severity != "ok"},
        "dataset_severity": outcome.dataset.severity if outcome.dataset else None,
    }


def window_repeats(rows: int, repeats: int) -> int:
    """More repeats for small (fast, noisier) windows."""
    return repeats * 4 if rows <= 10_000 else repeats * 2 if rows <= 100_000 else repeats
