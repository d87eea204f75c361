"""Fast change detection on the score stream between window closes (river's ADWIN and Page–Hinkley).

Windows answer "has the distribution moved?" once per window; a change detector answers "did the
mean score just shift?" within seconds. river's detectors are per-value Python (ADWIN ≈ 0.5 µs per
update), so they are fed *chunk means*: the score stream is cut into consecutive chunks of
``chunk_size`` values (carrying the remainder across batches, so the result does not depend on how
the stream was batched) and each chunk's mean is one update. That is a vectorised reshape-mean per
batch and ``len(batch) / chunk_size`` detector updates.

The signals are early warnings, not decisions: they are not part of the window history and are
rebuilt from the stream after a restart.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> watch = ScoreChangeWatch(chunk_size=32)
>>> watch.update(rng.beta(2, 5, 64_000)).detections
[]
>>> [d.detector for d in watch.update(rng.beta(5, 2, 8_000)).detections][:1]
['adwin']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.errors import InvalidInput


MAX_PLAUSIBLE_MEAN = 1e100
"""Chunk means beyond this are skipped (and counted): no score is that large, and ADWIN's variance of
such values overflows for good."""


@dataclass(frozen=True)
class ChangeDetection:
    detector: str
    """``adwin`` or ``page_hinkley``."""
    chunk: int
    """Index of the chunk (from the start of the stream) at which the detector fired."""
    chunk_mean: float


@dataclass(frozen=True)
class WatchResult:
    chunks: int
    detections: list[ChangeDetection]


class ScoreChangeWatch:
    """ADWIN and Page–Hinkley over chunk means of one model version's score stream."""

    def __init__(self, chunk_size: int = 32, adwin_delta: float = 0.002,
                 page_hinkley_threshold: float = 50.0, page_hinkley_min_instances: int = 30) -> None:
        if chunk_size < 1:
            raise InvalidInput(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._settings = (adwin_delta, page_hinkley_threshold, page_hinkley_min_instances)
        self.reset()

    def reset(self) -> None:
        """Fresh detectors, no carried values: the state of a new watch."""
        from river import drift  # river is imported only when a watch is built (nothing at import time)

        delta, threshold, min_instances = self._settings
        self._detectors: dict[str, Any] = {
            "adwin": drift.ADWIN(delta=delta),  # type: ignore[no-untyped-call]
            "page_hinkley": drift.PageHinkley(threshold=threshold, min_instances=min_instances),
        }
        self._carry = np.zeros(0)
        self.chunks_seen = 0
        self.implausible_chunks = 0

    def update(self, scores: NDArray[np.float64]) -> WatchResult:
        values = np.asarray(scores, dtype=np.float64)
        values = np.concatenate((self._carry, values[np.isfinite(values)]))
        whole = len(values) // self.chunk_size * self.chunk_size
        self._carry = values[whole:]
        # Sum of scaled values: a chunk of huge (corrupt) finite scores cannot overflow to inf.
        means = (values[:whole] / self.chunk_size).reshape(-1, self.chunk_size).sum(axis=1)
        detections = []
        for offset, mean in enumerate(means.tolist()):
            if not abs(mean) <= MAX_PLAUSIBLE_MEAN:
                self.implausible_chunks += 1  # a corrupt chunk must not poison the detectors' state
                continue
            for name, detector in self._detectors.items():
                detector.update(mean)
                if detector.drift_detected:
                    detections.append(ChangeDetection(name, self.chunks_seen + offset, mean))
        self.chunks_seen += len(means)
        return WatchResult(len(means), detections)
