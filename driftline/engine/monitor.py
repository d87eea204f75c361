"""One model version's monitor: windows in, assessed window reports out.

It wires the engine for one (model, version): counting plan, window state, statistics against the
reference and the previous window, assessment and score change watch; decisions are the :class:`Decider`'s.

>>> import numpy as np
>>> from driftline.engine.profile import build_profile
>>> rng = np.random.default_rng(1)
>>> profile = build_profile({"x": rng.normal(0, 1, 5_000)}, model="m", model_version="1")
>>> monitor = ModelMonitor(profile, WindowSpec(size_ms=1_000))
>>> times = np.repeat(np.arange(3) * 1_000, 1_000)
>>> update = monitor.update(times, {"x": rng.normal(0, 1, 3_000) + np.repeat([0.0, 0.0, 1.0], 1_000)})
>>> [r.assessment.features["x"].severity for r in update.reports + monitor.flush()]
['ok', 'ok', 'critical']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.assess import Assessment, AssessmentPolicy, assess
from driftline.engine.bins import Counts
from driftline.engine.changewatch import ChangeDetection, ScoreChangeWatch
from driftline.engine.features import FeatureSet
from driftline.engine.policy import WindowRef
from driftline.engine.profile import ReferenceProfile
from driftline.engine.rebin import onto
from driftline.engine.stats import FeatureStats
from driftline.engine.window import ClosedWindow, LateCount, WindowSpec, WindowState, window_id


MAX_HELD_SCORES = 1_000_000
"""Scores held for the watch until the watermark passes them, at most (the oldest go in beyond it)."""


@dataclass(frozen=True, eq=False)
class WindowReport:
    window: ClosedWindow
    skew: dict[str, FeatureStats]
    """Every monitored column against the reference profile."""
    drift: dict[str, FeatureStats] | None
    """Every monitored column against ``baseline``: the window that ended where this one starts (with
    hopping windows, the adjacent non-overlapping one); None when there was none (the first window, or
    after a gap in traffic)."""
    assessment: Assessment
    baseline: ClosedWindow | None = None
    versus: VersionComparison | None = None
    """Against the last closed window of the version this one replaced (the first windows after a version
    switch: :mod:`driftline.engine.versions`); None otherwise."""

    @property
    def ref(self) -> WindowRef:
        w = self.window
        return WindowRef(w.model, w.model_version, w.window_id, w.start_ms, w.end_ms, w.reference_hash)


@dataclass(frozen=True, eq=False)
class VersionComparison:
    """A window of a version that appeared, against the last closed window of the version it replaced,
    on this version's cells (:mod:`driftline.engine.rebin`), judged by this version's assessment policy."""

    version: str
    """The version compared against (the one replaced)."""
    window: ClosedWindow
    """Its window, as it was closed (its own plan)."""
    expected: Counts
    """That window's counts carried onto this version's plan."""
    stats: dict[str, FeatureStats]
    """The comparable columns only."""
    assessment: Assessment
    rebinned: tuple[str, ...] = ()
    incomparable: tuple[str, ...] = ()


def compare_versions(features: FeatureSet, other: FeatureSet, other_window: ClosedWindow, window: ClosedWindow,
                     policy: AssessmentPolicy | None = None) -> VersionComparison:
    """``window`` (of ``features``' version) against ``other_window`` (of ``other``'s version)."""
    carried = onto(other, features, other_window.counts)
    stats = {name: s for name, s in features.compare(carried.counts, window.counts).items()
             if name not in carried.incomparable}
    roles = {name: f.role for name, f in features.profile.features.items() if name in stats}
    return VersionComparison(other.profile.model_version, other_window, carried.counts, stats,
                             assess(stats, roles, policy), carried.rebinned, carried.incomparable)


@dataclass(frozen=True)
class MonitorUpdate:
    accepted: int
    reports: list[WindowReport]
    late: list[LateCount]
    rejected: NDArray[np.intp]
    detections: list[ChangeDetection] = field(default_factory=list)


def evaluate_counts(features: FeatureSet, counts: Counts, policy: AssessmentPolicy | None = None
                    ) -> tuple[dict[str, FeatureStats], Assessment]:
    """Statistics and assessment of one count vector against the reference (batch evaluation)."""
    skew = features.compare(features.reference(), counts)
    return skew, assess(skew, _roles(features.profile), policy)


class ModelMonitor:
    def __init__(self, profile: ReferenceProfile, spec: WindowSpec, policy: AssessmentPolicy | None = None,
                 watch_score: bool = True, watch_significance_level: float = 0.002) -> None:
        self.features = FeatureSet(profile)
        self.state = WindowState(self.features, spec)
        self.policy = policy or AssessmentPolicy()
        self.recent: dict[int, ClosedWindow] = {}
        """Recently closed windows by end time: the drift baselines of the windows still to close."""
        score = profile.score
        self._score_name = score.name if score is not None else None
        self._score_range = getattr(score, "valid_range", None)
        """Scores outside it are invalid (counted by the windows): the watch never sees them."""
        self._watch_level = watch_significance_level
        self.watch = ScoreChangeWatch(watch_significance_level) if watch_score and score is not None else None
        """ADWIN on the score stream between window closes (:mod:`driftline.engine.changewatch`)."""
        self._held_times, self._held_values = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.fed_upto: int | None = None
        """The watch has been fed every held score older than this (the watermark at the last release)."""
        self.watch_late = 0
        """Accepted scores older than ``fed_upto`` when they arrived (disorder beyond the allowed lateness):
        left out of the watch, which sees the scores in event-time order only."""
        self.released: list[ChangeDetection] = []
        self._reference = self.features.reference()
        self._roles = _roles(profile)

    @property
    def profile(self) -> ReferenceProfile:
        return self.features.profile

    @property
    def last_closed(self) -> ClosedWindow | None:
        """The newest closed window: what the first windows of a version that replaces this one are compared with."""
        return self.recent[max(self.recent)] if self.recent else None

    def update(self, event_time_ms: NDArray[np.int64], columns: Mapping[str, NDArray[Any]],
               now_ms: int | None = None, sources: NDArray[Any] | None = None) -> MonitorUpdate:
        result = self.state.update(event_time_ms, columns, now_ms, sources)
        scores = columns.get(self._score_name) if self._score_name is not None else None
        if self.watch is not None and scores is not None and result.accepted:
            rows = result.accepted_rows
            self._hold_scores(np.asarray(event_time_ms)[rows], np.asarray(scores)[rows])
        reports = [self.evaluate(w) for w in result.closed]
        return MonitorUpdate(result.accepted, reports, result.late, result.rejected, self._watch())

    def flush(self) -> list[WindowReport]:
        """End of input: every window closes, every held score goes to the watch (its detections:
        :meth:`take_detections`)."""
        reports = [self.evaluate(w) for w in self.state.flush()]
        self.released.extend(self._watch(final=True))
        return reports

    def hold(self, sources: frozenset[str] | None) -> list[WindowReport]:
        """Which sources the watermark waits for (see :meth:`WindowState.hold`); reports what closes
        (and the watch's detections of the scores the watermark releases: :meth:`take_detections`)."""
        reports = [self.evaluate(w) for w in self.state.hold(sources)]
        self.released.extend(self._watch())
        return reports

    def take_detections(self) -> list[ChangeDetection]:
        """The detections :meth:`hold` and :meth:`flush` released, once."""
        out, self.released = self.released, []
        return out

    @property
    def held_scores(self) -> int:
        """Accepted scores not yet fed to the watch (newer than the watermark)."""
        return len(self._held_times)

    def _hold_scores(self, times: NDArray[np.int64], scores: NDArray[Any]) -> None:
        values = np.asarray(scores, dtype=np.float64)
        valid = np.isfinite(values)  # as the windows count them: ±inf and out-of-range scores are invalid
        if self._score_range is not None:
            low, high = self._score_range
            valid &= (values >= low) & (values <= high)
        if self.fed_upto is not None:
            late = valid & (times < self.fed_upto)
            self.watch_late += int(late.sum())
            valid &= ~late
        self._held_times = np.concatenate((self._held_times, times[valid].astype(np.int64)))
        self._held_values = np.concatenate((self._held_values, values[valid]))

    def _watch(self, final: bool = False) -> list[ChangeDetection]:
        """Feed the watch the held scores older than the watermark, in order of (event time, score).

        The watermark waits for the slowest source, so no accepted score can be older than it later
        (within the allowed lateness): the watch sees one order of the model version's scores, however
        partitions interleave and batches are cut (a clean pass and a run restarted from checkpoints
        agree). A score arriving older than what was fed already (disorder beyond the allowed lateness:
        its batch decides) is left out and counted (``watch_late``), so the watch's input stays in event
        time order. Beyond ``MAX_HELD_SCORES`` the oldest go in regardless (bounded memory)."""
        if self.watch is None or not len(self._held_times):
            return []
        watermark = self.state.watermark
        if final:
            ready = np.ones(len(self._held_times), dtype=bool)
        elif watermark is None:
            ready = np.zeros(len(self._held_times), dtype=bool)
        else:
            ready = self._held_times < watermark
        overflow = int(len(self._held_times) - MAX_HELD_SCORES)
        if overflow > 0:
            ready[np.argsort(self._held_times, kind="stable")[:overflow]] = True
        if not ready.any():
            return []
        times, values = self._held_times[ready], self._held_values[ready]
        newest = int(times.max()) + 1 if watermark is None else max(int(times.max()) + 1, watermark)
        self.fed_upto = newest if self.fed_upto is None else max(self.fed_upto, newest)
        order = np.lexsort((values, times))
        self._held_times, self._held_values = self._held_times[~ready], self._held_values[~ready]
        found = self.watch.update(values[order], times[order]).detections
        profile = self.features.profile
        return [replace(d, model=profile.model, model_version=profile.model_version,
                        reference_hash=profile.content_hash) for d in found]

    def reset(self) -> None:
        """The state of a fresh monitor: no panes, no previous window, a new score watch."""
        self.state.reset()
        self.recent = {}
        self._held_times, self._held_values = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.fed_upto, self.watch_late = None, 0
        self.released = []
        if self.watch is not None:
            self.watch.reset()

    def evaluate(self, window: ClosedWindow) -> WindowReport:
        skew = self.features.compare(self._reference, window.counts)
        baseline = self.recent.get(window.start_ms)
        drift = self.features.compare(baseline.counts, window.counts) if baseline is not None else None
        self.recent[window.end_ms] = window
        horizon = window.end_ms - self.state.spec.size_ms
        self.recent = {end: w for end, w in self.recent.items() if end >= horizon}
        return WindowReport(window, skew, drift, assess(skew, self._roles, self.policy), baseline)

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "window_state": self.state.snapshot(),
            "recent": [{"start_ms": w.start_ms, "end_ms": w.end_ms, "counts": w.counts.tolist()}
                       for w in self.recent.values()]}
        if self.watch is not None:
            data["watch"] = self.watch.snapshot().as_dict()
            data["watch_held"] = [self._held_times.tolist(), self._held_values.tolist()]
            data["watch_fed_upto"], data["watch_late"] = self.fed_upto, self.watch_late
        return data

    def restore(self, data: Mapping[str, Any]) -> None:
        self.state = WindowState.restore(self.features, data["window_state"])
        if self.watch is not None:  # a checkpoint without the watch, or with other settings: a fresh watch
            fresh = ScoreChangeWatch(self._watch_level)
            saved = data.get("watch")
            same = saved is not None and tuple(saved["settings"]) == fresh.snapshot().settings
            self.watch = ScoreChangeWatch.restore(saved) if saved is not None and same else fresh
            held = data.get("watch_held", [[], []])
            self._held_times = np.asarray(held[0], dtype=np.int64)
            self._held_values = np.asarray(held[1], dtype=np.float64)
            self.fed_upto, self.watch_late = data.get("watch_fed_upto"), int(data.get("watch_late", 0))
            self.released = []
        profile = self.features.profile
        self.recent = {}
        for w in data.get("recent", []):
            start, end = int(w["start_ms"]), int(w["end_ms"])
            self.recent[end] = ClosedWindow(profile.model, profile.model_version, start, end,
                                            window_id(profile.model, profile.model_version, start, end),
                                            self.features.upgrade(np.asarray(w["counts"], dtype=np.int64)),
                                            profile.content_hash)


def _roles(profile: ReferenceProfile) -> dict[str, str]:
    return {name: f.role for name, f in profile.features.items()}
