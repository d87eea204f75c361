"""The stateless assessment chain (``driftline.engine.assess``), each step alone and then together."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.engine.assess import (DEFAULT_THRESHOLDS, Assessment, AssessmentPolicy, FeatureAssessment, Threshold,
                                     adjust_pvalues, apply_thresholds, assess, correct_pvalues, dataset_rule,
                                     gate_min_samples)
from driftline.engine.stats import FeatureStats


def stats(n: int = 1_000, **metrics: float) -> FeatureStats:
    return FeatureStats(n=n, n_expected=10_000, missing_rate=metrics.pop("missing_rate", 0.0), **metrics)


def run_chain(features: dict[str, FeatureStats], roles: dict[str, str] | None = None,
              policy: AssessmentPolicy | None = None) -> Assessment:
    return assess(features, roles or {name: "feature" for name in features}, policy)


@pytest.mark.parametrize("threshold,value,expected", [
    (Threshold("psi", 0.1, 0.25), 0.0999, "ok"),
    (Threshold("psi", 0.1, 0.25), 0.1, "warn"),
    (Threshold("psi", 0.1, 0.25), 0.25, "critical"),
    (Threshold("ks_pvalue", 0.05, None, "below"), 0.05, "ok"),
    (Threshold("ks_pvalue", 0.05, None, "below"), 0.0499, "warn"),
    (Threshold("ks_pvalue", 0.05, None, "below"), 0.0, "warn"),
    (Threshold("shift", 0.05, 0.1, absolute=True), -0.07, "warn"),
    (Threshold("shift", 0.05, 0.1, absolute=True), -0.1, "critical"),
    (Threshold("shift", 0.05, 0.1), -0.5, "ok"),
])
def test_threshold_severity(threshold: Threshold, value: float, expected: str) -> None:
    assert threshold.severity(value) == expected


def test_pvalues_only_ever_warn() -> None:
    for rule in DEFAULT_THRESHOLDS:
        if rule.metric.endswith("pvalue"):
            assert rule.direction == "below" and rule.critical is None


def test_pvalues_are_corrected_as_one_family_across_features() -> None:
    features = {f"f{i}": stats(ks_pvalue=p) for i, p in enumerate([0.001, 0.02, 0.04, 0.3])}
    features["c"] = stats(chi2_pvalue=0.01)
    assessment = correct_pvalues(Assessment({k: FeatureAssessment(k, "feature", s) for k, s in features.items()}),
                                 AssessmentPolicy())
    raw = np.array([0.001, 0.02, 0.04, 0.3, 0.01])
    expected = adjust_pvalues(raw, "holm")
    got = [assessment.features[f"f{i}"].adjusted_pvalues["ks_pvalue"] for i in range(4)]
    got.append(assessment.features["c"].adjusted_pvalues["chi2_pvalue"])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_thresholds_read_the_adjusted_pvalue() -> None:
    # ten features at p = 0.01 each: significant alone, not after Holm (adjusted 0.1)
    result = run_chain({f"f{i}": stats(ks_pvalue=0.01) for i in range(10)})
    assert all(f.severity == "ok" for f in result.features.values())
    single = run_chain({"f": stats(ks_pvalue=0.01)})
    assert single.features["f"].severity == "warn"
    assert single.features["f"].breaches[0].metric == "ks_pvalue"
    uncorrected = run_chain({f"f{i}": stats(ks_pvalue=0.01) for i in range(10)},
                            policy=AssessmentPolicy(pvalue_correction="none"))
    assert all(f.severity == "warn" for f in uncorrected.features.values())


def test_min_samples_gate_counts_non_missing_rows() -> None:
    policy = AssessmentPolicy(min_samples=500)
    features = {"enough": stats(n=1_000, missing_rate=0.5, psi=1.0), "short": stats(n=1_000, missing_rate=0.501,
                                                                                       psi=1.0),
                "empty": FeatureStats(n=0, n_expected=100)}
    gated = gate_min_samples(Assessment({k: FeatureAssessment(k, "feature", s) for k, s in features.items()}), policy)
    assert {k: f.insufficient for k, f in gated.features.items()} == {"enough": False, "short": True, "empty": True}
    judged = apply_thresholds(gated, policy)
    assert judged.features["enough"].severity == "critical"
    assert judged.features["short"].severity == "ok" and judged.features["short"].breaches == ()


def test_every_breach_names_metric_value_and_threshold() -> None:
    result = run_chain({"x": stats(psi=0.3, js_distance=0.15, unseen_share=0.02, missing_rate_shift=-0.2)})
    breaches = {b.metric: (b.value, b.threshold, b.severity) for b in result.features["x"].breaches}
    assert breaches == {"psi": (0.3, 0.25, "critical"), "js_distance": (0.15, 0.1, "warn"),
                        "unseen_share": (0.02, 0.01, "warn"), "missing_rate_shift": (-0.2, 0.1, "critical")}
    assert result.features["x"].severity == "critical"


def test_dataset_rule_uses_the_share_of_judged_features_only() -> None:
    features = {"a": stats(psi=0.3), "b": stats(psi=0.15), "c": stats(psi=0.0), "d": stats(psi=0.0),
                "short": stats(n=10, psi=5.0), "score": stats(psi=5.0), "decision": stats(psi=5.0)}
    roles = {name: "feature" for name in features} | {"score": "score", "decision": "decision"}
    result = run_chain(features, roles)
    dataset = result.dataset
    assert dataset is not None
    assert (dataset.assessed, dataset.drifted_share, dataset.critical_share) == (4, 0.5, 0.25)
    assert dataset.severity == "warn" and set(dataset.drifted) == {"a", "b"}
    assert result.severity == "critical"  # the score itself is critical
    critical = run_chain({"a": stats(psi=0.3), "b": stats(psi=0.3), "c": stats()}, policy=AssessmentPolicy(
        drift_share=0.6))
    assert critical.dataset is not None and critical.dataset.severity == "critical"


def test_no_judged_feature_means_an_ok_dataset() -> None:
    result = dataset_rule(Assessment({}), AssessmentPolicy())
    assert result.dataset is not None and (result.dataset.severity, result.dataset.assessed) == ("ok", 0)


def test_non_finite_metric_values_are_ignored_not_breached() -> None:
    result = run_chain({"x": stats(psi=float("nan"), js_distance=float("inf"))})
    assert result.features["x"].breaches == ()


@pytest.mark.parametrize("missing", [0.95, 1.0])
def test_a_mostly_missing_feature_is_judged_on_its_missing_rate(missing: float) -> None:
    # 4,500 rows, income 95 % / 100 % missing: too few values for the distribution tests, but the
    # missing rate is a fact about all 4,500 rows
    dropped = FeatureStats(n=4_500, n_expected=20_000, missing_rate=missing, missing_rate_expected=0.0,
                           missing_rate_shift=missing, psi=5.0)
    features = {"income": dropped, **{f"f{i}": stats(n=4_500) for i in range(4)}}
    result = run_chain(features)
    income = result.features["income"]
    assert income.insufficient and income.rows_judged and income.judged
    assert income.severity == "critical"
    assert [b.metric for b in income.breaches] == ["missing_rate_shift"]  # psi is not judged on 225 values
    assert result.dataset is not None and result.dataset.assessed == 5 and result.dataset.drifted == ("income",)


def test_a_window_with_too_few_rows_judges_nothing() -> None:
    result = run_chain({"x": FeatureStats(n=499, n_expected=20_000, missing_rate=1.0, missing_rate_expected=0.0,
                                          missing_rate_shift=1.0, invalid=0)})
    x = result.features["x"]
    assert x.insufficient and not x.rows_judged and not x.judged and x.severity == "ok"
    assert result.dataset is not None and result.dataset.assessed == 0


def test_invalid_values_are_judged_on_their_share_and_leave_the_gate_short() -> None:
    # 600 rows, 150 of them invalid: 450 valid values are too few for the distribution tests
    x = FeatureStats(n=600, n_expected=20_000, missing_rate=0.0, missing_rate_shift=0.0, invalid=150,
                     invalid_share=0.25, psi=5.0)
    result = run_chain({"x": x}).features["x"]
    assert result.insufficient and result.severity == "critical"
    assert [b.metric for b in result.breaches] == ["invalid_share"]
    assert run_chain({"x": stats(invalid=5, invalid_share=0.005)}).features["x"].severity == "ok"
