"""One model version's window counts carried onto another version's counting plan, for comparing the two.

:func:`onto` carries numeric columns through their CDF and categorical ones by label, and names the
columns it cannot compare (docs/engine.md, *Version switches*: common basis).

>>> import numpy as np
>>> from driftline.engine.profile import build_profile
>>> from driftline.engine.features import FeatureSet
>>> rng = np.random.default_rng(5)
>>> old = FeatureSet(build_profile({"x": rng.normal(0, 1, 5_000)}, model="m", model_version="1"))
>>> new = FeatureSet(build_profile({"x": rng.normal(0, 1, 5_000)}, model="m", model_version="2"))
>>> counts = old.count({"x": rng.normal(0, 1, 2_000)}, rows=2_000)
>>> carried = onto(old, new, counts)
>>> int(carried.counts[0]), int(new.counts(carried.counts, "x").sum()), carried.rebinned, carried.incomparable
(2000, 2000, ('x',), ())
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import CategoricalLayout, Counts, NumericLayout
from driftline.engine.features import FeatureSet


@dataclass(frozen=True, eq=False)
class Carried:
    counts: Counts
    """A count vector in the target's plan (columns not comparable are all zero)."""
    rebinned: tuple[str, ...]
    """Columns whose cells differ between the two profiles: carried over approximately."""
    incomparable: tuple[str, ...]
    """Columns that cannot be compared (see module docstring)."""


def onto(source: FeatureSet, target: FeatureSet, counts: Counts) -> Carried:
    """``counts`` (a vector of ``source``'s plan) in ``target``'s plan."""
    out = target.empty()
    out[0] = counts[0]
    rebinned: list[str] = []
    incomparable: list[str] = []
    for name, feature in target.profile.features.items():
        other = source.profile.features.get(name)
        if other is None or other.kind != feature.kind or other.role != feature.role:
            incomparable.append(name)
            continue
        cells = source.counts(counts, name)
        layout, other_layout = feature.layout, other.layout
        if layout is None or other_layout is None:
            if layout is None and other_layout is None:  # present / missing on both sides
                out[target.slices[name]] = cells
            else:
                incomparable.append(name)
            continue
        if same_cells(layout, other_layout):
            out[target.slices[name]] = cells
            continue
        if isinstance(layout, NumericLayout) and isinstance(other_layout, NumericLayout):
            out[target.slices[name]] = numeric_onto(other_layout, layout, cells)
        elif isinstance(layout, CategoricalLayout) and isinstance(other_layout, CategoricalLayout):
            out[target.slices[name]] = categorical_onto(other_layout, layout, cells)
        else:
            incomparable.append(name)
            continue
        rebinned.append(name)
    return Carried(out, tuple(rebinned), tuple(incomparable))


def same_cells(a: NumericLayout | CategoricalLayout, b: NumericLayout | CategoricalLayout) -> bool:
    if isinstance(a, NumericLayout) and isinstance(b, NumericLayout):
        return bool(np.array_equal(a.edges, b.edges) and np.array_equal(a.coarse_starts, b.coarse_starts))
    if isinstance(a, CategoricalLayout) and isinstance(b, CategoricalLayout):
        return a.top == b.top and bool(np.array_equal(a.vocabulary, b.vocabulary))
    return False


def numeric_onto(source: NumericLayout, target: NumericLayout, cells: Counts) -> Counts:
    """Numeric cell counts (missing last) of ``source`` carried onto ``target`` (see module docstring)."""
    values = cells[:-1].astype(np.float64)
    total = float(values.sum())
    cumulative = np.cumsum(values)
    finite = source.edges[:-1]  # the last edge is +inf
    cdf = np.interp(target.edges[:-1], finite, cumulative[:-1], left=0.0, right=total)
    mass = np.diff(np.concatenate(([0.0], cdf, [total])))
    out = np.empty(target.n_cells, dtype=np.int64)
    out[:-1] = largest_remainder(np.maximum(mass, 0.0), int(round(total)))
    out[-1] = cells[-1]
    return out


def categorical_onto(source: CategoricalLayout, target: CategoricalLayout, cells: Counts) -> Counts:
    """Categorical cell counts of ``source`` carried onto ``target`` by label (see module docstring)."""
    codes = np.concatenate((target.encode(np.array(source.top, dtype=object)),
                            [target.other_code, target.unseen_code, target.missing_cell])).astype(np.intp)
    return np.bincount(codes, weights=cells.astype(np.float64), minlength=target.n_cells).round().astype(np.int64)


def largest_remainder(shares: NDArray[np.float64], total: int) -> Counts:
    """Integers summing to ``total``, each the floor of its share or one more (largest remainders first,
    ties to the lower index).

    >>> largest_remainder(np.array([0.5, 1.5, 1.0]), 3).tolist()
    [1, 1, 1]
    """
    scale = total / shares.sum() if shares.sum() > 0 else 0.0
    exact = shares * scale
    floor = np.floor(exact).astype(np.int64)
    short = total - int(floor.sum())
    if short > 0:
        order = np.argsort(-(exact - floor), kind="stable")
        floor[order[:short]] += 1
    return floor
