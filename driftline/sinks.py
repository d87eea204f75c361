"""Sinks: where a step's outcome goes once processing is done with it. :class:`StoreSink` writes it to
the store (windows, late counts, alerts, rollback requests, detections, version changes, the audit
trail, in that order; every insert idempotent), :class:`ControlTopicSink` produces its decisions to the
control topic. The dead-letter topic's sink needs the messages back (:mod:`driftline.streaming.dead_letters`);
an in-memory list sink is :class:`driftline.testing.MemorySink`."""

from __future__ import annotations

from driftline.audit import audit_entries
from driftline.outcome import StepResult
from driftline.protocols import ControlSink, Store


class StoreSink:
    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, step: StepResult) -> None:
        store = self.store
        for key in sorted({(r.window.model, r.window.model_version) for r in step.reports}):
            store.write_windows(step.features[key],
                                [r for r in step.reports if (r.window.model, r.window.model_version) == key])
        for model, version, late in step.late:
            store.write_late(model, version, late)
        store.write_alerts(step.alerts)
        store.write_rollbacks(step.rollbacks)
        if step.detections:
            store.write_detections(step.detections)
        if step.version_changes:
            store.write_version_changes(step.version_changes)
        store.audit(audit_entries(step))


class ControlTopicSink:
    """The step's decisions to the control topic, acknowledged at the publisher's next flush: alerts,
    rollback requests, version switches, early warnings."""

    def __init__(self, publisher: ControlSink) -> None:
        self.publisher = publisher

    def write(self, step: StepResult) -> None:
        for event in step.alerts:
            self.publisher.alert(event)
        for request in step.rollbacks:
            self.publisher.rollback(request)
        for change in step.version_changes:
            self.publisher.version_change(change)
        for detection in step.detections:
            self.publisher.change(detection)
