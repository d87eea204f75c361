"""The single-stage pipeline: join → engine → decide, one batch at a time, returning what it produced.

:class:`Pipeline` takes columnar event batches from any source (files, Kafka) and, per batch: joins
requests with responses, types each (model, version)'s events against its reference profile, feeds the
model's monitor, and folds closed windows (and the version switches they show) through the deciders in
order of window end. It touches no store or topic: the outcome (:class:`~driftline.outcome.StepResult`)
goes to the sinks. Nothing is dropped: an event that fails validation, has no reference profile, is
unmatched by the join or is refused by the window bounds comes back as a bad event or a counted figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from driftline.config import Config
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import ModelMonitor, WindowReport
from driftline.engine.policy import Decider
from driftline.engine.window import LateCount
from driftline.events import BadEvent, Events, refuse_future
from driftline.events.join import DUPLICATE_REASON, Joiner
from driftline.grouping import model_groups
from driftline.keys import ModelKey
from driftline.outcome import StepResult, Totals
from driftline.registry import ModelRegistry, deciders_snapshot, restore_deciders
from driftline.version_tracking import VersionTracker


MAX_LATE_WINDOWS = 100_000
"""Windows whose running late count is remembered (the oldest are forgotten first)."""


class Pipeline:
    def __init__(self, config: Config, registry: ModelRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else ModelRegistry(config)
        self.joiner = Joiner(config.join.max_wait, config.join.max_pending)
        self.monitors: dict[tuple[str, str], ModelMonitor] = {key: self.registry.monitor(key)
                                                             for key in self.registry.profiles}
        self.deciders: dict[str, Decider] = self.registry.deciders()
        self.totals = Totals()
        self._newest: int | None = None
        self.late = LateTally()
        self.versions = VersionTracker(config, self.monitors)

    def process(self, events: Events, bad: list[BadEvent] | None = None, now_ms: int | None = None,
                partitioned: bool = False) -> StepResult:
        """Run one batch through the pipeline; returns what it produced. ``partitioned``: the events name
        their Kafka partition (``events.source``), and each partition keeps its own watermark (see :meth:`hold`)."""
        step = StepResult(bad=list(bad or []))
        self.totals.events += len(events) + len(step.bad)
        events = self._refuse_future(events, step, now_ms)
        joined = self.joiner.push(events)
        self._unjoined(joined.unmatched_requests, joined.unmatched_responses, joined.duplicates, joined.mismatched,
                       step)
        self._feed(joined.joined, step, now_ms, partitioned)
        self._decide(step)
        return step

    def hold(self, active: frozenset[str], fresh: frozenset[str], assigned: frozenset[str]) -> StepResult:
        """Tell every model which partitions its watermark waits for: the ``active`` ones (assigned, not
        read to their end) that have carried its events, every ``fresh`` one (assigned, nothing read from
        it yet), which may still carry them, and every partition that carried its events but is not
        ``assigned`` right now (after a restart, before the group hands it back). Returns what closes. The join's clocks wait for the same partitions (:meth:`Joiner.hold`)."""
        self.joiner.hold(active, fresh, assigned)
        step = StepResult()
        for monitor in self.monitors.values():
            carried = monitor.state.source_marks.keys()
            holding = fresh | (active & carried) | (carried - assigned)
            step.reports.extend(monitor.hold(frozenset(holding)))
            step.detections.extend(monitor.take_detections())
        self._decide(step)
        return step

    def hold_join(self, active: frozenset[str], fresh: frozenset[str], assigned: frozenset[str]) -> None:
        """As :meth:`hold`, for the join's clocks only (a replay's files, each a source read to its end
        before the next): the windows keep one watermark over every event."""
        self.joiner.hold(active, fresh, assigned)

    def finish(self) -> StepResult:
        """End of input: unmatched halves are reported, every open window closes."""
        step = StepResult()
        rest = self.joiner.flush()
        self._unjoined(rest.unmatched_requests, rest.unmatched_responses, rest.duplicates, rest.mismatched, step)
        for monitor in self.monitors.values():
            step.reports.extend(monitor.flush())
            step.detections.extend(monitor.take_detections())
        self._decide(step)
        return step

    def snapshot(self) -> dict[str, Any]:
        """Everything a restart needs to go on where this left off: open windows, join state, decisions."""
        return {
            "monitors": {ModelKey(*key).encode(): monitor.snapshot() for key, monitor in self.monitors.items()},
            "joiner": self.joiner.snapshot(),
            "decider": deciders_snapshot(self.deciders),
            "late": self.late.snapshot(),
            "newest": self._newest,
            "versions": self.versions.snapshot(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        for key, snapshot in data["monitors"].items():
            monitor = self.monitors.get(ModelKey.decode(key))
            if monitor is not None:  # a model version since removed from the configuration is forgotten
                monitor.restore(snapshot)
        self.joiner.restore(data["joiner"])
        restore_deciders(self.deciders, data.get("decider"))
        self.late.restore(data["late"])
        self._newest = data["newest"]
        self.versions.restore(data.get("versions", {}))  # (a checkpoint from before version tracking: none)

    # -- stages ---------------------------------------------------------------------------------------

    def _unjoined(self, requests: Events, responses: Events, duplicates: Events, mismatched: Events,
                  step: StepResult) -> None:
        wait = f"{self.config.join.max_wait // 1000}s"
        bound = f"{self.config.join.max_pending:,}"
        for events, error, reason in (
                (requests, "Unmatched", f"request without a response within {wait} of event time "
                                        f"(or past the join's bound of {bound} waiting halves)"),
                (responses, "Unmatched", f"response without a request within {wait} of event time "
                                         f"(or past the join's bound of {bound} waiting halves)"),
                (duplicates, "Duplicate", DUPLICATE_REASON),
                (mismatched, "ModelMismatch", "request and response name different models or versions")):
            step.bad.extend(events.bad(None, "join", error, reason))
        self.totals.unmatched_requests += len(requests)
        self.totals.unmatched_responses += len(responses)
        self.totals.duplicates += len(duplicates)

    def _feed(self, events: Events, step: StepResult, now_ms: int | None, partitioned: bool) -> None:
        partitions = None
        if partitioned and len(events):
            partitions = events.source if len(events.source) == len(events) else None
        profiles = {key: monitor.profile for key, monitor in self.monitors.items()}
        for key, rows, group, columns in model_groups(events, profiles, step.bad):
            monitor = self.monitors[key]
            sources = partitions[rows] if partitions is not None else None
            late_before = monitor.state.late_events
            update = monitor.update(group.event_time, columns, now_ms, sources)
            step.bad.extend(group.bad(update.rejected, "engine", "OutOfWindow",
                                      "event time too far ahead, or too many open windows"))
            self.totals.accepted += update.accepted
            if update.accepted:
                times = np.delete(group.event_time, update.rejected) if len(update.rejected) else group.event_time
                step.presence.append((key[0], key[1], times))
            self.totals.late += monitor.state.late_events - late_before
            if update.late:
                step.late.append((key[0], key[1], self.late.running(key, update.late)))
            step.reports.extend(update.reports)
            step.detections.extend(update.detections)

    def _refuse_future(self, events: Events, step: StepResult, now_ms: int | None) -> Events:
        """Refuse events stamped more than ``windows.max_future`` ahead, before they can move a watermark
        or expire the join. Ahead of the clock when one is handed in (the service); in a replay, ahead
        of the newest time seen so far or of the batch's 99th percentile, whichever is later."""
        limit = self.config.windows.max_future
        if limit is None or not len(events):
            return events
        if now_ms is None:
            typical = int(np.percentile(events.event_time, 99, method="lower"))
            now_ms = typical if self._newest is None else max(self._newest, typical)
        events, ahead = refuse_future(events, now_ms, limit)
        step.bad.extend(ahead)
        if len(events):
            newest = int(events.event_time.max())
            self._newest = newest if self._newest is None else max(self._newest, newest)
        return events

    def _decide(self, step: StepResult) -> None:
        decide(step, self.deciders, {key: m.features for key, m in self.monitors.items()}, self.totals,
               self.versions)


def decide(step: StepResult, deciders: Mapping[str, Decider], features: Mapping[tuple[str, str], FeatureSet],
           totals: Totals, versions: VersionTracker | None = None) -> None:
    """Fold the step's windows through the deciders in order of window end (and, with ``versions``, the
    version switches they show), put the alerts and rollback requests into the step, and count."""
    step.reports.sort(key=lambda r: (r.window.end_ms, r.window.model, r.window.model_version))
    ends = versions.track(step) if versions is not None else [[] for _ in step.reports]
    # Windows and change detections in order of event time (a window before a detection at its end):
    # both come out as the watermark passes them, so this order is the same however batches are cut.
    decisions: list[tuple[tuple[int, int, str, str, int], WindowReport | ChangeDetection]] = [
        ((r.window.end_ms, 0, r.window.model, r.window.model_version, i), r) for i, r in enumerate(step.reports)]
    decisions += [((d.event_time_ms or 0, 1, d.model, d.model_version, d.index), d) for d in step.detections]
    decisions.sort(key=lambda item: item[0])
    for order, item in decisions:
        if isinstance(item, ChangeDetection):
            step.rollbacks.extend(deciders[item.model].change(item.model, item.model_version, item.detection_id,
                                                              item.event_time_ms or 0, item.reference_hash))
            continue
        decider = deciders[item.window.model]
        alerts, rollbacks = decider.step(item.ref, item.assessment)
        step.alerts.extend(alerts)
        step.rollbacks.extend(rollbacks)
        if versions is not None:
            step.alerts.extend(versions.decide(decider, item, ends[order[4]]))
    totals.windows += len(step.reports)
    totals.alerts += len(step.alerts)
    totals.rollbacks += len(step.rollbacks)
    totals.version_changes += len(step.version_changes)
    for bad in step.bad:
        totals.bad[bad.stage] += 1
    step.features.update((key, features[key]) for key in {(r.window.model, r.window.model_version)
                                                          for r in step.reports})


class LateTally:
    """Late events so far per window (the store keeps the largest count written), remembered for the
    ``MAX_LATE_WINDOWS`` most recent windows."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}

    def running(self, key: tuple[str, str], late: list[LateCount]) -> list[LateCount]:
        """``late`` (new late events per window) → the running count of each of those windows."""
        running = []
        for count in late:
            total = self.counts.pop((*key, count.window_id), 0) + count.count
            self.counts[(*key, count.window_id)] = total
            running.append(replace(count, count=total))
        while len(self.counts) > MAX_LATE_WINDOWS:
            del self.counts[next(iter(self.counts))]
        return running

    def snapshot(self) -> list[list[Any]]:
        return [[m, v, w, n] for (m, v, w), n in self.counts.items()]

    def restore(self, data: list[list[Any]]) -> None:
        self.counts = {(m, v, w): int(n) for m, v, w, n in data}
