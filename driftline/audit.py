"""The audit trail's rows of a step (docs/store.md, ``audit_log``): one :class:`~driftline.outcome.AuditEntry`
per closed window, early warning, alert, version switch or comparison, and rollback request, with the
details a reviewer reads. Deterministic: the same step gives the same rows, under the same ids."""

from __future__ import annotations

import json

from driftline.outcome import AuditEntry, StepResult


def audit_entries(step: StepResult) -> list[AuditEntry]:
    entries = [AuditEntry("window.closed", r.window.end_ms, r.window.model, r.window.model_version,
                          r.window.window_id, r.window.window_id,
                          json.dumps({"rows": r.window.rows, "severity": r.assessment.severity,
                                      "drifted": [n for n, f in r.assessment.features.items() if f.severity != "ok"]},
                                     sort_keys=True), r.window.reference_hash) for r in step.reports]
    entries += [AuditEntry(f"changewatch.{d.detector}", d.event_time_ms or 0, d.model, d.model_version, "",
                           d.detection_id,
                           json.dumps({"event_index": d.index, "change_index": d.change_index,
                                       "before_mean": d.before_mean, "after_mean": d.after_mean,
                                       "before_count": d.before_count, "after_count": d.after_count,
                                       "bound": d.bound}, sort_keys=True), d.reference_hash)
                for d in step.detections]
    entries += [AuditEntry(f"alert.{a.kind}", a.window.end_ms, a.window.model, a.window.model_version,
                           a.window.window_id, a.alert_id,
                           json.dumps({"subject": a.subject, "severity": a.severity,
                                       "breaches": [b.__dict__ for b in a.breaches],
                                       **({"baseline": a.baseline} if a.baseline != "reference" else {})},
                                      sort_keys=True),
                           a.window.reference_hash) for a in step.alerts]
    entries += version_audit_entries(step)
    entries += [AuditEntry(f"rollback.{r.status}", r.window.end_ms, r.model, r.model_version, r.window.window_id,
                           r.request_id,
                           json.dumps({"alert_id": r.alert_id, "subject": r.subject, "severity": r.severity,
                                       "suppressed_by": r.suppressed_by}, sort_keys=True),
                           r.window.reference_hash) for r in step.rollbacks]
    return entries


def version_audit_entries(step: StepResult) -> list[AuditEntry]:
    """``version.appeared`` / ``version.disappeared`` for each change, ``version.compared`` for each window
    compared with the version it replaced."""
    entries = [AuditEntry(f"version.{c.kind}", c.window_end_ms, c.model, c.to_version, c.window_id, c.change_id,
                          json.dumps({"from_version": c.from_version, "to_version": c.to_version,
                                      "window_start_ms": c.window_start_ms, "window_end_ms": c.window_end_ms,
                                      "last_seen_ms": c.last_seen_ms}, sort_keys=True), c.reference_hash)
               for c in step.version_changes]
    for r in step.reports:
        v = r.versus
        if v is None:
            continue
        entries.append(AuditEntry(
            "version.compared", r.window.end_ms, r.window.model, r.window.model_version, r.window.window_id,
            v.window.window_id,
            json.dumps({"baseline_version": v.version, "baseline_window_id": v.window.window_id,
                        "severity": v.assessment.severity,
                        "drifted": [n for n, f in v.assessment.features.items() if f.severity != "ok"],
                        "rebinned": list(v.rebinned), "incomparable": list(v.incomparable)}, sort_keys=True),
            r.window.reference_hash))
    return entries
