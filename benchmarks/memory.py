"""Memory: bytes per count vector, per open pane and per model, measured with ``tracemalloc``.

A model is one :class:`~driftline.engine.monitor.ModelMonitor` loaded from its reference profile's
JSON. Its open panes are made with a hopping one-day window of one-minute panes whose allowed
lateness (one day) keeps every window open, so the state holds exactly N panes and nothing closes.
Retained memory is what ``tracemalloc`` still counts after the model is built and fed and a full GC
has run; input batches are allocated before tracing starts and are not counted.

Expected: ``bytes(model, N panes) ≈ F + N · (8 · S + c)``, where ``S = FeatureSet.size``, ``F`` is the
model's fixed cost (profile, layouts, plan, reference vector, score watch) and ``c`` the per-pane
overhead (ndarray header, dict slot, key). Once a window has closed, the monitor also keeps the
previous window's vector (one more ``8 · S``).
"""

from __future__ import annotations

import gc
import gzip
import json
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from benchmarks.data import Columns, generate
from driftline.engine.monitor import ModelMonitor
from driftline.engine.profile import ReferenceProfile
from driftline.engine.window import WindowSpec

T = TypeVar("T")
MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
PANE_SPEC = WindowSpec(size_ms=DAY_MS, hop_ms=MINUTE_MS, allowed_lateness_ms=DAY_MS)
PANE_COUNTS = (0, 1, 60, 1_440)
START_MS = 1_700_000_000_000 // DAY_MS * DAY_MS


def traced(build: Callable[[], T]) -> tuple[T, int]:
    """The built object and the bytes it retains (traced allocations still alive after a full GC)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return built, after - before


def model_with_panes(profile_json: dict[str, Any], panes: int, rows: Columns) -> Callable[[], ModelMonitor]:
    """A builder of a monitor fed one event per minute for ``panes`` minutes (one open pane each)."""
    times = START_MS + np.arange(panes, dtype=np.int64) * MINUTE_MS
    batch = {name: values[:panes] for name, values in rows.items()}

    def build() -> ModelMonitor:
        monitor = ModelMonitor(ReferenceProfile.from_dict(profile_json), PANE_SPEC)
        if panes:
            update = monitor.update(times, batch)
            assert not update.reports and len(monitor.state.panes) == panes
        return monitor
    return build


def measure_memory(profile: ReferenceProfile, seed: int) -> dict[str, Any]:
    profile_json = profile.to_dict()
    rows = generate(max(PANE_COUNTS), seed=seed)
    ModelMonitor(profile, PANE_SPEC)  # imports river (score watch) outside the traced region
    models = {}
    size = 0
    for panes in PANE_COUNTS:
        monitor, retained = traced(model_with_panes(profile_json, panes, rows))
        size = monitor.features.size
        models[panes] = retained
        del monitor
    low, high = PANE_COUNTS[-2], PANE_COUNTS[-1]
    per_pane = (models[high] - models[low]) / (high - low)
    compact = json.dumps(profile_json, sort_keys=True, separators=(",", ":")).encode()
    return {
        "feature_set_size": size,
        "vector_bytes": size * 8,
        "per_pane_bytes_measured": per_pane,
        "per_pane_overhead_bytes": per_pane - size * 8,
        "model_fixed_bytes": models[0],
        "model_bytes_by_open_panes": {str(n): b for n, b in models.items()},
        "pane_spec": {"size_ms": PANE_SPEC.size_ms, "hop_ms": PANE_SPEC.hop_ms,
                      "allowed_lateness_ms": PANE_SPEC.allowed_lateness_ms},
        "profile_json_bytes": len(profile.to_json().encode()),
        "profile_json_compact_bytes": len(compact),
        "profile_json_gzip_bytes": len(gzip.compress(compact)),
        "formula": "bytes(model, N open panes) ~= model_fixed_bytes + N * (8 * feature_set_size + "
                   "per_pane_overhead_bytes); + 8 * feature_set_size for the previous window once one closed",
    }
