"""Version switches in the pipeline: one :class:`~driftline.engine.versions.VersionWatch` per model, fed the
batch's version presence and closed windows, and the first windows of a version that appeared compared with
the last window of the version it replaced (baseline ``previous_version``).

Used by :func:`driftline.pipeline.decide`: :meth:`VersionTracker.track` runs before the
decisions (it attaches the comparisons to the window reports and puts the changes in the step),
:meth:`VersionTracker.decide` folds a report's comparison into the model's decider. All of it is a
function of the windows and event times, so a replay, or a restart from a snapshot, gives the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from driftline.config import Config
from driftline.engine.monitor import ModelMonitor, WindowReport, compare_versions
from driftline.engine.policy import PREVIOUS_VERSION, AlertEvent, AlertPolicy, Decider, WindowRef
from driftline.engine.versions import VersionWatch
from driftline.outcome import StepResult

Key = tuple[str, str]


class VersionTracker:
    def __init__(self, config: Config, monitors: Mapping[Key, ModelMonitor]) -> None:
        self.monitors = monitors
        hop = config.windows.hop or config.windows.size
        self.watches: dict[str, VersionWatch] = {}
        self.alerts: dict[str, AlertPolicy] = {}
        """Per model: the alert policy of subjects judged against the previous version (k ≤ windows compared)."""
        for model in config.models:
            windows = model.version_baseline_windows
            windows = model.policy.consecutive if windows is None else windows
            self.watches[model.name] = VersionWatch(model.name, hop, model.version_gone_after, windows)
            self.alerts[model.name] = AlertPolicy(consecutive=max(min(model.policy.consecutive, windows), 1),
                                                  resolve_after=model.policy.resolve_after)

    def track(self, step: StepResult) -> list[list[WindowRef]]:
        """Apply the step's presence, then observe its reports (already in decision order): changes go to
        ``step.version_changes``, comparisons onto the reports. Returns, per report, the windows at which
        comparison periods end (their alerts against the previous version resolve there)."""
        for model, version, times in step.presence:
            watch = self.watches.get(model)
            if watch is not None:
                watch.seen(version, times)
        ends: list[list[WindowRef]] = []
        for i, report in enumerate(step.reports):
            w = report.window
            watch = self.watches.get(w.model)
            if watch is None:
                ends.append([])
                continue
            seen = watch.observe(w)
            step.version_changes.extend(seen.changes)
            if seen.compare_with is not None:
                other = self.monitors.get((w.model, seen.compare_with))
                last = other.last_closed if other is not None else None
                if other is not None and last is not None:
                    monitor = self.monitors[(w.model, w.model_version)]
                    versus = compare_versions(monitor.features, other.features, last, w, monitor.policy)
                    step.reports[i] = replace(report, versus=versus)
            ends.append([self._ref(w.model, version, report) for version in seen.ended])
        return ends

    def decide(self, decider: Decider, report: WindowReport, ends: list[WindowRef]) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        if report.versus is not None:
            events += decider.step(report.ref, report.versus.assessment, PREVIOUS_VERSION,
                                   self.alerts[report.window.model])[0]
        for ref in ends:
            events += decider.end_baseline(ref, PREVIOUS_VERSION)
        return events

    def _ref(self, model: str, version: str, report: WindowReport) -> WindowRef:
        """The report's window, or for another version (gone while compared), its newest closed window."""
        if version == report.window.model_version:
            return report.ref
        monitor = self.monitors.get((model, version))
        last = monitor.last_closed if monitor is not None else None
        if last is None:
            return report.ref
        return WindowRef(model, version, last.window_id, last.start_ms, last.end_ms, last.reference_hash)

    def snapshot(self) -> dict[str, Any]:
        return {model: watch.snapshot() for model, watch in sorted(self.watches.items())}

    def restore(self, data: Mapping[str, Any]) -> None:
        for model, snapshot in data.items():
            watch = self.watches.get(model)
            if watch is not None:  # a model since removed from the configuration is forgotten
                watch.restore(snapshot)
