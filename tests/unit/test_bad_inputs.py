"""Bad and degenerate inputs: every statistic comes out finite or None (never NaN or ±inf), and every
refusal is a ``driftline.errors.InvalidInput`` that names what was wrong.

Covers NaN, ±inf, empty windows and batches, constant and all-missing columns, unseen categories, a
zero-variance reference, a reference with fewer rows than bins, object arrays with None, strings in a
numeric column, mismatched lengths, non-integer event times, and a fuzz over all of them at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.engine.assess import SEVERITY_RANK
from driftline.engine.changewatch import ScoreChangeWatch
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import ModelMonitor, evaluate_counts
from driftline.engine.profile import ReferenceProfile, build_profile
from driftline.engine.stats import FeatureStats
from driftline.engine.window import WindowSpec, WindowState
from driftline.errors import InvalidInput

ROWS = 600


@contextmanager
def no_numpy_warnings() -> Iterator[None]:
    """A RuntimeWarning (overflow, invalid value, division by zero) is how a NaN is usually born."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def assert_finite_or_none(stats: Mapping[str, FeatureStats]) -> None:
    for name, s in stats.items():
        for metric, value in s.as_dict().items():
            assert value is None or math.isfinite(value), f"{name}.{metric} = {value}"
            if value is None:
                continue
            if metric.endswith("pvalue"):
                assert 0.0 <= value <= 1.0, f"{name}.{metric} = {value}"
            if metric in ("psi", "psi_critical", "js_distance", "ks_statistic", "ks_error_bound",
                          "wasserstein_normed", "out_of_range_share", "l_infinity", "unseen_share"):
                assert value >= 0.0, f"{name}.{metric} = {value}"
            if metric in ("js_distance", "ks_statistic", "out_of_range_share", "l_infinity", "unseen_share",
                          "missing_rate", "missing_rate_expected", "approval_rate", "approval_rate_expected"):
                assert value <= 1.0, f"{name}.{metric} = {value}"


def evaluate(profile: ReferenceProfile, columns: Mapping[str, Any], rows: int) -> dict[str, FeatureStats]:
    features = FeatureSet(profile)
    with no_numpy_warnings():
        vector = features.count(columns, rows)
        skew, assessment = evaluate_counts(features, vector)
        drift = features.compare(vector, features.reference())
    assert_finite_or_none(skew)
    assert_finite_or_none(drift)
    assert all(f.severity in SEVERITY_RANK for f in assessment.features.values())
    return skew


def with_nones(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    result = values.astype(object)
    result[mask] = None
    return result


@pytest.fixture(scope="module")
def degenerate_profile() -> ReferenceProfile:
    """Every awkward kind of reference column at once."""
    rng = np.random.default_rng(0)
    normal = rng.normal(size=ROWS)
    with_inf = normal.copy()
    with_inf[:10] = np.inf
    with_inf[10:20] = -np.inf
    with_nan = normal.copy()
    with_nan[::7] = np.nan
    with no_numpy_warnings():
        return build_profile(
            {
                "normal": normal,
                "constant": np.full(ROWS, 3.5),
                "all_nan": np.full(ROWS, np.nan),
                "all_inf": np.full(ROWS, np.inf),
                "with_inf": with_inf,
                "with_nan": with_nan,
                "cat": rng.choice(["a", "b", "c"], ROWS),
                "cat_all_none": np.full(ROWS, None, dtype=object),
                "cat_with_none": with_nones(rng.choice(["x", "y"], ROWS), rng.random(ROWS) < 0.2),
                "score": rng.random(ROWS),
                "decision": rng.choice(["approve", "decline"], ROWS),
            },
            model="m", model_version="1", score_column="score", decision_column="decision",
        )


NUMERIC = ("normal", "constant", "all_nan", "all_inf", "with_inf", "with_nan", "score")
CATEGORICAL = ("cat", "cat_all_none", "cat_with_none", "decision")


def batch_of(numeric: np.ndarray, categorical: np.ndarray) -> dict[str, np.ndarray]:
    return {**{name: numeric for name in NUMERIC}, **{name: categorical for name in CATEGORICAL}}


CURRENT_BATCHES = {
    "like_reference": (np.random.default_rng(1).normal(size=200), np.array(["a", "b", "c", "x", "y"] * 40)),
    "all_nan": (np.full(200, np.nan), np.full(200, None, dtype=object)),
    "all_plus_inf": (np.full(200, np.inf), np.array(["never-seen"] * 200)),
    "all_minus_inf": (np.full(200, -np.inf), np.array(["a"] * 200)),
    "constant": (np.full(200, 3.5), np.array(["approve"] * 200)),
    "huge": (np.full(200, 1.7e308), np.array([""] * 200)),
    "tiny": (np.full(200, 5e-324), np.array(["é"] * 200)),
    "mixed_specials": (np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308, 5e-324] * 25),
                       np.array(["a", None, np.nan, "unseen", "b", "", None, "c"] * 25, dtype=object)),
    "single_row": (np.array([0.25]), np.array(["b"])),
}


@pytest.mark.parametrize("label", list(CURRENT_BATCHES))
def test_every_statistic_is_finite_or_none(degenerate_profile: ReferenceProfile, label: str) -> None:
    numeric, categorical = CURRENT_BATCHES[label]
    evaluate(degenerate_profile, batch_of(numeric, categorical), len(numeric))


def test_an_empty_window_has_no_statistics_only_counts(degenerate_profile: ReferenceProfile) -> None:
    skew = evaluate(degenerate_profile, batch_of(np.zeros(0), np.zeros(0, dtype=object)), 0)
    for name, s in skew.items():
        assert s.n == 0 and s.missing_rate is None and s.psi is None and s.ks_statistic is None, name
        # every reference row, missing and invalid (±inf) included
        assert s.n_expected == degenerate_profile.features[name].count, name
        assert s.invalid == 0


def test_an_empty_window_is_insufficient_not_drifted(degenerate_profile: ReferenceProfile) -> None:
    features = FeatureSet(degenerate_profile)
    _, assessment = evaluate_counts(features, features.empty())
    assert all(f.insufficient and f.severity == "ok" for f in assessment.features.values())
    assert assessment.dataset is not None and assessment.dataset.assessed == 0
    assert assessment.severity == "ok"


def test_all_missing_serving_column_is_a_missing_rate_shift_only(degenerate_profile: ReferenceProfile) -> None:
    skew = evaluate(degenerate_profile, batch_of(*CURRENT_BATCHES["all_nan"]), 200)
    s = skew["normal"]
    assert s.missing_rate == 1.0 and s.missing_rate_shift == 1.0
    assert s.psi is None and s.ks_statistic is None and s.wasserstein_normed is None


def test_a_reference_without_finite_values_compares_missing_rates_only(degenerate_profile: ReferenceProfile) -> None:
    skew = evaluate(degenerate_profile, batch_of(*CURRENT_BATCHES["like_reference"]), 200)
    for name in ("all_nan", "all_inf"):
        s = skew[name]
        assert s.psi is None and s.ks_statistic is None and s.wasserstein_normed is None
    assert skew["all_nan"].missing_rate_expected == 1.0 and skew["all_nan"].missing_rate == 0.0
    assert skew["all_inf"].missing_rate_expected == 0.0


def test_unseen_categories_are_counted_not_dropped(degenerate_profile: ReferenceProfile) -> None:
    skew = evaluate(degenerate_profile, batch_of(*CURRENT_BATCHES["all_plus_inf"]), 200)
    assert skew["cat"].unseen_share == 1.0 and skew["cat"].l_infinity == 1.0
    assert skew["cat"].chi2_pvalue is not None and skew["cat"].chi2_pvalue < 1e-10
    # a reference with no category at all: everything the window holds is unseen
    assert skew["cat_all_none"].unseen_share is None  # no non-missing reference value to compare with
    assert skew["cat_all_none"].missing_rate_expected == 1.0 and skew["cat_all_none"].missing_rate == 0.0


def test_zero_variance_reference(degenerate_profile: ReferenceProfile) -> None:
    constant = degenerate_profile.features["constant"]
    assert constant.std == 0.0 and constant.scale == 1.0  # type: ignore[union-attr]
    same = evaluate(degenerate_profile, batch_of(*CURRENT_BATCHES["constant"]), 200)["constant"]
    assert (same.psi, same.ks_statistic, same.wasserstein_normed, same.out_of_range_share) == (0.0, 0.0, 0.0, 0.0)
    moved = evaluate(degenerate_profile, batch_of(*CURRENT_BATCHES["like_reference"]), 200)["constant"]
    # N(0, 1) values all lie below the constant 3.5: every one is out of range and KS sees all of them;
    # the coarse bins of a constant reference are (-inf, 3.5] and (3.5, inf), so PSI does not.
    assert moved.out_of_range_share == 1.0 and moved.ks_statistic == 1.0
    # no value within the reference range [3.5, 3.5]: the out-of-range share alone judges it
    assert moved.wasserstein_normed is None
    above = evaluate(degenerate_profile, batch_of(np.full(200, 4.0), np.array(["a"] * 200)), 200)["constant"]
    assert above.psi is not None and above.psi > above.psi_critical  # type: ignore[operator]


@pytest.mark.parametrize("rows", [1, 2, 3, 9])
def test_a_reference_with_fewer_rows_than_bins(rows: int) -> None:
    reference = np.arange(rows, dtype=np.float64) * 1.5
    with no_numpy_warnings():
        profile = build_profile({"x": reference}, model="m", model_version="1", bins=10)
    x = profile.features["x"]
    assert len(x.bin_edges) <= rows and set(x.bin_edges.tolist()) <= set(reference.tolist())  # type: ignore[union-attr]
    assert int(x.grid_counts.sum()) == rows  # type: ignore[union-attr]
    current = np.array([0.0, 1.5, 100.0, np.nan])
    stats = evaluate(profile, {"x": current}, 4)["x"]
    assert stats.psi is not None and stats.ks_statistic is not None
    assert stats.out_of_range_share == pytest.approx(np.mean(current[:3] > reference.max()))


def test_object_arrays_with_none(degenerate_profile: ReferenceProfile) -> None:
    numeric = np.array([0.5, None, -1.0, None, 2.0], dtype=object)
    categorical = np.array(["a", None, "b", np.nan, "zz"], dtype=object)
    skew = evaluate(degenerate_profile, batch_of(numeric, categorical), 5)
    assert skew["normal"].missing_rate == pytest.approx(2 / 5)
    assert skew["cat"].missing_rate == pytest.approx(2 / 5)
    assert skew["cat"].unseen_share == pytest.approx(1 / 3)


def test_a_column_absent_from_the_batch_is_all_missing(degenerate_profile: ReferenceProfile) -> None:
    skew = evaluate(degenerate_profile, {"normal": np.zeros(10)}, 10)
    assert skew["cat"].missing_rate == 1.0 and skew["score"].missing_rate == 1.0


# -- refusals name what was wrong ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_factory(degenerate_profile: ReferenceProfile) -> Any:
    features = FeatureSet(degenerate_profile)
    return lambda: WindowState(features, WindowSpec(size_ms=1_000))


def good_columns(n: int) -> dict[str, np.ndarray]:
    return batch_of(np.linspace(-1.0, 1.0, n), np.array(["a", "b"] * (n // 2) + ["c"] * (n % 2)))


@pytest.mark.parametrize("bad", [
    np.array(["1.5", "abc", "2"]),
    np.array([b"1", b"2", b"3"]),
    np.array([1.0, "abc", None], dtype=object),
    np.array([1.0, {"a": 1}, 2.0], dtype=object),
], ids=["str", "bytes", "object_with_word", "object_with_dict"])
def test_strings_in_a_numeric_column_are_refused_naming_the_column(state_factory: Any, bad: np.ndarray) -> None:
    columns = good_columns(3) | {"with_nan": bad}
    with pytest.raises(InvalidInput) as error:
        state_factory().update(np.array([1, 2, 3]), columns)
    assert error.value.column == "with_nan"
    assert "'with_nan'" in str(error.value) and "number" in str(error.value)


def test_numeric_strings_in_an_object_column_are_refused_too(state_factory: Any) -> None:
    columns = good_columns(3) | {"normal": np.array([1.0, "2.5", 3.0], dtype=object)}
    with pytest.raises(InvalidInput, match="'normal'"):
        state_factory().update(np.array([1, 2, 3]), columns)


def test_a_numeric_score_column_with_labels_is_refused_at_profile_time() -> None:
    with pytest.raises(InvalidInput) as error:
        build_profile({"s": np.array(["low", "high"])}, model="m", model_version="1", score_column="s")
    assert error.value.column == "s" and "categorical" in str(error.value)


def test_mismatched_lengths_name_the_column(state_factory: Any) -> None:
    columns = good_columns(4) | {"cat": np.array(["a", "b", "c"])}
    with pytest.raises(InvalidInput) as error:
        state_factory().update(np.array([1, 2, 3, 4]), columns)
    assert error.value.column == "cat" and "3 values for 4 event times" in str(error.value)
    with pytest.raises(InvalidInput, match="differ in length"):
        build_profile({"a": np.zeros(3), "b": np.zeros(4)}, model="m", model_version="1")


@pytest.mark.parametrize("times", [
    np.array([1.0, 2.0, 3.0]),
    np.array([1.5, 2.0, np.nan]),
    np.array(["1", "2", "3"]),
    np.array([1, 2, None], dtype=object),
    np.array([True, False, True]),
    np.array(["2024-01-01", "2024-01-01", "2024-01-02"], dtype="datetime64[ms]"),
], ids=["float", "float_nan", "str", "object", "bool", "datetime64"])
def test_non_integer_event_times_are_refused(state_factory: Any, times: np.ndarray) -> None:
    state = state_factory()
    with pytest.raises(InvalidInput, match="event times must be integer epoch milliseconds") as error:
        state.update(times, good_columns(3))
    assert str(times.dtype) in str(error.value)
    assert state.panes == {} and state.watermark is None  # nothing half-applied


def test_a_refused_batch_leaves_the_state_untouched(state_factory: Any) -> None:
    state = state_factory()
    state.update(np.array([10, 20]), good_columns(2))
    before = state.snapshot()
    with pytest.raises(InvalidInput):
        state.update(np.array([30, 3_000]), good_columns(2) | {"normal": np.array(["x", "y"])})
    assert state.snapshot() == before


def test_an_empty_batch_is_accepted_and_changes_nothing(state_factory: Any) -> None:
    state = state_factory()
    result = state.update(np.zeros(0, dtype=np.int64), good_columns(0))
    assert (result.accepted, result.closed, result.late, result.rejected.size) == (0, [], [], 0)
    assert state.flush() == []


def test_monitor_survives_bad_rows_end_to_end(degenerate_profile: ReferenceProfile) -> None:
    monitor = ModelMonitor(degenerate_profile, WindowSpec(size_ms=1_000))
    reports = []
    for second, label in enumerate(CURRENT_BATCHES):
        numeric, categorical = CURRENT_BATCHES[label]
        times = np.full(len(numeric), second * 1_000 + 1, dtype=np.int64)
        columns = batch_of(numeric, categorical)
        columns["score"] = np.where(np.abs(numeric) > 1e300, 0.5, numeric)  # see the score watch overflow below
        with no_numpy_warnings():
            reports += monitor.update(times, columns).reports
    with no_numpy_warnings():
        reports += monitor.flush()
    assert len(reports) == len(CURRENT_BATCHES)
    for report in reports:
        assert_finite_or_none(report.skew)
        if report.drift is not None:
            assert_finite_or_none(report.drift)


@pytest.mark.parametrize("call", [
    lambda: build_profile({"x": np.zeros(3)}, model="m", model_version="1", bins=1),
    lambda: build_profile({}, model="m", model_version="1"),
    lambda: build_profile({"x": np.zeros(0)}, model="m", model_version="1"),
    lambda: build_profile({"x": np.zeros(3)}, model="m", model_version="1", categorical=("nope",)),
    lambda: build_profile({"x": np.zeros(3)}, model="m", model_version="1", score_column="nope"),
    lambda: build_profile({"x": np.zeros(3)}, model="m", model_version="1", top_k=0),
], ids=["one_bin", "no_columns", "no_rows", "unknown_categorical", "unknown_score", "top_k_0"])
def test_profile_refusals_are_invalid_input(call: Any) -> None:
    with pytest.raises(InvalidInput) as error:
        call()
    message = str(error.value)
    assert any(word in message for word in ("bins", "no columns", "no rows", "'nope'", "top_k"))


# -- known bugs --------------------------------------------------------------------------------------------


def test_integer_labels_count_as_the_same_labels_at_serving() -> None:
    labels = np.array([5, 5, 5, 7, 7, 9])
    profile = build_profile({"code": labels}, model="m", model_version="1", categorical=("code",))
    stats = evaluate(profile, {"code": labels}, len(labels))["code"]
    assert stats.psi == 0.0 and stats.unseen_share == 0.0


def test_integer_decisions_keep_their_approval_rate() -> None:
    rng = np.random.default_rng(0)
    decisions = (rng.random(1_000) < 0.7).astype(np.int64)
    profile = build_profile({"d": decisions}, model="m", model_version="1", decision_column="d")
    stats = evaluate(profile, {"d": decisions}, len(decisions))["d"]
    assert stats.approval_rate == pytest.approx(decisions.mean())
    assert stats.approval_rate_shift == 0.0


def test_float_labels_in_object_arrays_match_the_reference() -> None:
    profile = build_profile({"c": np.array([1.0, 2.0, 2.0, np.nan])}, model="m", model_version="1",
                            categorical=("c",))
    stats = evaluate(profile, {"c": np.array([1.0, None, 2.0, 2.0], dtype=object)}, 4)["c"]
    assert stats.unseen_share == 0.0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("reference", [[0.0, 2e154], [9e307, 9e307]], ids=["std_overflow", "mean_overflow"])
def test_huge_finite_reference_values_are_profiled_or_refused_by_name(reference: list[float]) -> None:
    try:
        profile = build_profile({"amount": np.array(reference)}, model="m", model_version="1")
    except InvalidInput as error:
        assert error.column == "amount"
        return
    evaluate(profile, {"amount": np.array(reference)}, len(reference))


def test_huge_finite_scores_do_not_blind_the_score_watch() -> None:
    rng = np.random.default_rng(0)
    watch = ScoreChangeWatch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        watch.update(rng.beta(2, 5, 32_000))
        watch.update(np.full(32, 1.7e308))  # one corrupt chunk of finite values
        watch.update(rng.beta(2, 5, 32_000))
        detections = watch.update(rng.beta(5, 2, 8_000)).detections
    assert detections, "the shift after the corrupt chunk must still be detected"


# -- fuzz -------------------------------------------------------------------------------------------------

reference_floats = st.one_of(st.floats(-1e150, 1e150), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 5e-324]))
serving_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 5e-324]))
labels = st.one_of(st.sampled_from(["a", "b", "c", "", "é", "unseen"]), st.none())


@given(data=st.data(), bins=st.integers(2, 12), grid=st.integers(2, 60), top_k=st.integers(1, 4))
def test_fuzz_any_reference_any_window_gives_finite_or_none(data: st.DataObject, bins: int, grid: int,
                                                            top_k: int) -> None:
    n = data.draw(st.integers(1, 40))
    m = data.draw(st.integers(0, 40))
    reference = {"x": np.array(data.draw(st.lists(reference_floats, min_size=n, max_size=n))),
                 "c": np.array(data.draw(st.lists(labels, min_size=n, max_size=n)), dtype=object)}
    current = {"x": np.array(data.draw(st.lists(serving_floats, min_size=m, max_size=m)), dtype=np.float64),
               "c": np.array(data.draw(st.lists(labels, min_size=m, max_size=m)), dtype=object)}
    with no_numpy_warnings():
        profile = build_profile(reference, model="m", model_version="1", bins=bins, grid_points=grid, top_k=top_k,
                                max_vocabulary=top_k + 1)
        profile = ReferenceProfile.from_dict(profile.to_dict())
    evaluate(profile, current, m)


# -- a few corrupt values never make a critical -------------------------------------------------------

CORRUPT_VALUES = (1e29, -1e29, 1e308, -1e308, 1e20, math.inf, -math.inf, 1.5, -0.25)
"""Values a broken upstream or a broken model writes (1.5 and -0.25: outside a probability's range)."""
_REFERENCES = {
    "beta": lambda rng, n: rng.beta(2.0, 5.0, n),
    "lognormal": lambda rng, n: rng.lognormal(10.4, 0.55, n),
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "pareto": lambda rng, n: rng.pareto(2.5, n),
}
_PROFILES: dict[str, ReferenceProfile] = {}


def _corruption_profile(kind: str) -> ReferenceProfile:
    if kind not in _PROFILES:
        rng = np.random.default_rng(11)
        columns = {"x": _REFERENCES[kind](rng, 20_000), "score": rng.beta(2.0, 8.0, 20_000)}
        _PROFILES[kind] = build_profile(columns, model="m", model_version="1", score_column="score",
                                        valid_ranges={"score": (0.0, 1.0)})
    return _PROFILES[kind]


@given(kind=st.sampled_from(sorted(_REFERENCES)), n=st.integers(500, 6_000), share=st.floats(0.0, 0.00999),
       corrupt=st.lists(st.sampled_from(CORRUPT_VALUES), min_size=1, max_size=4), seed=st.integers(0, 2 ** 16))
def test_k_corrupt_values_in_n_never_make_a_critical_below_the_out_of_range_threshold(
        kind: str, n: int, share: float, corrupt: list[float], seed: int) -> None:
    # k/n below out_of_range_share's warn threshold (1 %): whatever the values, no metric is critical
    profile = _corruption_profile(kind)
    rng = np.random.default_rng(seed)
    k = int(share * n)
    x, score = _REFERENCES[kind](rng, n), rng.beta(2.0, 8.0, n)
    rows = rng.choice(n, k, replace=False)
    x[rows] = rng.choice(corrupt, k)
    score[rows] = rng.choice(corrupt, k)
    features = FeatureSet(profile)
    with no_numpy_warnings():
        skew, assessment = evaluate_counts(features, features.count({"x": x, "score": score}, n))
    for name, f in assessment.features.items():
        assert f.severity != "critical", (name, f.breaches)
    assert skew["score"].invalid == k  # every corrupt score is outside [0, 1]: counted invalid, not lost
    assert skew["x"].invalid == int(np.isinf(x).sum()) and skew["x"].n == n
