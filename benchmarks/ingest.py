"""Ingest throughput: ``WindowState.update`` on columnar batches against a plain numpy baseline.

The baseline computes the same histograms with the obvious numpy code over the *same* cells:
``np.bincount(np.searchsorted(layout.edges, x))`` per numeric column (side ``left`` gives the
layout's right-closed cells; NaN lands in the missing cell) and, per categorical column,
``np.searchsorted(layout.vocabulary, strings)`` checked for a hit, mapped to the layout's codes,
then ``np.bincount``. It does no windowing: one running total per column. The run checks that both
arrive at identical counts before reporting a ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.data import Columns, as_objects
from benchmarks.timing import Timing, measure, ratio
from driftline.engine.bins import CategoricalLayout, Counts, NumericLayout
from driftline.engine.features import FeatureSet
from driftline.engine.window import WindowSpec, WindowState


@dataclass(frozen=True)
class Stream:
    """A current-data stream cut into batches (views, prepared outside every timed region)."""

    times: list[NDArray[np.int64]]
    batches: list[Columns]
    rows: int

    @classmethod
    def cut(cls, times: NDArray[np.int64], columns: Columns, batch_rows: int) -> Stream:
        starts = range(0, len(times), batch_rows)
        return cls([times[lo:lo + batch_rows] for lo in starts],
                   [{k: v[lo:lo + batch_rows] for k, v in columns.items()} for lo in starts], len(times))


def numeric_layouts(features: FeatureSet) -> dict[str, NumericLayout]:
    return {n: f.layout for n, f in features.profile.features.items() if isinstance(f.layout, NumericLayout)}


def categorical_layouts(features: FeatureSet) -> dict[str, CategoricalLayout]:
    return {n: f.layout for n, f in features.profile.features.items() if isinstance(f.layout, CategoricalLayout)}


def baseline_numeric(layout: NumericLayout, values: NDArray[Any]) -> Counts:
    return np.bincount(np.searchsorted(layout.edges, values), minlength=layout.n_cells)


def baseline_categorical(layout: CategoricalLayout, strings: NDArray[Any]) -> Counts:
    position = np.searchsorted(layout.vocabulary, strings)
    clipped = np.minimum(position, len(layout.vocabulary) - 1)
    codes = np.where(layout.vocabulary[clipped] == strings, layout.vocabulary_codes[clipped], layout.unseen_code)
    return np.bincount(codes, minlength=layout.n_cells)


def run_baseline(features: FeatureSet, stream: Stream) -> Counts:
    """Histograms of the whole stream, laid out as one driftline count vector (for the equality check)."""
    numeric, categorical = numeric_layouts(features), categorical_layouts(features)
    total = features.empty()
    for batch in stream.batches:
        total[0] += len(next(iter(batch.values())))
        for name, num in numeric.items():
            total[features.slices[name]] += baseline_numeric(num, batch[name])
        for name, cat in categorical.items():
            total[features.slices[name]] += baseline_categorical(cat, batch[name])
    return total


def run_driftline(features: FeatureSet, spec: WindowSpec, stream: Stream) -> tuple[Counts, int]:
    """Feed every batch through a fresh ``WindowState``; the sum of all closed windows and their number."""
    state = WindowState(features, spec)
    closed = []
    for times, batch in zip(stream.times, stream.batches, strict=True):
        closed += state.update(times, batch).closed
    closed += state.flush()
    return np.sum([w.counts for w in closed], axis=0), len(closed)


def stage(stream: Stream, layouts: dict[str, Any], count: Callable[[Any, Any], object]) -> Callable[[], None]:
    """A run that applies ``count(layout, values)`` to every batch of the named columns."""

    def run() -> None:
        for batch in stream.batches:
            for name, layout in layouts.items():
                count(layout, batch[name])
    return run


def measure_ingest(features: FeatureSet, spec: WindowSpec, stream: Stream, repeats: int) -> dict[str, Any]:
    numeric, categorical = numeric_layouts(features), categorical_layouts(features)
    n_cols = len(numeric) + len(categorical)
    window_sum, windows = run_driftline(features, spec, stream)
    identical = bool(np.array_equal(window_sum, run_baseline(features, stream)))
    driftline = measure(lambda: run_driftline(features, spec, stream), repeats, warmup=1)
    baseline = measure(lambda: run_baseline(features, stream), repeats, warmup=1)
    object_stream = Stream(stream.times, [as_objects(b) for b in stream.batches], stream.rows)
    stages: dict[str, tuple[Timing, int]] = {
        "driftline numeric counting (sort + edge search)": (
            measure(stage(stream, numeric, NumericLayout.count), repeats), len(numeric)),
        "  of which np.sort": (measure(stage(stream, numeric, lambda _, v: np.sort(v)), repeats), len(numeric)),
        "driftline categorical encoding + count (str arrays)": (
            measure(stage(stream, categorical, CategoricalLayout.count), repeats), len(categorical)),
        "driftline categorical encoding + count (object arrays)": (
            measure(stage(object_stream, categorical, CategoricalLayout.count), repeats), len(categorical)),
        "driftline FeatureSet.count (all columns, no windows)": (
            measure(lambda: [features.count(b, len(t)) for t, b in zip(stream.times, stream.batches, strict=True)],
                    repeats), n_cols),
        "baseline numeric (searchsorted + bincount)": (
            measure(stage(stream, numeric, baseline_numeric), repeats), len(numeric)),
        "baseline categorical (searchsorted + bincount)": (
            measure(stage(stream, categorical, baseline_categorical), repeats), len(categorical)),
    }
    return {
        "rows": stream.rows,
        "batch_rows": len(stream.times[0]),
        "batches": len(stream.batches),
        "columns": n_cols,
        "numeric_columns": len(numeric),
        "categorical_columns": len(categorical),
        "window": {"size_ms": spec.size_ms, "hop_ms": spec.hop_ms, "closed_windows": windows},
        "histograms_identical": identical,
        "driftline": _throughput(driftline, stream.rows, n_cols),
        "baseline": _throughput(baseline, stream.rows, n_cols),
        "ratio_vs_baseline": ratio(baseline.median, driftline.median),
        "stages": {name: {**t.as_dict(), "columns": cols, "ns_per_value": t.median / (stream.rows * cols) * 1e9}
                   for name, (t, cols) in stages.items()},
    }


def _throughput(timing: Timing, rows: int, columns: int) -> dict[str, Any]:
    return {**timing.as_dict(), "rows_per_s": rows / timing.median,
            "values_per_s": rows * columns / timing.median, "ns_per_value": timing.median / (rows * columns) * 1e9}
