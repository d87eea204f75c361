"""Every statistic of ``driftline.engine.stats`` against an independent implementation, on seeded data.

The engine never sees raw values after counting, so each check starts from the raw samples and
computes the statistic the way its definition in the ``stats`` module docstring states it, with scipy
where scipy has it (exact two-sample KS, asymptotic KS p-value, Jensen–Shannon, Wasserstein, χ²) and
a few lines of numpy where it does not (PSI, L∞, unseen share, Holm).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from driftline.engine.assess import adjust_pvalues
from driftline.engine.features import FeatureSet
from driftline.engine.profile import build_profile
from driftline.engine.stats import PSI_EPSILON, FeatureStats

SEEDS = (0, 1, 2, 3)
REFERENCE_ROWS = 5_000
CURRENT_ROWS = 2_000


def sample(kind: str, rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Seeded samples of one family; ``shift`` moves it (0 = the reference distribution)."""
    if kind == "normal":
        return rng.normal(shift, 1.0, n)
    if kind == "uniform":
        return rng.uniform(shift, 1.0 + shift, n)
    if kind == "exponential":
        return rng.exponential(1.0 + shift, n)
    if kind == "lognormal":
        return rng.lognormal(shift, 0.8, n)
    if kind == "pareto":
        return (rng.pareto(2.5, n) + 1.0) * (1.0 + shift)
    if kind == "poisson":
        return rng.poisson(4.0 + 3.0 * shift, n).astype(np.float64)
    if kind == "zero_inflated":
        x = rng.gamma(2.0, 50.0, n) * (1.0 + shift)
        x[rng.random(n) < 0.4] = 0.0
        return x
    raise ValueError(kind)


CONTINUOUS = ("normal", "uniform", "exponential", "lognormal", "pareto")
DISCRETE = ("poisson",)
MIXED = ("zero_inflated",)
FAMILIES = CONTINUOUS + DISCRETE + MIXED
SHIFTS = (0.0, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class Case:
    kind: str
    seed: int
    shift: float
    reference: np.ndarray
    current: np.ndarray
    features: FeatureSet
    stats: FeatureStats

    @property
    def bin_edges(self) -> np.ndarray:
        return self.features.profile.features["x"].bin_edges  # type: ignore[union-attr]


def make_case(kind: str, seed: int, shift: float) -> Case:
    rng = np.random.default_rng(seed)
    reference = sample(kind, rng, REFERENCE_ROWS)
    current = sample(kind, rng, CURRENT_ROWS, shift)
    features = FeatureSet(build_profile({"x": reference}, model="m", model_version="1"))
    counts = features.count({"x": current}, rows=len(current))
    return Case(kind, seed, shift, reference, current, features,
                features.compare(features.reference(), counts)["x"])


CASES = [(kind, seed, SHIFTS[seed % len(SHIFTS)]) for kind in FAMILIES for seed in SEEDS]
_cache: dict[tuple[str, int, float], Case] = {}


def cached_case(kind: str, seed: int, shift: float) -> Case:
    key = (kind, seed, shift)
    if key not in _cache:
        _cache[key] = make_case(*key)
    return _cache[key]


@pytest.fixture(params=CASES, ids=[f"{k}-seed{s}-shift{d}" for k, s, d in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return cached_case(*request.param)


# -- independent implementations ---------------------------------------------------------------------


def coarse_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per coarse bin (-inf, e1], (e1, e2], ..., (e_last, inf] of the non-missing values."""
    present = values[~np.isnan(values)]
    index = np.searchsorted(edges, present, side="left")  # number of edges strictly below the value
    return np.bincount(index, minlength=len(edges) + 1)


def straightforward_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    total = 0.0
    n_e, n_a = expected.sum(), actual.sum()
    for e_count, a_count in zip(expected, actual, strict=True):
        e = max(e_count / n_e, PSI_EPSILON)
        a = max(a_count / n_a, PSI_EPSILON)
        total += (a - e) * np.log(a / e)
    return float(total)


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, written out as in Holm (1979)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i], i))
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# -- PSI --------------------------------------------------------------------------------------------


def test_psi_matches_a_straightforward_implementation(case: Case) -> None:
    expected = coarse_counts(case.reference, case.bin_edges)
    actual = coarse_counts(case.current, case.bin_edges)
    assert case.stats.psi == pytest.approx(straightforward_psi(expected, actual), rel=1e-12, abs=1e-12)


def test_psi_critical_and_pvalue_follow_the_chi_square_approximation(case: Case) -> None:
    bins = len(case.bin_edges) + 1
    n, m = len(case.reference), len(case.current)
    assert case.stats.psi_critical == pytest.approx(sps.chi2.ppf(0.95, bins - 1) * (1 / n + 1 / m), rel=1e-12)
    assert case.stats.psi is not None
    scaled = case.stats.psi / (1 / n + 1 / m)
    assert case.stats.psi_pvalue == pytest.approx(sps.chi2.sf(scaled, bins - 1), rel=1e-9, abs=1e-300)


def test_psi_leaves_infinities_and_missing_out() -> None:
    # ±inf are invalid values: counted apart (invalid, invalid_share), in no bin
    rng = np.random.default_rng(5)
    reference = rng.normal(size=3_000)
    reference[rng.random(3_000) < 0.1] = np.nan
    current = np.concatenate((rng.normal(0.2, 1.0, 900), [np.inf] * 30, [-np.inf] * 20, [np.nan] * 50))
    features = FeatureSet(build_profile({"x": reference}, model="m", model_version="1"))
    stats = features.compare(features.reference(), features.count({"x": current}, rows=len(current)))["x"]
    edges = features.profile.features["x"].bin_edges  # type: ignore[union-attr]
    valid = current[np.isfinite(current)]
    expected, actual = coarse_counts(reference, edges), coarse_counts(valid, edges)
    assert stats.psi == pytest.approx(straightforward_psi(expected, actual), rel=1e-12)
    n, m = int((~np.isnan(reference)).sum()), len(valid)
    assert stats.psi_critical == pytest.approx(sps.chi2.ppf(0.95, len(edges)) * (1 / n + 1 / m), rel=1e-12)
    assert stats.n == len(current) and stats.invalid == 50
    assert stats.invalid_share == pytest.approx(50 / 950)
    assert stats.missing_rate == pytest.approx(50 / len(current))
    assert stats.missing_rate_expected == pytest.approx(np.isnan(reference).mean())
    assert stats.out_of_range_share == pytest.approx(
        np.mean((valid < np.nanmin(reference)) | (valid > np.nanmax(reference))))


@pytest.mark.parametrize("kind", ["normal", "lognormal", "poisson"])
def test_psi_stays_below_its_critical_value_without_drift(kind: str) -> None:
    """The point of the sample-size-aware critical value: ~5 % false alarms, whatever N and M."""
    below = 0
    trials = 40
    for seed in range(trials):
        rng = np.random.default_rng(1_000 + seed)
        reference = sample(kind, rng, 3_000)
        current = sample(kind, rng, 300 + 100 * (seed % 10))
        features = FeatureSet(build_profile({"x": reference}, model="m", model_version="1"))
        stats = features.compare(features.reference(), features.count({"x": current}, rows=len(current)))["x"]
        assert stats.psi is not None and stats.psi_critical is not None
        below += stats.psi < stats.psi_critical
    assert below >= 0.85 * trials


# -- Jensen–Shannon ---------------------------------------------------------------------------------


def test_js_distance_matches_scipy_base_2(case: Case) -> None:
    expected = coarse_counts(case.reference, case.bin_edges)
    actual = coarse_counts(case.current, case.bin_edges)
    assert case.stats.js_distance == pytest.approx(jensenshannon(expected, actual, base=2), abs=1e-12)
    assert 0.0 <= case.stats.js_distance <= 1.0  # type: ignore[operator]


# -- Kolmogorov–Smirnov -----------------------------------------------------------------------------


def test_exact_ks_statistic_lies_within_the_stated_bound(case: Case) -> None:
    exact = sps.ks_2samp(case.reference, case.current).statistic
    ks, bound = case.stats.ks_statistic, case.stats.ks_error_bound
    assert ks is not None and bound is not None and bound >= 0
    assert ks - 1e-12 <= exact <= ks + bound + 1e-12


@pytest.mark.parametrize("kind", CONTINUOUS)
@pytest.mark.parametrize("seed", SEEDS)
def test_ks_error_bound_is_about_one_grid_cell_for_continuous_data(kind: str, seed: int) -> None:
    case = cached_case(kind, seed, SHIFTS[seed % len(SHIFTS)])
    assert case.stats.ks_error_bound is not None
    assert case.stats.ks_error_bound <= 0.01


def assert_close_to_kstwo(pvalue: float | None, statistic: float | None, effective_n: int) -> None:
    """The documented accuracy of the Stephens-corrected p-value against scipy's ``kstwo``: 2 % where
    decisions are made (p ≥ 1e-4); both tiny below that."""
    assert pvalue is not None and statistic is not None
    expected = sps.kstwo.sf(statistic, effective_n)
    if expected >= 1e-4:
        assert pvalue == pytest.approx(expected, rel=0.02)
    else:
        assert pvalue < 1e-3


def test_ks_pvalue_is_the_asymptotic_pvalue_of_the_reported_statistic(case: Case) -> None:
    n, m = len(case.reference), len(case.current)
    effective = round(n * m / (n + m))
    assert_close_to_kstwo(case.stats.ks_pvalue, case.stats.ks_statistic, effective)
    # scipy's p-value of the exact statistic lies between those of the bound's two ends (within the 2 %)
    assert case.stats.ks_statistic is not None and case.stats.ks_error_bound is not None
    assert case.stats.ks_pvalue is not None
    scipy_p = sps.ks_2samp(case.reference, case.current, method="asymp").pvalue
    lowest = sps.kstwo.sf(case.stats.ks_statistic + case.stats.ks_error_bound, effective)
    assert lowest * (1 - 1e-9) <= scipy_p <= max(case.stats.ks_pvalue * 1.02, 1e-3)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["poisson", "zero_inflated", "normal"])
def test_ks_pvalue_equals_scipy_asymp_when_the_statistic_is_exact(kind: str, seed: int) -> None:
    """Data on a lattice put every value on a grid edge, so the grid statistic is the exact one."""
    rng = np.random.default_rng(seed)
    reference = sample(kind, rng, REFERENCE_ROWS)
    current = sample(kind, rng, CURRENT_ROWS, shift=0.05 * seed)
    if kind == "zero_inflated":  # counts with excess zeros
        reference, current = np.round(reference / 20), np.round(current / 20)
    if kind == "normal":  # amounts rounded to one decimal
        reference, current = np.round(reference, 1), np.round(current, 1)
    features = FeatureSet(build_profile({"x": reference}, model="m", model_version="1"))
    stats = features.compare(features.reference(), features.count({"x": current}, rows=len(current)))["x"]
    scipy_result = sps.ks_2samp(reference, current, method="asymp")
    assert stats.ks_statistic == pytest.approx(scipy_result.statistic, abs=1e-12)
    n, m = len(reference), len(current)
    assert_close_to_kstwo(stats.ks_pvalue, float(scipy_result.statistic), round(n * m / (n + m)))


def test_ks_between_two_windows_brackets_the_exact_statistic() -> None:
    """The drift comparison (window against the previous window) uses the same bound."""
    rng = np.random.default_rng(9)
    features = FeatureSet(build_profile({"x": rng.normal(size=5_000)}, model="m", model_version="1"))
    previous, current = rng.normal(0.0, 1.0, 3_000), rng.normal(0.15, 1.1, 2_500)
    stats = features.compare(features.count({"x": previous}, rows=3_000),
                             features.count({"x": current}, rows=2_500))["x"]
    exact = sps.ks_2samp(previous, current).statistic
    assert stats.ks_statistic is not None and stats.ks_error_bound is not None
    assert stats.ks_statistic - 1e-12 <= exact <= stats.ks_statistic + stats.ks_error_bound + 1e-12
    assert stats.ks_error_bound <= 0.02


# -- Wasserstein ------------------------------------------------------------------------------------

# |engine - scipy| <= rtol * scipy + atol, in reference standard deviations. The engine interpolates
# CDFs linearly inside each of ~200 reference-quantile cells (module docstring of ``stats``), so:
# light tails: a few per cent; lognormal: wider outer cells; Pareto (tail index 2.5): the outermost
# cells are wide and the extra tail levels only partly fix it; Poisson: every value is an atom at a
# cell edge, which the linear interpolation spreads over the cell.
WASSERSTEIN_TOLERANCE = {
    "normal": (0.03, 0.002),
    "uniform": (0.03, 0.002),
    "exponential": (0.03, 0.003),
    "lognormal": (0.05, 0.003),
    "zero_inflated": (0.05, 0.003),
    "pareto": (0.10, 0.010),
    "poisson": (0.10, 0.010),
}


def in_reference_range(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return values[(values >= reference.min()) & (values <= reference.max())]


def test_wasserstein_normed_matches_scipy(case: Case) -> None:
    # the definition: scipy's distance between the two samples' values within the reference range
    within = in_reference_range(case.current, case.reference)
    if len(within) == 0:  # the whole window beyond the reference: judged by out_of_range_share alone
        assert case.stats.wasserstein_normed is None and case.stats.out_of_range_share == 1.0
        return
    exact = sps.wasserstein_distance(case.reference, within) / case.reference.std()
    rtol, atol = WASSERSTEIN_TOLERANCE[case.kind]
    assert case.stats.wasserstein_normed is not None
    assert abs(case.stats.wasserstein_normed - exact) <= rtol * exact + atol


def test_wasserstein_on_in_range_data_is_scipy_on_the_raw_values(case: Case) -> None:
    # no value outside the reference range: the definition is scipy's on the raw samples
    current = in_reference_range(case.current, case.reference)
    if len(current) < 100:  # (the case of a window beyond the reference: the test above covers it)
        return
    stats = case.features.compare(case.features.reference(),
                                  case.features.count({"x": current}, rows=len(current)))["x"]
    exact = sps.wasserstein_distance(case.reference, current) / case.reference.std()
    rtol, atol = WASSERSTEIN_TOLERANCE[case.kind]
    assert stats.out_of_range_share == 0.0 and stats.wasserstein_normed is not None
    assert abs(stats.wasserstein_normed - exact) <= rtol * exact + atol


def test_wasserstein_leaves_out_of_range_values_to_their_own_share() -> None:
    # one value of 1e29 among 4,500 does not move the distance; scipy's raw distance it dominates
    rng = np.random.default_rng(8)
    reference = rng.beta(2.0, 5.0, 20_000)
    features = FeatureSet(build_profile({"x": reference}, model="m", model_version="1"))
    clean = rng.beta(2.0, 5.0, 4_500)
    corrupt = np.concatenate((clean, [1e29]))
    at = {name: features.compare(features.reference(), features.count({"x": v}, rows=len(v)))["x"]
          for name, v in (("clean", clean), ("corrupt", corrupt))}
    assert sps.wasserstein_distance(reference, corrupt) / reference.std() > 1e20
    assert at["corrupt"].wasserstein_normed == pytest.approx(at["clean"].wasserstein_normed, rel=1e-9)
    assert at["corrupt"].out_of_range_share == pytest.approx(1 / 4_501)


def test_wasserstein_is_zero_for_the_reference_itself_and_symmetric() -> None:
    rng = np.random.default_rng(4)
    reference = rng.lognormal(0.0, 1.0, 4_000)
    features = FeatureSet(build_profile({"x": reference}, model="m", model_version="1"))
    ref, cur = features.reference(), features.count({"x": reference * 1.2}, rows=4_000)
    assert features.compare(ref, ref)["x"].wasserstein_normed == 0.0
    forward, backward = features.compare(ref, cur)["x"], features.compare(cur, ref)["x"]
    assert forward.wasserstein_normed == pytest.approx(backward.wasserstein_normed, rel=1e-12)
    assert forward.ks_statistic == pytest.approx(backward.ks_statistic, rel=1e-12)
    assert forward.js_distance == pytest.approx(backward.js_distance, rel=1e-12)


# -- categorical --------------------------------------------------------------------------------------

CATEGORIES = np.array(["a", "b", "c", "d", "e", "f", "g"])
REFERENCE_P = np.array([0.30, 0.25, 0.15, 0.12, 0.08, 0.06, 0.04])


def categorical_case(seed: int) -> tuple[np.ndarray, np.ndarray, FeatureSet, FeatureStats]:
    rng = np.random.default_rng(seed)
    reference = rng.choice(CATEGORIES, 4_000, p=REFERENCE_P).astype(object)
    reference[rng.random(4_000) < 0.05] = None
    drifted = np.roll(REFERENCE_P, seed % 3) if seed % 2 else REFERENCE_P
    current = rng.choice(CATEGORIES, 1_500, p=drifted).astype(object)
    current[rng.random(1_500) < 0.03] = "new-" + str(seed)  # unseen by the reference
    current[rng.random(1_500) < 0.02] = None
    features = FeatureSet(build_profile({"c": reference}, model="m", model_version="1", top_k=4))
    stats = features.compare(features.reference(), features.count({"c": current}, rows=len(current)))["c"]
    return reference, current, features, stats


def category_cells(values: np.ndarray, top: tuple[str, ...], vocabulary: set[str]) -> np.ndarray:
    """Counts per cell: each top category, the reference's rarer ones together, unseen (missing left out)."""
    counter = Counter(v for v in values if v is not None)
    cells = [counter.get(t, 0) for t in top]
    cells.append(sum(n for v, n in counter.items() if v in vocabulary and v not in top))
    cells.append(sum(n for v, n in counter.items() if v not in vocabulary))
    return np.array(cells)


@pytest.mark.parametrize("seed", range(6))
def test_categorical_statistics_match_direct_computation(seed: int) -> None:
    reference, current, features, stats = categorical_case(seed)
    top = features.profile.features["c"].top  # type: ignore[union-attr]
    assert top == ("a", "b", "c", "d")
    vocabulary = {v for v in reference if v is not None}
    expected, actual = category_cells(reference, top, vocabulary), category_cells(current, top, vocabulary)
    e_share, a_share = expected / expected.sum(), actual / actual.sum()

    table = np.vstack((expected, actual))
    table = table[:, table.sum(axis=0) > 0]
    chi2 = sps.chi2_contingency(table, correction=False)
    assert stats.chi2_pvalue == pytest.approx(chi2.pvalue, rel=1e-9, abs=1e-300)
    assert stats.l_infinity == pytest.approx(np.max(np.abs(a_share - e_share)), abs=1e-15)
    assert stats.unseen_share == pytest.approx(actual[-1] / actual.sum(), abs=1e-15)
    assert stats.unseen_share is not None and stats.unseen_share > 0
    assert stats.psi == pytest.approx(straightforward_psi(expected, actual), rel=1e-12)
    assert stats.js_distance == pytest.approx(jensenshannon(expected, actual, base=2), abs=1e-12)
    cells = int(np.count_nonzero(expected + actual))
    n, m = expected.sum(), actual.sum()
    assert stats.psi_critical == pytest.approx(sps.chi2.ppf(0.95, cells - 1) * (1 / n + 1 / m), rel=1e-12)
    assert stats.missing_rate == pytest.approx(np.mean([v is None for v in current]))
    assert stats.missing_rate_expected == pytest.approx(np.mean([v is None for v in reference]))


def test_chi2_of_identical_category_shares_is_one_and_of_disjoint_ones_is_zero() -> None:
    features = FeatureSet(build_profile({"c": np.array(["a", "b"] * 50)}, model="m", model_version="1"))
    same = features.compare(features.reference(), features.count({"c": np.array(["a", "b"] * 10)}, rows=20))["c"]
    assert same.chi2_pvalue == pytest.approx(1.0)
    assert same.l_infinity == 0.0 and same.psi == 0.0 and same.js_distance == 0.0
    other = features.compare(features.reference(), features.count({"c": np.array(["z"] * 20)}, rows=20))["c"]
    assert other.chi2_pvalue == pytest.approx(sps.chi2_contingency([[50, 50, 0], [0, 0, 20]]).pvalue)
    assert other.unseen_share == 1.0 and other.l_infinity == 1.0
    assert other.js_distance == pytest.approx(1.0)


def test_approval_rate_shift_matches_direct_computation() -> None:
    rng = np.random.default_rng(2)
    reference = rng.choice(["approve", "decline", "review"], 2_000, p=[0.6, 0.3, 0.1])
    current = rng.choice(["approve", "decline", "review"], 800, p=[0.45, 0.45, 0.1])
    features = FeatureSet(build_profile({"d": reference}, model="m", model_version="1", decision_column="d"))
    stats = features.compare(features.reference(), features.count({"d": current}, rows=800))["d"]
    assert stats.approval_rate == pytest.approx(np.mean(current == "approve"))
    assert stats.approval_rate_expected == pytest.approx(np.mean(reference == "approve"))
    assert stats.approval_rate_shift == pytest.approx(np.mean(current == "approve") - np.mean(reference == "approve"))


# -- multiple testing -----------------------------------------------------------------------------


pvalue_lists = st.lists(
    st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.01, 0.04, 0.05, 1.0])), min_size=1, max_size=30)


@given(pvalue_lists)
def test_holm_matches_a_hand_implementation(pvalues: list[float]) -> None:
    adjusted = adjust_pvalues(np.array(pvalues), "holm")
    np.testing.assert_allclose(adjusted, holm(pvalues), rtol=1e-12, atol=0)
    assert np.all(adjusted >= np.array(pvalues)) and np.all(adjusted <= 1.0)


@given(pvalue_lists)
def test_bonferroni_and_none(pvalues: list[float]) -> None:
    raw = np.array(pvalues)
    np.testing.assert_allclose(adjust_pvalues(raw, "bonferroni"), np.minimum(raw * len(raw), 1.0), rtol=1e-12)
    np.testing.assert_array_equal(adjust_pvalues(raw, "none"), raw)


def test_holm_textbook_example() -> None:
    # Four hypotheses with p = 0.01, 0.04, 0.03, 0.005: adjusted 0.03, 0.06, 0.06, 0.02.
    adjusted = adjust_pvalues(np.array([0.01, 0.04, 0.03, 0.005]), "holm")
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert adjust_pvalues(np.array([]), "holm").shape == (0,)
