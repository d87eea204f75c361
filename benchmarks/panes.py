"""Windowing overhead against the number of panes per window (hopping windows).

A hopping window of ``size / hop`` panes keeps that many count vectors open. This measures one
``WindowState.update`` of a 1,000-row batch once a full window of panes is open: (a) a batch that
advances the watermark inside the newest pane (closes nothing) and (b) a batch in the next pane
(closes exactly one window and drops one pane) — the steady state of a live stream. The counting of
1,000 rows costs about the same in every case, so the differences are the window bookkeeping.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.data import Columns
from benchmarks.timing import measure
from driftline.engine.features import FeatureSet
from driftline.engine.window import WindowSpec, WindowState

MINUTE_MS = 60_000
CASES: tuple[tuple[str, WindowSpec], ...] = (
    ("tumbling 1 h", WindowSpec(size_ms=60 * MINUTE_MS)),
    ("hopping 1 h / 1 min", WindowSpec(size_ms=60 * MINUTE_MS, hop_ms=MINUTE_MS)),
    ("hopping 1 day / 15 min", WindowSpec(size_ms=1_440 * MINUTE_MS, hop_ms=15 * MINUTE_MS)),
    ("hopping 1 day / 1 min", WindowSpec(size_ms=1_440 * MINUTE_MS, hop_ms=MINUTE_MS)),
)
BATCH_ROWS = 1_000
START_MS = 1_700_000_000_000 // (1_440 * MINUTE_MS) * (1_440 * MINUTE_MS)


def filled_state(features: FeatureSet, spec: WindowSpec, rows: Columns) -> tuple[WindowState, int]:
    """A state with one event in each pane of one full window; returns it and its newest pane."""
    panes = spec.panes_per_window
    times = START_MS + np.arange(panes, dtype=np.int64) * spec.hop
    state = WindowState(features, spec)
    state.update(times, {name: values[:panes] for name, values in rows.items()})
    return state, panes - 1


def measure_case(features: FeatureSet, spec: WindowSpec, rows: Columns, repeats: int) -> dict[str, Any]:
    state, newest = filled_state(features, spec, rows)
    batch = {name: values[:BATCH_ROWS] for name, values in rows.items()}
    offsets = np.arange(BATCH_ROWS, dtype=np.int64)
    calls = {"within": 0, "closing": 0}
    closed: list[int] = []

    def within_pane() -> None:  # times inside the newest pane, each call later than the last
        calls["within"] += 1
        base = START_MS + newest * spec.hop + calls["within"] * BATCH_ROWS
        closed.append(len(state.update(base + offsets, batch).closed))

    def next_pane() -> None:
        calls["closing"] += 1
        base = START_MS + (newest + calls["closing"]) * spec.hop
        closed.append(len(state.update(base + offsets, batch).closed))

    within = measure(within_pane, repeats)
    assert not any(closed)
    closed.clear()
    closing = measure(next_pane, repeats)
    assert all(n == 1 for n in closed), closed
    return {
        "panes_per_window": spec.panes_per_window,
        "open_panes": len(state.panes),
        "update_within_pane": within.as_dict(),
        "update_closing_one_window": closing.as_dict(),
        "max_rows_per_s_at_this_batch": BATCH_ROWS / within.median,
    }


def measure_pane_scaling(features: FeatureSet, rows: Columns, repeats: int) -> dict[str, Any]:
    return {"batch_rows": BATCH_ROWS,
            "cases": {label: measure_case(features, spec, rows, repeats) for label, spec in CASES}}
