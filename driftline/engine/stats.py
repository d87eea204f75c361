"""Distances between two histograms of one feature, on the reference's fixed cells.

Every function takes the *expected* counts (the reference, or the previous window) and the *actual*
counts (the current window) in the same layout and returns plain numbers. Units and conventions
(PSI, KS, Jensen–Shannon, Wasserstein, χ², missing and invalid values): docs/engine.md, *Statistics*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from driftline.engine.bins import CategoricalLayout, Counts, NumericLayout

PSI_EPSILON = 1e-4
PSI_CRITICAL_LEVEL = 0.95


@dataclass(frozen=True)
class FeatureStats:
    """One feature's comparison; a metric that does not apply (or cannot be computed) is None."""

    n: int
    """Rows in the actual (current) window, missing included."""
    n_expected: int
    missing_rate: float | None = None
    missing_rate_expected: float | None = None
    missing_rate_shift: float | None = None
    psi: float | None = None
    psi_critical: float | None = None
    psi_pvalue: float | None = None
    js_distance: float | None = None
    ks_statistic: float | None = None
    ks_error_bound: float | None = None
    ks_pvalue: float | None = None
    wasserstein_normed: float | None = None
    out_of_range_share: float | None = None
    invalid: int = 0
    """Invalid values of the column in the window (±inf, or outside its valid range): in no cell."""
    invalid_share: float | None = None
    """``invalid`` over the window's non-missing values (numeric columns)."""
    chi2_pvalue: float | None = None
    l_infinity: float | None = None
    unseen_share: float | None = None
    approval_rate: float | None = None
    approval_rate_expected: float | None = None
    approval_rate_shift: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def psi(expected: Counts, actual: Counts) -> float:
    """Population stability index of two count vectors over the same bins (see module docstring).

    >>> round(psi(np.array([50, 50]), np.array([40, 60])), 4)
    0.0405
    """
    e = np.maximum(expected / expected.sum(), PSI_EPSILON)
    a = np.maximum(actual / actual.sum(), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_critical(n_expected: int, n_actual: int, bins: int) -> float:
    """The PSI a no-drift pair of samples of these sizes exceeds with 5 % probability."""
    return float(sps.chi2.ppf(PSI_CRITICAL_LEVEL, max(bins - 1, 1)) * (1.0 / n_expected + 1.0 / n_actual))


def js_distance(expected: Counts, actual: Counts) -> float:
    """Jensen–Shannon distance, log base 2, in [0, 1].

    >>> js_distance(np.array([1, 0]), np.array([0, 1]))
    1.0
    """
    p = expected / expected.sum()
    q = actual / actual.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(np.sqrt(max(terms.sum() / 2, 0.0)))


def ks_on_grid(expected: Counts, actual: Counts, n_expected: int, n_actual: int) -> tuple[float, float, float]:
    """KS statistic read at the cell edges, its error bound and asymptotic p-value.

    ``expected`` and ``actual`` are value-cell counts (missing excluded), in cell order.
    """
    fe = np.cumsum(expected) / n_expected
    fa = np.cumsum(actual) / n_actual
    statistic = float(np.max(np.abs(fa - fe)))
    fe_left = np.concatenate(([0.0], fe[:-1]))
    fa_left = np.concatenate(([0.0], fa[:-1]))
    within = np.maximum(np.abs(fa - fe_left), np.abs(fa_left - fe))
    upper = max(statistic, float(within.max()))
    pvalue = ks_pvalue(statistic, n_expected * n_actual / (n_expected + n_actual))
    return statistic, upper - statistic, pvalue


def ks_pvalue(statistic: float, effective_n: float) -> float:
    """Two-sample KS p-value: the Kolmogorov limit distribution with Stephens' finite-sample correction,
    ``kstwobign.sf((√n + 0.12 + 0.11/√n) · D)`` (Stephens 1970), n = N·M/(N+M).

    Within 2 % of scipy's ``kstwo.sf(D, round(n))`` (what ``ks_2samp(method="asymp")`` returns) for
    p ≥ 1e-4 and n ≥ 50, at 0.02 ms instead of 0.1–45 ms per call (``kstwo`` runs matrix powers).

    >>> round(ks_pvalue(0.0192, 5_000), 3)  # D = 1.36 / √n: the textbook 5 % point
    0.049
    """
    root = np.sqrt(effective_n)
    return float(min(max(sps.kstwobign.sf((root + 0.12 + 0.11 / root) * statistic), 0.0), 1.0))


def wasserstein(edges: NDArray[np.float64], expected: Counts, actual: Counts, grid_cells: slice | None = None
                ) -> float | None:
    """1-Wasserstein distance from value-cell counts, CDFs linear inside each bounded cell.

    ``grid_cells`` (the layout's cells within the reference range): only the mass in those cells
    is compared, each side renormalised to its own in-range total; cells outside are left out
    (see the module docstring). None: every cell, the unbounded first and last ones taken to sit at
    their finite edge. None when either side has no mass in the compared cells.
    """
    if grid_cells is not None:
        # the grid cells are {min}, then (g[i-1], g[i]] up to max; an empty unbounded cell after them
        # puts the last grid edge, where both CDFs reach 1, among the edges the CDFs are read at
        edges = np.concatenate((edges[grid_cells], [np.inf]))
        expected = np.concatenate((expected[grid_cells], [0]))
        actual = np.concatenate((actual[grid_cells], [0]))
    n_expected, n_actual = int(expected.sum()), int(actual.sum())
    if n_expected == 0 or n_actual == 0:
        return None
    d = np.cumsum(actual)[:-1] / n_actual - np.cumsum(expected)[:-1] / n_expected  # at edges[:-1]
    width = np.diff(edges[:-1])
    left, right = d[:-1], d[1:]
    same_sign = left * right >= 0
    abs_sum = np.abs(left) + np.abs(right)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(abs_sum > 0, (left * left + right * right) / (2 * abs_sum), 0.0)
    area = np.where(same_sign, abs_sum / 2, crossing) * width
    return float(area.sum())


def compare_numeric(layout: NumericLayout, expected: Counts, actual: Counts, scale: float,
                    invalid_e: int = 0, invalid_a: int = 0) -> FeatureStats:
    """Every numeric statistic of ``actual`` against ``expected`` (full layout counts, missing last;
    ``invalid_e``/``invalid_a`` the invalid values each side had, which are in no cell)."""
    present_e, present_a = int(expected[:-1].sum()), int(actual[:-1].sum())  # valid, non-missing
    miss_e, miss_a = int(expected[-1]), int(actual[-1])
    n_e, n_a = present_e + miss_e + invalid_e, present_a + miss_a + invalid_a
    base: dict[str, Any] = {**missing_rates(n_e, n_a, miss_e, miss_a), **invalid_shares(present_a + invalid_a, invalid_a)}
    if present_e == 0 or present_a == 0:
        return FeatureStats(n=n_a, n_expected=n_e, **base)
    values_e, values_a = expected[:-1], actual[:-1]
    coarse_e, coarse_a = layout.coarse(expected), layout.coarse(actual)
    ks, ks_bound, ks_p = ks_on_grid(values_e, values_a, present_e, present_a)
    psi_value = psi(coarse_e, coarse_a)
    bins = len(coarse_e)
    scaled = psi_value / (1.0 / present_e + 1.0 / present_a)
    distance = wasserstein(layout.edges, values_e, values_a, layout.grid_cells)
    return FeatureStats(
        n=n_a, n_expected=n_e, **base,
        psi=psi_value,
        psi_critical=psi_critical(present_e, present_a, bins),
        psi_pvalue=float(sps.chi2.sf(scaled, max(bins - 1, 1))),
        js_distance=js_distance(coarse_e, coarse_a),
        ks_statistic=ks, ks_error_bound=ks_bound, ks_pvalue=ks_p,
        wasserstein_normed=None if distance is None else distance / scale,
        out_of_range_share=layout.out_of_range(actual) / present_a,
    )


def compare_categorical(
    layout: CategoricalLayout, expected: Counts, actual: Counts, positive_codes: NDArray[np.intp] | None = None
) -> FeatureStats:
    """Every categorical statistic of ``actual`` against ``expected`` (layout cells, missing last)."""
    n_e, n_a = int(expected.sum()), int(actual.sum())
    miss_e, miss_a = int(expected[-1]), int(actual[-1])
    base = missing_rates(n_e, n_a, miss_e, miss_a)
    present_e, present_a = n_e - miss_e, n_a - miss_a
    if present_e == 0 or present_a == 0:
        return FeatureStats(n=n_a, n_expected=n_e, **base)
    values_e, values_a = expected[:-1], actual[:-1]
    approval: dict[str, Any] = {}
    if positive_codes is not None:
        rate_e = float(values_e[positive_codes].sum() / present_e)
        rate_a = float(values_a[positive_codes].sum() / present_a)
        approval = {"approval_rate": rate_a, "approval_rate_expected": rate_e, "approval_rate_shift": rate_a - rate_e}
    return FeatureStats(
        n=n_a, n_expected=n_e, **base,
        psi=psi(values_e, values_a),
        psi_critical=psi_critical(present_e, present_a, int(np.count_nonzero(values_e + values_a))),
        js_distance=js_distance(values_e, values_a),
        chi2_pvalue=chi2_homogeneity_pvalue(values_e, values_a),
        l_infinity=float(np.max(np.abs(values_a / present_a - values_e / present_e))),
        unseen_share=float(values_a[layout.unseen_code] / present_a),
        **approval,
    )


def chi2_homogeneity_pvalue(expected: Counts, actual: Counts) -> float:
    """Pearson χ² test that two count vectors come from one categorical distribution."""
    table = np.vstack((expected, actual)).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    total = table.sum()
    fitted = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    statistic = float(((table - fitted) ** 2 / fitted).sum())
    return float(sps.chi2.sf(statistic, table.shape[1] - 1))


def invalid_shares(present: int, invalid: int) -> dict[str, Any]:
    """The invalid count and its share of ``present`` (non-missing) values."""
    return {"invalid": invalid, "invalid_share": invalid / present if present else None}


def missing_rates(n_e: int, n_a: int, miss_e: int, miss_a: int) -> dict[str, Any]:
    rate_e = miss_e / n_e if n_e else None
    rate_a = miss_a / n_a if n_a else None
    shift = rate_a - rate_e if rate_a is not None and rate_e is not None else None
    return {"missing_rate": rate_a, "missing_rate_expected": rate_e, "missing_rate_shift": shift}
