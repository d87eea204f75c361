"""The metrics sink (issue 11, first step): window statistics as gauges with bounded labels — 200 models ×
100 features stay under a series budget, a model not configured adds no series of its own —, counters
that only go up, and an exposition Prometheus' text parser reads back."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from driftline.engine.assess import AssessmentPolicy, assess
from driftline.engine.monitor import WindowReport
from driftline.engine.policy import AlertEvent, RollbackRequest, WindowRef
from driftline.engine.stats import FeatureStats
from driftline.engine.window_spec import ClosedWindow
from driftline.events import BadEvent
from driftline.metrics import OTHER, MetricsSink, series
from driftline.outcome import StepResult

FEATURES = [f"f{i:03d}" for i in range(100)]


def report(model: str, version: str, psi: float, start: int = 0, features: list[str] = FEATURES) -> WindowReport:
    stats = {name: FeatureStats(n=1_000, n_expected=10_000, psi=psi + i / 1000, psi_critical=0.05, js_distance=0.1,
                                ks_statistic=0.2, ks_pvalue=0.01, missing_rate=0.0)
             for i, name in enumerate(features)}
    window = ClosedWindow(model, version, start, start + 60_000, f"{model}-{version}-{start}", np.array([1_000]), "h")
    assessment = assess(stats, {name: "feature" for name in features}, AssessmentPolicy(min_samples=10))
    return WindowReport(window, stats, None, assessment)


def sink(models: int, max_features: int = 20) -> MetricsSink:
    names = {f"m{i}": ["1"] for i in range(models)}
    return MetricsSink(names, {(m, "1"): FEATURES for m in names}, max_features=max_features)


def values(metrics: MetricsSink, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(
        metrics.exposition().decode()) for s in family.samples if s.name == name}


def test_200_models_of_100_features_stay_under_the_series_budget() -> None:
    metrics = sink(200, max_features=20)
    metrics.write(StepResult(reports=[report(f"m{i}", "1", 0.3) for i in range(200)]))
    per_model = (20 + 1) * 9 + 4  # (20 features + "_other") × 9 feature gauges, 4 per model; the window counter
    assert series(metrics.exposition()) <= 200 * (per_model + 2) + 10
    psi = values(metrics, "driftline_feature_psi")
    assert {dict(k)["feature"] for k in psi} == {*FEATURES[:20], OTHER}
    assert psi[(("feature", OTHER), ("model", "m0"), ("model_version", "1"))] == 0.3 + 99 / 1000  # the worst kept


def test_a_model_not_configured_adds_no_series_of_its_own() -> None:
    metrics = sink(2)
    metrics.write(StepResult(reports=[report("m0", "1", 0.3)]))
    before = series(metrics.exposition())
    metrics.write(StepResult(reports=[report("m0", "1", 0.2, start=60_000)]))
    assert series(metrics.exposition()) == before
    metrics.write(StepResult(reports=[report(f"rogue{i}", "9", 0.9) for i in range(50)]))
    windows = values(metrics, "driftline_windows_closed_total")
    assert windows[(("model", OTHER), ("model_version", OTHER))] == 50
    assert series(metrics.exposition()) == before + 2  # one counter (and its _created) for every rogue model


def test_counters_only_go_up_and_states_follow_the_last_window() -> None:
    metrics = sink(1)
    ref = WindowRef("m0", "1", "w", 0, 60_000, "h")
    alert = AlertEvent("a1", "firing", "f000", "feature", "critical", ref, ())
    rollback = RollbackRequest("r1", "m0", "1", "a1", "dataset", "critical", ref, status="dry_run")
    bad = [BadEvent("t[0]@1", "decode", "JSONDecodeError", "x"), BadEvent("t[0]@2", "mystery", "E", "y")]
    for _ in range(3):
        metrics.write(StepResult(reports=[report("m0", "1", 0.4)], alerts=[alert], rollbacks=[rollback], bad=bad))
    assert values(metrics, "driftline_alerts_total") == {
        (("kind", "firing"), ("model", "m0"), ("model_version", "1"), ("severity", "critical")): 3}
    assert values(metrics, "driftline_rollback_requests_total") == {
        (("model", "m0"), ("model_version", "1"), ("status", "dry_run")): 3}
    assert values(metrics, "driftline_dead_letters_total") == {(("stage", "decode"),): 3, (("stage", OTHER),): 3}
    state = values(metrics, "driftline_feature_state")[(("feature", "f000"), ("model", "m0"), ("model_version", "1"))]
    assert state == 2
    metrics.write(StepResult(reports=[report("m0", "1", 0.0, start=60_000)]))
    assert values(metrics, "driftline_feature_psi")[(("feature", "f000"), ("model", "m0"), ("model_version", "1"))] == 0
    assert values(metrics, "driftline_windows_closed_total")[(("model", "m0"), ("model_version", "1"))] == 4
    assert values(metrics, "driftline_build_info")
