"""Wall-clock timing helpers: median of repeats, all runs kept, and an optional one-core pin.

>>> t = measure(lambda: sum(range(1_000)), repeats=3)
>>> len(t.runs), t.median >= 0.0
(3, True)
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Seconds per run of one case; ``median`` is the figure reported, the runs show the noise."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.runs), max(self.runs)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.spread
        return {"median_s": self.median, "min_s": low, "max_s": high, "runs_s": list(self.runs)}


def measure(run: Callable[[], object], repeats: int, warmup: int = 0) -> Timing:
    """Time ``run()`` ``repeats`` times after ``warmup`` untimed calls; a full GC precedes each run."""
    for _ in range(warmup):
        run()
    runs = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


@contextmanager
def one_core(cpu: int | None) -> Iterator[int | None]:
    """Pin this process to one CPU for the block (Linux); yields the CPU used, or None if not pinned.

    numpy's sort/search/bincount are single-threaded anyway; the pin makes "one core" explicit and
    keeps the scheduler from migrating the process mid-measurement.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, previous)
