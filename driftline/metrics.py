"""Prometheus metrics of a step's outcome (issue 11, first step: the registry and the sink; the HTTP
endpoint, health, rules and runbooks follow). Labels come from bounded sets only: a model and version
the configuration names (anything else is counted under ``_other``), and per model at most
``max_features`` features of its profile (the rest under ``_other``, their worst value); never ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest

from driftline import __version__
from driftline.engine.monitor import WindowReport
from driftline.engine.stats import FeatureStats
from driftline.outcome import StepResult

OTHER = "_other"
"""The label value of what a bounded set leaves out (a model not configured, a feature past the cap)."""
STATE = {"ok": 0, "warn": 1, "critical": 2}
"""A severity as a gauge value."""
STAGES = frozenset({"decode", "validate", "join", "engine"})
"""The stages a bad event is refused at (a bounded label set)."""

FEATURE_GAUGES: dict[str, tuple[str, str]] = {
    "psi": ("driftline_feature_psi", "PSI of the feature in the last closed window, against the reference"),
    "psi_critical": ("driftline_feature_psi_critical", "PSI's sample-size-aware critical value for that window"),
    "ks_statistic": ("driftline_feature_ks_statistic", "KS statistic against the reference (numeric features)"),
    "ks_pvalue": ("driftline_feature_ks_pvalue", "KS p-value against the reference (numeric features)"),
    "js_distance": ("driftline_feature_js_distance", "Jensen-Shannon distance (log base 2) against the reference"),
    "wasserstein_normed": ("driftline_feature_wasserstein_normed",
                           "Wasserstein distance divided by the reference standard deviation"),
    "unseen_share": ("driftline_feature_unseen_ratio", "share of categories the reference never saw, 0-1"),
    "missing_rate": ("driftline_feature_missing_ratio", "share of missing values in the window, 0-1"),
}
"""Feature statistic → (metric name, help). A higher value is worse for each but the p-value, whose worst is
the lowest: see :func:`worst`."""


class MetricsSink:
    """The metrics of every step's outcome, in a registry of their own (:meth:`exposition`)."""

    def __init__(self, models: Mapping[str, Iterable[str]], features: Mapping[tuple[str, str], Sequence[str]],
                 max_features: int = 50, registry: CollectorRegistry | None = None) -> None:
        """``models``: each configured model's versions; ``features``: each (model, version)'s profile columns."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.versions = {model: frozenset(versions) for model, versions in models.items()}
        self.kept = {key: frozenset(sorted(names)[:max_features]) for key, names in features.items()}
        """(model, version) → the features with a label of their own."""
        model_labels = ("model", "model_version")
        feature_labels = (*model_labels, "feature")
        Info("driftline_build", "driftline's version", registry=self.registry).info({"version": __version__})
        self.feature = {stat: Gauge(name, text, feature_labels, registry=self.registry)
                        for stat, (name, text) in FEATURE_GAUGES.items()}
        self.feature_state = Gauge("driftline_feature_state", "the feature's state in the last closed window: "
                                   "0 ok, 1 warn, 2 critical", feature_labels, registry=self.registry)
        self.dataset_state = Gauge("driftline_dataset_state", "the dataset verdict of the last closed window: "
                                   "0 ok, 1 warn, 2 critical", model_labels, registry=self.registry)
        self.drifted = Gauge("driftline_dataset_drifted_ratio", "share of the assessed features that drifted, 0-1",
                             model_labels, registry=self.registry)
        self.approval_shift = Gauge("driftline_approval_rate_shift_ratio", "approval rate in the window minus "
                                    "the reference's", model_labels, registry=self.registry)
        self.windows = Counter("driftline_windows_closed_total", "windows closed and assessed", model_labels,
                               registry=self.registry)
        self.alerts = Counter("driftline_alerts_total", "alert events (firing, escalated, resolved)",
                              (*model_labels, "kind", "severity"), registry=self.registry)
        self.rollbacks = Counter("driftline_rollback_requests_total", "rollback requests by status "
                                 "(requested, dry_run, suppressed)", (*model_labels, "status"), registry=self.registry)
        self.dead_letters = Counter("driftline_dead_letters_total", "bad events by the stage that refused them",
                                    ("stage",), registry=self.registry)

    def model(self, model: str, version: str) -> tuple[str, str]:
        """The (model, version) labels: configured ones as they are, anything else ``_other``."""
        return (model, version) if version in self.versions.get(model, ()) else (OTHER, OTHER)

    def write(self, step: StepResult) -> None:
        for report in step.reports:
            self._window(report)
        for event in step.alerts:
            self.alerts.labels(*self.model(event.window.model, event.window.model_version), event.kind,
                               event.severity).inc()
        for request in step.rollbacks:
            self.rollbacks.labels(*self.model(request.model, request.model_version), request.status).inc()
        for bad in step.bad:
            self.dead_letters.labels(bad.stage if bad.stage in STAGES else OTHER).inc()

    def _window(self, report: WindowReport) -> None:
        window, assessment = report.window, report.assessment
        labels = self.model(window.model, window.model_version)
        self.windows.labels(*labels).inc()
        if labels[0] == OTHER:  # (a model not configured has no profile: nothing was assessed)
            return
        kept = self.kept.get((window.model, window.model_version), frozenset())
        grouped: dict[str, list[tuple[FeatureStats, str]]] = {}
        for name, judged in assessment.features.items():
            grouped.setdefault(name if name in kept else OTHER, []).append((judged.stats, judged.severity))
        for name, judged_list in grouped.items():
            for stat, gauge in self.feature.items():
                value = worst(stat, [getattr(stats, stat) for stats, _ in judged_list])
                if value is not None:
                    gauge.labels(*labels, name).set(value)
            self.feature_state.labels(*labels, name).set(max(STATE[severity] for _, severity in judged_list))
        if assessment.dataset is not None:
            self.dataset_state.labels(*labels).set(STATE[assessment.dataset.severity])
            self.drifted.labels(*labels).set(assessment.dataset.drifted_share)
        shifts = [s.approval_rate_shift for s in report.skew.values() if s.approval_rate_shift is not None]
        if shifts:
            self.approval_shift.labels(*labels).set(shifts[0])

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)



def worst(stat: str, values: Iterable[float | None]) -> float | None:
    """The worst of several features' values of ``stat`` (the lowest p-value, else the highest)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if stat.endswith("pvalue") else max(present)


def series(exposition: bytes) -> int:
    """How many series an exposition holds (its sample lines)."""
    return sum(1 for line in exposition.decode().splitlines() if line and not line.startswith("#"))
