"""The reference profile and its bin layouts (``engine.profile``, ``engine.bins``), against direct computation.

Summaries against numpy; edges and grid against the quantile definition; the reference's own cell
counts and every serving value's cell against a per-value search; categories against ``Counter``;
JSON round trips and the content hash; malformed and tampered profiles refused.
"""

from __future__ import annotations

import copy
import re
import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.engine.bins import CategoricalLayout, NumericLayout, as_float, category_strings
from driftline.engine.features import FeatureSet
from driftline.engine.profile import (DEFAULT_POSITIVE_DECISIONS, CategoricalProfile, NumericProfile,
                                      ReferenceProfile, build_profile, content_hash)
from driftline.errors import ProfileError


def with_nones(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    result = values.astype(object)
    result[mask] = None
    return result


def numeric(profile: ReferenceProfile, name: str) -> NumericProfile:
    feature = profile.features[name]
    assert isinstance(feature, NumericProfile)
    return feature


def categorical(profile: ReferenceProfile, name: str) -> CategoricalProfile:
    feature = profile.features[name]
    assert isinstance(feature, CategoricalProfile)
    return feature


@pytest.fixture(scope="module")
def credit() -> tuple[dict[str, np.ndarray], ReferenceProfile]:
    rng = np.random.default_rng(7)
    n = 5_000
    income = rng.lognormal(10.0, 0.5, n)
    income[rng.random(n) < 0.03] = np.nan
    income[:4] = [np.inf, -np.inf, np.inf, np.nan]
    columns = {
        "income": income,
        "age": rng.integers(18, 90, n).astype(np.float64),
        "channel": rng.choice(["web", "app", "branch", "phone", "partner"], n, p=[0.5, 0.25, 0.15, 0.07, 0.03]),
        "region": with_nones(rng.choice(["n", "s", "e", "w"], n), rng.random(n) < 0.1),
        "score": rng.beta(2.0, 5.0, n),
        "decision": rng.choice(["approve", "decline", "review"], n, p=[0.6, 0.3, 0.1]),
    }
    profile = build_profile(columns, model="credit", model_version="3", score_column="score",
                            decision_column="decision", top_k=3, bins=10, grid_points=200)
    return columns, profile


# -- numeric summaries -----------------------------------------------------------------------------------


def test_numeric_summaries_match_numpy(credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    columns, profile = credit
    income = columns["income"]
    finite = income[np.isfinite(income)]
    f = numeric(profile, "income")
    assert (f.count, f.missing, f.nonfinite) == (len(income), int(np.isnan(income).sum()), 3)
    assert f.minimum == finite.min() and f.maximum == finite.max()
    assert f.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert f.std == pytest.approx(finite.std(ddof=0), rel=1e-12)
    assert f.missing_rate == pytest.approx(np.isnan(income).mean())
    assert f.role == "feature" and numeric(profile, "score").role == "score"


def test_bin_edges_are_reference_deciles_and_split_it_evenly(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    columns, profile = credit
    finite = np.sort(columns["income"][np.isfinite(columns["income"])])
    f = numeric(profile, "income")
    levels = np.arange(1, 10) / 10
    expected = np.unique(np.quantile(finite, levels, method="inverted_cdf"))
    np.testing.assert_array_equal(f.bin_edges, expected)
    assert set(f.bin_edges.tolist()) <= set(finite.tolist())  # every edge is an observed value
    shares = np.diff(np.searchsorted(finite, np.concatenate(([-np.inf], f.bin_edges, [np.inf])), side="right"))
    np.testing.assert_allclose(shares / len(finite), 0.1, atol=1 / len(finite))


def test_grid_holds_every_edge_and_the_reference_exact_counts(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    columns, profile = credit
    finite = columns["income"][np.isfinite(columns["income"])]
    f = numeric(profile, "income")
    assert profile.settings["grid_points"] == 200
    assert f.grid[0] == finite.min() and f.grid[-1] == finite.max()
    assert np.all(np.diff(f.grid) > 0) and set(f.bin_edges.tolist()) <= set(f.grid.tolist())
    assert len(f.grid) >= 150
    direct = [int(np.sum(finite == f.grid[0]))] + [
        int(np.sum((finite > lo) & (finite <= hi))) for lo, hi in zip(f.grid[:-1], f.grid[1:])]
    assert f.grid_counts.tolist() == direct
    assert int(f.grid_counts.sum()) == len(finite)


def test_integer_valued_reference_grid_is_its_distinct_values(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    columns, profile = credit
    f = numeric(profile, "age")
    values, counts = np.unique(columns["age"], return_counts=True)
    np.testing.assert_array_equal(f.grid, values)
    np.testing.assert_array_equal(f.grid_counts, counts)


@pytest.mark.parametrize("bins,grid_points,expected", [(10, 200, 200), (7, 200, 203), (4, 10, 12), (2, 1, 2)])
def test_grid_points_round_up_to_a_multiple_of_bins(bins: int, grid_points: int, expected: int) -> None:
    profile = build_profile({"x": np.arange(1_000.0)}, model="m", model_version="1", bins=bins,
                            grid_points=grid_points)
    assert profile.settings["grid_points"] == expected
    assert len(numeric(profile, "x").bin_edges) == bins - 1


# -- numeric layout -------------------------------------------------------------------------------------


def cell_of(edges: np.ndarray, value: float) -> int:
    """The cell (edges[i-1], edges[i]] of one value, by a plain per-value search; NaN → the missing cell."""
    if np.isnan(value):
        return len(edges)
    for i, right in enumerate(edges):
        if value <= right:
            return i
    raise AssertionError("edges end with +inf")


values_strategy = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                     st.floats(-5.0, 5.0), st.sampled_from([0.0, -0.0, 1.0, -1.0])), max_size=60)


@pytest.fixture(scope="module")
def layout() -> NumericLayout:
    rng = np.random.default_rng(3)
    profile = build_profile({"x": np.round(rng.normal(size=2_000), 2)}, model="m", model_version="1")
    result = numeric(profile, "x").layout
    assert result is not None
    return result


@given(values=values_strategy)
def test_every_value_lands_in_its_cell(layout: NumericLayout, values: list[float]) -> None:
    array = np.array(values, dtype=np.float64)
    counts = layout.count(array)
    direct = np.bincount([cell_of(layout.edges, v) for v in values], minlength=layout.n_cells)
    np.testing.assert_array_equal(counts, direct)
    assert counts[layout.missing_cell] == int(np.isnan(array).sum())
    present = array[~np.isnan(array)]
    grid = layout.grid
    assert layout.out_of_range(counts) == int(np.sum((present < grid[0]) | (present > grid[-1])))


def test_layout_edges_and_out_of_range_ladder(layout: NumericLayout) -> None:
    edges = layout.edges
    assert np.all(np.diff(edges) > 0) and edges[-1] == np.inf and np.all(np.isfinite(edges[:-1]))
    below, above = edges[: layout.grid_cells.start], edges[layout.grid_cells.stop: -1]
    assert len(below) == len(above) + 1  # the float just below the minimum closes the cell of the minimum
    assert below[-1] == np.nextafter(layout.grid[0], -np.inf)
    ratios = np.diff(above - layout.grid[-1])
    assert np.allclose(ratios[1:] / ratios[:-1], np.sqrt(2))  # the √2 ladder


def test_coarse_bins_fold_out_of_range_into_the_end_bins(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    _, profile = credit
    f = numeric(profile, "income")
    layout = f.layout
    assert layout is not None
    values = np.array([-np.inf, -1e9, f.minimum, f.bin_edges[0], np.nextafter(f.bin_edges[0], np.inf),
                       f.maximum, 1e12, np.inf, np.nan])
    coarse = layout.coarse(layout.count(values))
    assert len(coarse) == len(f.bin_edges) + 1
    assert coarse.tolist() == [4, 1] + [0] * (len(f.bin_edges) - 2) + [3]


def test_a_constant_reference_gets_a_unit_scale_and_two_bins() -> None:
    profile = build_profile({"x": np.full(100, 2.0)}, model="m", model_version="1")
    f = numeric(profile, "x")
    assert f.std == 0.0 and f.scale == 1.0
    np.testing.assert_array_equal(f.bin_edges, [2.0])
    assert f.layout is not None and len(f.layout.coarse(f.layout.count(np.array([1.0, 2.0, 3.0])))) == 2


def test_as_float_reads_none_as_missing_and_refuses_words() -> None:
    np.testing.assert_array_equal(as_float(np.array([1, None, 2.5], dtype=object)), [1.0, np.nan, 2.5])
    np.testing.assert_array_equal(as_float(np.array([True, False])), [1.0, 0.0])
    with pytest.raises(ValueError, match="non-numeric"):
        as_float(np.array([1.0, "x"], dtype=object))
    with pytest.raises(ValueError, match="dtype"):
        as_float(np.array(["1.0"]))


# -- categorical ----------------------------------------------------------------------------------------


def test_top_k_categories_by_frequency_with_the_rest_folded_into_other(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    columns, profile = credit
    f = categorical(profile, "channel")
    counts = Counter(columns["channel"].tolist())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert f.top == tuple(k for k, _ in ranked[:3])
    assert f.top_counts.tolist() == [n for _, n in ranked[:3]]
    assert set(f.others) == {k for k, _ in ranked[3:]} and f.other_count == sum(n for _, n in ranked[3:])
    assert not f.vocabulary_truncated and f.missing == 0
    region = categorical(profile, "region")
    assert region.missing == sum(v is None for v in columns["region"])
    assert int(region.top_counts.sum()) + region.other_count + region.missing == region.count


def test_ties_are_broken_by_name_and_the_vocabulary_is_bounded() -> None:
    values = np.array(["b", "a", "c", "d", "e", "f"] * 3 + ["z"])
    profile = build_profile({"c": values}, model="m", model_version="1", top_k=2, max_vocabulary=4)
    f = categorical(profile, "c")
    assert f.top == ("a", "b") and f.others == ("c", "d") and f.vocabulary_truncated
    assert f.other_count == 3 * 4 + 1  # every rarer row, named or not
    layout = f.layout
    codes = layout.encode(np.array(["a", "b", "c", "e", "z", "never"], dtype=object))
    assert codes.tolist() == [0, 1, layout.other_code, layout.unseen_code, layout.unseen_code, layout.unseen_code]


def test_decision_profile_and_positive_values(credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    _, profile = credit
    decision = profile.decision
    assert decision is not None and decision.name == "decision" and decision.role == "decision"
    assert decision.positive_values == DEFAULT_POSITIVE_DECISIONS
    assert profile.score is not None and profile.score.name == "score"


@pytest.mark.parametrize("values,expected", [
    (np.array([3.0, 1.0, np.nan]), ["3", "1"]),
    (np.array([3, 1]), ["3", "1"]),
    (np.array([True, False]), ["true", "false"]),  # as Arrow and JSON write booleans
    (np.array(["x", "y"]), ["x", "y"]),
    (np.array(["x", None, np.nan, 2], dtype=object), ["x", "2"]),
    (np.array([0.5, np.inf]), ["0.5", "inf"]),
])
def test_category_labels(values: np.ndarray, expected: list[str]) -> None:
    strings, present = category_strings(values)
    assert strings.tolist() == expected
    assert int(present.sum()) == len(expected)


def test_categorical_layout_counts_every_cell() -> None:
    layout = CategoricalLayout.from_categories(("a", "b"), ("c",))
    counts = layout.count(np.array(["a", "a", "b", "c", "new", None, np.nan], dtype=object))
    assert counts.tolist() == [2, 1, 1, 1, 2]
    empty = CategoricalLayout.from_categories((), ())
    assert empty.count(np.array(["a", None], dtype=object)).tolist() == [0, 1, 1]


# -- serialisation --------------------------------------------------------------------------------------


def test_json_round_trip_keeps_every_field_and_the_hash(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    _, profile = credit
    text = profile.to_json()
    restored = ReferenceProfile.from_dict(json.loads(text))
    assert restored.content_hash == profile.content_hash
    assert restored.to_dict() == profile.to_dict()
    assert restored.to_json() == text
    assert profile.content_hash == content_hash(profile.to_dict())
    assert profile.content_hash.startswith("sha256:") and len(profile.content_hash) == 7 + 64


def test_a_profile_loaded_from_json_has_the_same_counting_plan(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile]) -> None:
    _, profile = credit
    restored = ReferenceProfile.from_dict(json.loads(profile.to_json()))
    assert restored.content_hash == profile.content_hash
    assert FeatureSet(restored).slices == FeatureSet(profile).slices
    np.testing.assert_array_equal(FeatureSet(restored).reference(), FeatureSet(profile).reference())


def test_window_counts_survive_a_restore_on_the_profile_loaded_from_json() -> None:
    from driftline.engine.window import WindowSpec, WindowState

    rng = np.random.default_rng(0)
    built = build_profile({"z_income": rng.normal(size=100), "a_channel": rng.choice(["web", "app"], 100)},
                          model="m", model_version="1")
    loaded = ReferenceProfile.from_dict(json.loads(built.to_json()))
    state = WindowState(FeatureSet(built), WindowSpec(size_ms=10))
    state.update(np.array([1, 2, 3]), {"z_income": np.array([0.1, 0.2, np.nan]),
                                       "a_channel": np.array(["web", "web", "app"])})
    restored = WindowState.restore(FeatureSet(loaded), json.loads(json.dumps(state.snapshot())))
    original_window, restored_window = state.flush()[0], restored.flush()[0]
    for name in ("z_income", "a_channel"):
        np.testing.assert_array_equal(FeatureSet(loaded).counts(restored_window.counts, name),
                                      FeatureSet(built).counts(original_window.counts, name))


def test_the_hash_is_deterministic_and_follows_the_content() -> None:
    def build(seed: int) -> ReferenceProfile:
        rng = np.random.default_rng(seed)
        return build_profile({"x": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)},
                             model="m", model_version="1")

    assert build(1).content_hash == build(1).content_hash != build(2).content_hash
    renamed = build_profile({"x": np.arange(10.0)}, model="m", model_version="2")
    assert renamed.content_hash != build_profile({"x": np.arange(10.0)}, model="m", model_version="1").content_hash


def test_a_profile_without_finite_values_round_trips() -> None:
    profile = build_profile({"x": np.full(3, np.nan), "y": np.array([np.inf, 1.0, np.nan])}, model="m",
                            model_version="1")
    x = numeric(profile, "x")
    assert (x.minimum, x.maximum, x.mean, x.std, x.layout) == (None, None, None, None, None)
    assert ReferenceProfile.from_dict(json.loads(profile.to_json())).content_hash == profile.content_hash
    assert numeric(profile, "y").nonfinite == 1 and numeric(profile, "y").grid.tolist() == [1.0]


def tamper(profile: ReferenceProfile, change: str) -> dict[str, Any]:
    data = copy.deepcopy(profile.to_dict())
    feature = data["features"]["income"]
    if change == "count":
        feature["grid_counts"][0] += 1
    elif change == "grid_length":
        feature["grid_counts"] = feature["grid_counts"][:-1]
    elif change == "edge_off_grid":
        feature["bin_edges"][0] += 1e-3
    elif change == "version":
        data["format_version"] = 99
    elif change == "kind":
        feature["kind"] = "histogram"
    elif change == "missing_key":
        del feature["grid"]
    return data


@pytest.mark.parametrize("change,message", [
    ("count", "does not match its content"),
    ("grid_length", "grid_counts has"),
    ("edge_off_grid", "coarse bin edge"),
    ("version", "unsupported profile format_version 99"),
    ("kind", "unknown kind 'histogram'"),
    ("missing_key", "malformed reference profile: KeyError"),
])
def test_tampered_or_malformed_profiles_are_refused(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile], change: str, message: str) -> None:
    _, profile = credit
    with pytest.raises(ProfileError, match=message):
        ReferenceProfile.from_dict(tamper(profile, change))


@pytest.mark.parametrize("change,feature,message", [
    ("count", None, "content_hash 'sha256:"),
    ("edge_off_grid", "income", "bin_edges[0] = "),
    ("grid_length", "income", "grid_counts has"),
    ("kind", "income", "fails the reference profile schema at features/income/kind: kind must be numeric or "
                       "categorical, got 'histogram'"),
    ("missing_key", "income", "fails the reference profile schema at features/income: 'grid' is a required property"),
    ("version", None, "fails the reference profile schema at format_version: 1 was expected"),
])
def test_a_bad_profile_file_names_the_file_model_version_and_feature(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile], tmp_path: Any, change: str, feature: str | None,
        message: str) -> None:
    from driftline.connectors.profiles import load_profile

    _, profile = credit
    path = tmp_path / "credit-3.json"
    path.write_text(json.dumps(tamper(profile, change)))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    error = info.value
    assert (error.path, error.model, error.model_version, error.feature) == (str(path), "credit", "3", feature)
    where = f"{path}: reference profile credit 3: " + (f"feature {feature!r}: " if feature else "")
    assert str(error).startswith(where + message), str(error)
    if change == "count":  # both hashes, and what to do
        assert str(error).count("sha256:") == 2 and "driftline reference build" in str(error)
    if change == "edge_off_grid":
        assert "is not a value of the grid" in str(error)


def test_a_profile_failing_its_schema_names_the_file_and_feature(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile], tmp_path: Any) -> None:
    from driftline.connectors.profiles import load_profile

    _, profile = credit
    data = copy.deepcopy(profile.to_dict())
    data["features"]["age"]["count"] = "many"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(path))}: reference profile credit 3: feature 'age': "
                                           "fails the reference profile schema at features/age/count: 'many' is not "
                                           "of type 'integer'$"):
        load_profile(path)


@pytest.mark.parametrize("change,message", [
    ("edge_off_grid", r"bin_edges\[0\] = [0-9.]+ is not a value of the grid"),
    ("grid_length", "grid_counts has"),
    ("kind", "unknown kind 'histogram'"),
    ("missing_key", "malformed reference profile: KeyError: 'grid'"),
])
def test_the_engine_names_the_model_version_and_feature_of_a_bad_profile(
        credit: tuple[dict[str, np.ndarray], ReferenceProfile], change: str, message: str) -> None:
    _, profile = credit
    with pytest.raises(ProfileError, match=f"^reference profile credit 3: feature 'income': {message}") as info:
        ReferenceProfile.from_dict(tamper(profile, change))
    assert (info.value.model, info.value.model_version, info.value.feature, info.value.path) == \
        ("credit", "3", "income", None)


# -- valid ranges ---------------------------------------------------------------------------------------

def test_a_valid_range_keeps_outside_values_out_of_the_distribution_and_round_trips() -> None:
    from driftline.connectors.profiles import validate_profile_dict

    rng = np.random.default_rng(12)
    score = np.concatenate((rng.beta(2.0, 8.0, 990), [1.5] * 6, [-0.1] * 4))
    profile = build_profile({"score": score, "x": rng.normal(size=1_000)}, model="m", model_version="1",
                            score_column="score", valid_ranges={"score": (0.0, 1.0), "x": (-np.inf, 10.0)})
    s = profile.features["score"]
    assert isinstance(s, NumericProfile) and s.valid_range == (0.0, 1.0) and s.outside_valid == 10
    assert s.maximum is not None and s.maximum < 1.0 and s.minimum is not None and s.minimum >= 0.0
    assert int(s.grid_counts.sum()) == 990 and s.invalid == 10
    data = profile.to_dict()
    validate_profile_dict(data)
    assert data["features"]["x"]["valid_range"] == [None, 10.0]  # an unbounded end is null in JSON
    again = ReferenceProfile.from_dict(json.loads(json.dumps(data)))
    assert again.content_hash == profile.content_hash
    assert again.features["x"].valid_range == (-np.inf, 10.0)  # type: ignore[union-attr]
    features = FeatureSet(profile)
    assert features.invalid(features.reference(), "score") == 10


def test_profiles_without_a_valid_range_keep_their_hash() -> None:
    profile = build_profile({"x": np.arange(100.0)}, model="m", model_version="1")
    data = profile.to_dict()
    assert "valid_range" not in data["features"]["x"] and "outside_valid" not in data["features"]["x"]
    assert ReferenceProfile.from_dict(data).content_hash == profile.content_hash


@pytest.mark.parametrize("bounds, message", [((1.0, 0.0), "low <= high"), ((0.0,), "two numbers"),
                                             ((float("nan"), 1.0), "low <= high")])
def test_a_bad_valid_range_is_refused_naming_the_column(bounds: Any, message: str) -> None:
    from driftline.errors import InvalidInput

    with pytest.raises(InvalidInput, match=message) as caught:
        build_profile({"x": np.arange(10.0)}, model="m", model_version="1", valid_ranges={"x": bounds})
    assert caught.value.column == "x"
    with pytest.raises(InvalidInput, match="numeric columns only"):
        build_profile({"c": np.array(["a", "b"])}, model="m", model_version="1", valid_ranges={"c": (0, 1)})
