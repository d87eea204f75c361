"""Fast change detection on the score stream between window closes: ADWIN's test, batch-native.

:class:`ScoreChangeWatch` answers "did the mean score just shift?" within a few hundred events,
evaluating ADWIN (Bifet and Gavaldà, 2007) per batch with numpy; its state is a small plain-data
snapshot. How it works: docs/engine.md, *Score change watch*.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> watch = ScoreChangeWatch()
>>> watch.update(rng.beta(2, 5, 64_000)).detections
[]
>>> found = watch.update(rng.beta(2.6, 5, 8_000)).detections
>>> [(d.detector, d.index, round(d.before_mean, 3), round(d.after_mean, 3)) for d in found]
[('adwin', 64255, 0.286, 0.352)]
>>> restored = ScoreChangeWatch.restore(watch.snapshot())
>>> restored.snapshot() == watch.snapshot()
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.ids import digest
from driftline.errors import InvalidInput


MAX_PLAUSIBLE = 1e100
"""Scores beyond this magnitude are skipped (and counted): no score is that large, and the window's
variance of such values overflows for good."""

CHECK_ROWS = 2_048
"""Checks evaluated per array expression (bounds the temporary arrays of a very large batch)."""

@dataclass(frozen=True)
class ChangeDetection:
    detector: str
    """``adwin``."""
    index: int
    """Position of the value at which the detector fired, counted over the values the watch accepted
    since it was created (0-based)."""
    event_time_ms: int | None
    """Event time of that value (epoch ms), when times were handed in."""
    change_index: int
    """Where the change is estimated to start: the first value of the newer part of the most significant cut."""
    before_mean: float
    """Mean of the older part of that cut (``μ0``)."""
    after_mean: float
    """Mean of the newer part (``μ1``)."""
    before_count: int
    after_count: int
    bound: float
    """ADWIN's ``ε`` for that cut: ``|μ0 − μ1|`` exceeded it."""
    model: str = ""
    model_version: str = ""
    reference_hash: str = ""
    """The reference profile of the model version watched (filled in by the monitor)."""

    @property
    def detection_id(self) -> str:
        """Deterministic: the same stream gives the same id, so a replay or restart is idempotent."""
        return digest("change", self.model, self.model_version, self.detector, self.index)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WatchResult:
    values: int
    """Values accepted (finite and plausible) from this batch."""
    detections: list[ChangeDetection] = field(default_factory=list)


@dataclass(frozen=True)
class WatchSnapshot:
    """The whole state of a :class:`ScoreChangeWatch`, as plain data (``as_dict`` is JSON-ready)."""

    settings: tuple[float, int, int, int, int]
    """(significance_level, clock, cuts_per_level, min_window_length, grace_period)."""
    seen: int
    start: int
    pivot: float | None
    end_sums: tuple[float, float]
    positions: tuple[int, ...]
    sums: tuple[float, ...]
    squares: tuple[float, ...]
    skipped: int
    detections: int

    def as_dict(self) -> dict[str, Any]:
        return {"settings": list(self.settings), "seen": self.seen, "start": self.start, "pivot": self.pivot,
                "end_sums": list(self.end_sums), "positions": list(self.positions), "sums": list(self.sums),
                "squares": list(self.squares), "skipped": self.skipped, "detections": self.detections}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WatchSnapshot:
        s = data["settings"]
        pivot = data["pivot"]
        return cls((float(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4])), int(data["seen"]),
                   int(data["start"]), None if pivot is None else float(pivot),
                   (float(data["end_sums"][0]), float(data["end_sums"][1])),
                   tuple(int(p) for p in data["positions"]), tuple(float(v) for v in data["sums"]),
                   tuple(float(v) for v in data["squares"]), int(data["skipped"]), int(data["detections"]))


class ScoreChangeWatch:
    """ADWIN's mean-change test over one model version's score stream, fed whole batches."""

    def __init__(self, significance_level: float = 0.002, clock: int = 32, cuts_per_level: int = 5,
                 min_window_length: int = 5, grace_period: int = 10) -> None:
        if not 0 < significance_level < 1:
            raise InvalidInput(f"significance_level must be in (0, 1), got {significance_level}")
        for name, value, low in (("clock", clock, 1), ("cuts_per_level", cuts_per_level, 1),
                                 ("min_window_length", min_window_length, 1), ("grace_period", grace_period, 0)):
            if int(value) != value or value < low:
                raise InvalidInput(f"{name} must be an integer >= {low}, got {value}")
        self.significance_level = float(significance_level)
        self.clock = int(clock)
        self.cuts_per_level = int(cuts_per_level)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        m = self.cuts_per_level
        self._near = np.arange(self.min_window_length, 2 * m, dtype=np.int64)
        """Distances (``n1``) of the cuts at full resolution (level 0) that can be tested."""
        self.reset()

    def reset(self) -> None:
        """The state of a new watch."""
        self.seen = 0
        """Values accepted so far (the index of the next one)."""
        self.start = 0
        """Index of the window's first value."""
        self._pivot: float | None = None
        self._end = (0.0, 0.0)
        self._positions = np.zeros(0, dtype=np.int64)
        self._sums = np.zeros(0)
        self._squares = np.zeros(0)
        self.skipped = 0
        """Non-finite or implausible values skipped."""
        self.detections = 0
        self.drift_detected = False
        """Whether the last :meth:`update` detected a change."""

    @property
    def width(self) -> int:
        """Values in the window."""
        return self.seen - self.start

    # -- updates ----------------------------------------------------------------------------------

    def update(self, values: NDArray[Any], event_time_ms: NDArray[np.int64] | None = None) -> WatchResult:
        """Feed the next values of the stream (in stream order); ``event_time_ms``, aligned with them, dates
        the detections."""
        x = np.asarray(values, dtype=np.float64).ravel()
        keep = np.abs(x) <= MAX_PLAUSIBLE  # False for NaN too
        times = None if event_time_ms is None else np.asarray(event_time_ms, dtype=np.int64).ravel()
        if times is not None and len(times) != len(x):
            raise InvalidInput(f"event_time_ms has {len(times)} values for {len(x)} scores")
        if not keep.all():
            self.skipped += int(len(x) - keep.sum())
            x = x[keep]
            times = None if times is None else times[keep]
        found: list[ChangeDetection] = []
        offset = 0
        while offset < len(x):
            detection, used = self._advance(x[offset:])
            if detection is not None:
                at = offset + used - 1
                found.append(ChangeDetection(event_time_ms=None if times is None else int(times[at]),
                                             **detection))
            offset += used
        self.drift_detected = bool(found)
        return WatchResult(len(x), found)

    def _advance(self, x: NDArray[np.float64]) -> tuple[dict[str, Any] | None, int]:
        """Take values from the front of ``x`` up to the first detection (or all of them): (the detection,
        how many values were used)."""
        if self._pivot is None:
            self._pivot = float(x[0])
        y = x - self._pivot
        sums = np.cumsum(np.concatenate(((self._end[0],), y)))[1:]  # sequential: the same for any batching
        squares = np.cumsum(np.concatenate(((self._end[1],), y * y)))[1:]
        seen, start = self.seen, self.start
        # Checks: prefix ends p with p − start a multiple of the clock and more than grace_period.
        lowest = max(seen + 1, start + self.grace_period + 1)
        first = lowest + (-(lowest - start)) % self.clock
        checks = np.arange(first, seen + len(x) + 1, self.clock, dtype=np.int64)
        for lo in range(0, len(checks), CHECK_ROWS):
            hit = self._check(checks[lo:lo + CHECK_ROWS], sums, squares)
            if hit is not None:
                used = int(hit["index"]) + 1 - seen
                self._restart(int(hit["index"]) + 1)
                return hit, used
        self._keep(sums, squares, seen + len(x))
        return None, len(x)

    def _check(self, checks: NDArray[np.int64], sums: NDArray[np.float64], squares: NDArray[np.float64]
               ) -> dict[str, Any] | None:
        """ADWIN's test at each check position (a prefix end) against every cut kept there; the first
        check that fires, as a detection's fields.

        Two passes over the (cuts × checks) arrays: a necessary condition first, ``D² > s·n0·n1`` with
        ``D`` the older part's sum less ``n0·μ`` and ``s = 2·σ²·δ'/|W|`` (ADWIN's ``|μ0 − μ1| > ε``
        implies it, as ``1/n0' + 1/n1' ≥ |W|/(n0·n1)``), then the exact bound only on the checks that
        pass it (rarely any). The checks run along the arrays' last, contiguous axis, so the per-check
        values broadcast at full speed."""
        if not len(checks):
            return None
        seen, start, m, lmin = self.seen, self.start, self.cuts_per_level, self.min_window_length
        width = checks - start  # |W| at each check
        levels = max(int(np.frexp(float(width[-1] // m))[1]) - 1, 0)  # the largest level any check reaches
        shifts = np.arange(1, levels + 1, dtype=np.int64)
        steps = np.left_shift(1, shifts)
        # Level k's m cuts at a check: n0 = base − i·2^k, base = (|W| − m·2^k) rounded down to 2^k.
        base = (width[:, None] - m * steps) & ~(steps - 1)
        table, lo, offset = self._table(sums, width, base, shifts)
        # Every cut as a row (level 0 at full resolution, n1 = 2m − 1 … lmin, then m per level), every
        # check as a column: where its prefix sum is in the table, and its n0.
        near = np.arange(2 * m - 1, lmin - 1, -1, dtype=np.int64)
        ranks = np.arange(m - 1, -1, -1, dtype=np.int64)
        first = np.minimum(((base - (m - 1) * steps - lo[1:]) >> shifts) + offset[1:], len(table) - m)
        where = np.empty((len(near) + levels * m, len(checks)), dtype=np.int64)
        np.subtract((width - lo[0] + offset[0])[None, :], near[:, None], out=where[:len(near)])
        np.add(first.T[:, None, :], np.arange(m)[:, None], out=where[len(near):].reshape(levels, m, len(checks)))
        prefix = table[where]
        n = width.astype(np.float64)
        f0 = np.empty(where.shape)
        np.subtract(n, near[:, None], out=f0[:len(near)])
        np.subtract(base.T[:, None, :].astype(np.float64), (ranks * steps[:, None])[..., None],
                    out=f0[len(near):].reshape(levels, m, len(checks)))
        at = checks - seen - 1
        total = sums[at]
        mean = total / n
        variance = np.maximum(squares[at] / n - mean * mean, 0.0)
        log_term = np.log(2.0 * np.log(n) / self.significance_level)
        d = np.multiply(f0, mean)
        np.subtract(prefix, d, out=d)
        np.multiply(d, d, out=d)
        rhs = np.subtract(n, f0)
        np.multiply(rhs, f0, out=rhs)
        np.multiply(rhs, 2.0 * variance * log_term / n, out=rhs)
        passes = np.greater(d, rhs)
        # n0 grows from check to check: only the cuts too short at the first check need the mask.
        short = np.flatnonzero(f0[:, 0] < lmin)
        if len(short):
            passes[short] &= f0[short] >= lmin
        if not passes.any():
            return None
        for check in np.flatnonzero(passes.any(axis=0)).tolist():
            hit = self._exact(check, checks, width, total, mean, variance, log_term, prefix[:, check], f0[:, check])
            if hit is not None:
                return hit
        return None

    def _exact(self, check: int, checks: NDArray[np.int64], width: NDArray[np.int64], total: NDArray[np.float64],
               mean: NDArray[np.float64], variance: NDArray[np.float64], log_term: NDArray[np.float64],
               prefix: NDArray[np.float64], f0: NDArray[np.float64]) -> dict[str, Any] | None:
        """river's bound for the cuts of one check: the detection's fields when one exceeds it."""
        lmin = self.min_window_length
        n = float(width[check])
        ok = (f0 >= lmin) & (n - f0 >= lmin)
        if not ok.any():
            return None
        prefix, f0 = prefix[ok], f0[ok]
        f1 = n - f0
        gap = np.abs(prefix - f0 * mean[check]) * (n / (f0 * f1))  # |μ0 − μ1|
        harmonic = 1.0 / (f0 - (lmin - 1)) + 1.0 / (f1 - (lmin - 1))
        bound = np.sqrt(2.0 * harmonic * variance[check] * log_term[check]) + (2.0 / 3.0) * log_term[check] * harmonic
        fired = gap > bound
        if not fired.any():
            return None
        cut = int(np.argmax(np.where(fired, gap / bound, -1.0)))
        k0 = int(f0[cut])
        k1 = int(width[check]) - k0
        pivot = self._pivot_value()
        return {"detector": "adwin", "index": int(checks[check]) - 1, "change_index": self.start + k0,
                "before_mean": float(prefix[cut]) / k0 + pivot,
                "after_mean": (float(total[check]) - float(prefix[cut])) / k1 + pivot,
                "before_count": k0, "after_count": k1, "bound": float(bound[cut])}

    def _table(self, sums: NDArray[np.float64], width: NDArray[np.int64], base: NDArray[np.int64],
               shifts: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
        """The prefix sums every cut of these checks can need, level by level: for level k, at the
        window-relative positions ``lo_k, lo_k + 2^k, …`` up to the newest check's largest cut. Returns
        (the table, ``lo`` per level, where each level starts in the table); level 0 first."""
        m, seen, start = self.cuts_per_level, self.seen, self.start
        lo = np.concatenate(([int(width[0]) - (2 * m - 1)], base[0] - (m - 1) * np.left_shift(1, shifts)))
        hi = np.concatenate(([int(width[-1])], base[-1]))
        all_shifts = np.concatenate(([0], shifts))
        steps = np.left_shift(1, all_shifts)
        counts = np.maximum(((hi - lo) >> all_shifts) + 1, 0)
        old = np.minimum(np.maximum((seen - start - lo) // steps + 1, 0), counts)  # positions at or before ``seen``
        old_offset = np.cumsum(old) - old
        rel = np.repeat(lo, old) + (np.arange(int(old.sum()), dtype=np.int64) - np.repeat(old_offset, old)) \
            * np.repeat(steps, old)
        old_values = np.zeros(len(rel))
        if len(rel) and len(self._positions):
            where = np.minimum(np.searchsorted(self._positions, start + rel), len(self._positions) - 1)
            old_values = np.where(rel > 0, self._sums[where], 0.0)
        first = start + lo + old * steps - seen - 1
        parts: list[NDArray[np.float64]] = []
        for k, (a, n_old, f, count, step) in enumerate(zip(old_offset.tolist(), old.tolist(), first.tolist(),
                                                           counts.tolist(), steps.tolist(), strict=True)):
            parts.append(old_values[a:a + n_old])
            parts.append(sums[f:f + (count - n_old) * step:step])
        return np.concatenate(parts), lo, np.cumsum(counts) - counts

    def _pivot_value(self) -> float:
        return 0.0 if self._pivot is None else self._pivot

    def _keep(self, sums: NDArray[np.float64], squares: NDArray[np.float64], end: int) -> None:
        """Advance to ``end`` (the batch's values taken) and keep only the prefix positions a later
        check can cut at: ~m per level."""
        m, start, seen = self.cuts_per_level, self.start, self.seen
        width = end - start
        levels = max(int(np.frexp(float(width // m))[1]) - 1, 0)
        shift = np.repeat(np.arange(1, levels + 1, dtype=np.int64), m)
        step = np.left_shift(1, shift)
        rank = np.arange(m * levels, dtype=np.int64) % m
        rel = np.concatenate((width - np.arange(0, 2 * m, dtype=np.int64),
                              ((width - m * step) & ~(step - 1)) - rank * step))
        fresh = np.sort(rel[(rel + start > seen) & (rel > 0)])
        distinct = np.ones(len(fresh), dtype=bool)  # np.unique without its hashing (slower on ~80 values)
        distinct[1:] = fresh[1:] != fresh[:-1]
        fresh = fresh[distinct] + start
        distance = end - self._positions
        level = np.maximum(np.frexp((distance // m).astype(np.float64))[1] - 1, 0)
        kept = ((self._positions - start) & (np.left_shift(1, level) - 1)) == 0
        at = fresh - seen - 1
        self._positions = np.concatenate((self._positions[kept], fresh))
        self._sums = np.concatenate((self._sums[kept], sums[at]))
        self._squares = np.concatenate((self._squares[kept], squares[at]))
        if len(sums):
            self._end = (float(sums[-1]), float(squares[-1]))
        self.seen = end

    def _restart(self, end: int) -> None:
        """A change was detected at value ``end - 1``: the window restarts empty at ``end``."""
        self.seen = self.start = end
        self._pivot = None
        self._end = (0.0, 0.0)
        self._positions = np.zeros(0, dtype=np.int64)
        self._sums = np.zeros(0)
        self._squares = np.zeros(0)
        self.detections += 1

    # -- state ------------------------------------------------------------------------------------

    def snapshot(self) -> WatchSnapshot:
        return WatchSnapshot(
            (self.significance_level, self.clock, self.cuts_per_level, self.min_window_length, self.grace_period),
            self.seen, self.start, self._pivot, self._end, tuple(self._positions.tolist()),
            tuple(self._sums.tolist()), tuple(self._squares.tolist()), self.skipped, self.detections)

    @classmethod
    def restore(cls, snapshot: WatchSnapshot | dict[str, Any]) -> ScoreChangeWatch:
        s = snapshot if isinstance(snapshot, WatchSnapshot) else WatchSnapshot.from_dict(snapshot)
        watch = cls(*s.settings)
        watch.seen, watch.start, watch._pivot, watch._end = s.seen, s.start, s.pivot, s.end_sums
        watch._positions = np.asarray(s.positions, dtype=np.int64)
        watch._sums = np.asarray(s.sums, dtype=np.float64)
        watch._squares = np.asarray(s.squares, dtype=np.float64)
        watch.skipped, watch.detections = s.skipped, s.detections
        return watch
