"""From statistics to severities: one window, no memory (the stateless half of the policy).

An assessment is a chain of small steps, each a plain callable ``(Assessment, Policy) -> Assessment``
run in order (:data:`ASSESSMENT_STEPS`): the minimum-sample gate, the multiple-testing correction,
the per-metric thresholds, the dataset-level rule. Defaults and their sources: docs/engine.md, *Decisions*.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from driftline.engine.stats import FeatureStats
from driftline.errors import InvalidInput

Severity = Literal["ok", "warn", "critical"]
SEVERITY_RANK: dict[str, int] = {"ok": 0, "warn": 1, "critical": 2}
PVALUE_METRICS = ("ks_pvalue", "chi2_pvalue")
ROW_METRICS = ("missing_rate_shift", "invalid_share")
"""Checks judged on the window's rows, missing included, even when the distribution tests are gated."""


def worst(severities: Sequence[Severity]) -> Severity:
    return max(severities, key=SEVERITY_RANK.__getitem__, default="ok")


@dataclass(frozen=True)
class Threshold:
    metric: str
    warn: float | None
    critical: float | None = None
    direction: Literal["above", "below"] = "above"
    """``above``: a breach is value ≥ threshold; ``below``: value < threshold (p-values)."""
    absolute: bool = False
    """Compare ``|value|`` (for signed shifts)."""

    def severity(self, value: float) -> Severity:
        v = abs(value) if self.absolute else value
        if self.direction == "above":
            if self.critical is not None and v >= self.critical:
                return "critical"
            return "warn" if self.warn is not None and v >= self.warn else "ok"
        if self.critical is not None and v < self.critical:
            return "critical"
        return "warn" if self.warn is not None and v < self.warn else "ok"


DEFAULT_THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("psi", 0.10, 0.25),
    Threshold("ks_pvalue", 0.05, None, "below"),
    Threshold("chi2_pvalue", 0.05, None, "below"),
    Threshold("js_distance", 0.10, 0.20),
    Threshold("wasserstein_normed", 0.10, 0.25),
    Threshold("l_infinity", 0.10, 0.20),
    Threshold("unseen_share", 0.01, 0.05),
    Threshold("out_of_range_share", 0.01, 0.05),
    Threshold("invalid_share", 0.01, 0.05),
    Threshold("missing_rate_shift", 0.05, 0.10, absolute=True),
    Threshold("approval_rate_shift", 0.05, 0.10, absolute=True),
)


@dataclass(frozen=True)
class AssessmentPolicy:
    thresholds: tuple[Threshold, ...] = DEFAULT_THRESHOLDS
    min_samples: int = 500
    """Valid non-missing rows a feature needs for its distribution tests (fewer: ``insufficient``, flagged),
    and rows (missing included) a window needs for anything to be judged, the row checks included."""
    pvalue_correction: Literal["holm", "bonferroni", "none"] = "holm"
    drift_share: float = 0.5

    def __post_init__(self) -> None:
        if self.min_samples < 1:
            raise InvalidInput(f"min_samples must be at least 1, got {self.min_samples}")
        if not 0.0 < self.drift_share <= 1.0:
            raise InvalidInput(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.pvalue_correction not in ("holm", "bonferroni", "none"):
            raise InvalidInput(f"pvalue_correction must be holm, bonferroni or none, got {self.pvalue_correction!r}")


@dataclass(frozen=True)
class Breach:
    metric: str
    value: float
    threshold: float
    severity: Severity


@dataclass(frozen=True)
class FeatureAssessment:
    name: str
    role: str
    stats: FeatureStats
    severity: Severity = "ok"
    breaches: tuple[Breach, ...] = ()
    adjusted_pvalues: Mapping[str, float] = field(default_factory=dict)
    insufficient: bool = False
    """Fewer non-missing (valid) rows than ``min_samples``: the distribution tests are not judged in this
    window (the row checks may still be, see :attr:`rows_judged`)."""
    rows_judged: bool = False
    """The window has at least ``min_samples`` rows: the row checks (:data:`ROW_METRICS`) are judged."""

    @property
    def judged(self) -> bool:
        """Whether anything about this feature was judged in this window (else the decider skips it)."""
        return not self.insufficient or self.rows_judged


@dataclass(frozen=True)
class DatasetAssessment:
    severity: Severity
    drifted_share: float
    critical_share: float
    assessed: int
    drifted: tuple[str, ...]
    drift_share: float
    """The policy's share threshold this was judged against."""


@dataclass(frozen=True)
class Assessment:
    features: dict[str, FeatureAssessment]
    dataset: DatasetAssessment | None = None

    @property
    def severity(self) -> Severity:
        severities = [f.severity for f in self.features.values()]
        if self.dataset is not None:
            severities.append(self.dataset.severity)
        return worst(severities)


Step = Callable[[Assessment, AssessmentPolicy], Assessment]


def correct_pvalues(assessment: Assessment, policy: AssessmentPolicy) -> Assessment:
    """Adjust the p-values of the window's judged features as one family (Holm–Bonferroni by default);
    features with too few samples are not judged and do not widen the family."""
    keys = [(name, metric) for name, f in assessment.features.items() for metric in PVALUE_METRICS
            if getattr(f.stats, metric) is not None and not f.insufficient]
    raw = np.array([getattr(assessment.features[name].stats, metric) for name, metric in keys], dtype=np.float64)
    adjusted = adjust_pvalues(raw, policy.pvalue_correction)
    per_feature: dict[str, dict[str, float]] = {}
    for (name, metric), value in zip(keys, adjusted.tolist(), strict=True):
        per_feature.setdefault(name, {})[metric] = value
    return Assessment({name: replace(f, adjusted_pvalues=per_feature.get(name, {}))
                       for name, f in assessment.features.items()}, assessment.dataset)


def adjust_pvalues(pvalues: np.ndarray, method: str) -> np.ndarray:
    """Family-wise adjusted p-values.

    >>> adjust_pvalues(np.array([0.01, 0.04, 0.03]), "holm").round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    m = len(pvalues)
    if m == 0 or method == "none":
        return pvalues.copy()
    if method == "bonferroni":
        return np.asarray(np.minimum(pvalues * m, 1.0))
    order = np.argsort(pvalues, kind="stable")
    stepped = np.maximum.accumulate(pvalues[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def gate_min_samples(assessment: Assessment, policy: AssessmentPolicy) -> Assessment:
    """Too few valid non-missing rows: ``insufficient`` (no distribution test); too few rows at all:
    nothing judged (``rows_judged`` False)."""
    def valid(s: FeatureStats) -> int:
        return round(s.n * (1.0 - (s.missing_rate or 0.0))) - s.invalid

    return Assessment({name: replace(f, insufficient=valid(f.stats) < policy.min_samples,
                                     rows_judged=f.stats.n >= policy.min_samples)
                       for name, f in assessment.features.items()}, assessment.dataset)


def apply_thresholds(assessment: Assessment, policy: AssessmentPolicy) -> Assessment:
    features = {}
    for name, f in assessment.features.items():
        breaches: list[Breach] = []
        if f.judged:
            for rule in policy.thresholds:
                if f.insufficient and rule.metric not in ROW_METRICS:
                    continue
                value = f.adjusted_pvalues.get(rule.metric, getattr(f.stats, rule.metric, None))
                if value is None or not np.isfinite(value):
                    continue
                severity = rule.severity(value)
                if severity != "ok":
                    limit = rule.critical if severity == "critical" else rule.warn
                    assert limit is not None
                    breaches.append(Breach(rule.metric, float(value), limit, severity))
        features[name] = replace(f, breaches=tuple(breaches), severity=worst([b.severity for b in breaches]))
    return Assessment(features, assessment.dataset)


def dataset_rule(assessment: Assessment, policy: AssessmentPolicy) -> Assessment:
    judged = [f for f in assessment.features.values() if f.role == "feature" and f.judged]
    if not judged:
        return replace(assessment, dataset=DatasetAssessment("ok", 0.0, 0.0, 0, (), policy.drift_share))
    drifted = tuple(f.name for f in judged if f.severity != "ok")
    critical = sum(f.severity == "critical" for f in judged)
    drifted_share, critical_share = len(drifted) / len(judged), critical / len(judged)
    severity: Severity = ("critical" if critical_share >= policy.drift_share
                          else "warn" if drifted_share >= policy.drift_share else "ok")
    return replace(assessment, dataset=DatasetAssessment(severity, drifted_share, critical_share, len(judged), drifted,
                                                              policy.drift_share))


ASSESSMENT_STEPS: tuple[Step, ...] = (gate_min_samples, correct_pvalues, apply_thresholds, dataset_rule)


def assess(stats: Mapping[str, FeatureStats], roles: Mapping[str, str],
           policy: AssessmentPolicy | None = None, steps: Sequence[Step] = ASSESSMENT_STEPS) -> Assessment:
    """Run the assessment chain over one window's statistics."""
    policy = policy or AssessmentPolicy()
    assessment = Assessment({name: FeatureAssessment(name, roles[name], s) for name, s in stats.items()})
    for step in steps:
        assessment = step(assessment, policy)
    return assessment
