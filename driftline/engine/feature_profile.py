"""Per-feature reference profiles: a numeric or categorical column of the training data summarised.

:func:`numeric_profile` and :func:`categorical_profile` build them, :func:`feature_to_dict` and
:func:`feature_from_dict` carry them to and from JSON; :mod:`driftline.engine.profile` assembles them
into a :class:`~driftline.engine.profile.ReferenceProfile`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import CategoricalLayout, NumericLayout, as_float, category_strings
from driftline.errors import InvalidInput, ProfileError

TAIL_LEVELS = 8
"""Extra grid levels ``2^-k / G`` and ``1 - 2^-k / G`` (k = 1..8) that refine the two outermost cells."""

Role = Literal["feature", "score", "decision"]


@dataclass(frozen=True, eq=False)
class NumericProfile:
    name: str
    role: Role
    count: int
    """Rows in the reference, missing included."""
    missing: int
    """NaN or null."""
    nonfinite: int
    """±inf; kept out of the distribution (min/max/mean/std/grid), reported beside ``missing``."""
    minimum: float | None
    maximum: float | None
    mean: float | None
    std: float | None
    """Population standard deviation (ddof=0) of the finite values."""
    bin_edges: NDArray[np.float64]
    """Interior coarse edges (quantiles at levels 1/B .. (B-1)/B, duplicates removed)."""
    grid: NDArray[np.float64]
    """Fine grid: unique quantiles at levels 0, 1/G, .., 1; includes every coarse edge."""
    grid_counts: NDArray[np.int64]
    """Reference counts per grid cell: ``x == g[0]``, then ``g[i-1] < x <= g[i]``."""
    kind: Literal["numeric"] = "numeric"
    valid_range: tuple[float, float] | None = None
    """``(low, high)``: the values the column can validly take (a probability score: ``(0, 1)``).
    Values outside it, like ±inf, are *invalid*: counted apart, never in the distribution. None: any
    finite value is valid."""
    outside_valid: int = 0
    """Finite reference values outside ``valid_range``; kept out of the distribution like ``nonfinite``."""

    @property
    def invalid(self) -> int:
        """Invalid reference values: ±inf and values outside ``valid_range``."""
        return self.nonfinite + self.outside_valid

    @property
    def missing_rate(self) -> float:
        return self.missing / self.count if self.count else 0.0

    @cached_property
    def layout(self) -> NumericLayout | None:
        """None when the reference has no finite value to place edges on."""
        if len(self.grid) == 0:
            return None
        return NumericLayout.from_edges(self.grid, self.bin_edges, self.scale)

    @property
    def scale(self) -> float:
        """Unit of distance for this feature: the reference std, or 1 for a constant reference."""
        return self.std if self.std else 1.0

    @cached_property
    def cell_counts(self) -> NDArray[np.int64]:
        """Reference counts in every cell of :attr:`layout` (out-of-range cells are empty)."""
        layout = self.layout
        if layout is None:
            return np.array([self.missing], dtype=np.int64)
        counts = np.zeros(layout.n_cells, dtype=np.int64)
        counts[layout.grid_cells] = self.grid_counts
        counts[layout.missing_cell] = self.missing
        return counts


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    name: str
    role: Role
    count: int
    missing: int
    top: tuple[str, ...]
    top_counts: NDArray[np.int64]
    others: tuple[str, ...]
    """Categories seen in the reference beyond the top-K, up to ``max_vocabulary`` in all."""
    other_count: int
    """Rows of the reference in any category beyond the top-K."""
    vocabulary_truncated: bool
    """True when the reference had more distinct categories than the profile keeps by name:
    a serving category outside the kept names then counts as unseen although it may be rare."""
    positive_values: tuple[str, ...] = ()
    """For the decision: the values that mean approval (for the approval-rate shift)."""
    kind: Literal["categorical"] = "categorical"

    @property
    def missing_rate(self) -> float:
        return self.missing / self.count if self.count else 0.0

    @cached_property
    def layout(self) -> CategoricalLayout:
        return CategoricalLayout.from_categories(self.top, self.others)

    @cached_property
    def cell_counts(self) -> NDArray[np.int64]:
        """Reference counts in the categorical layout's cells (top-K, other, unseen = 0, missing)."""
        return np.concatenate((self.top_counts, [self.other_count, 0, self.missing])).astype(np.int64)


FeatureProfile = NumericProfile | CategoricalProfile


def checked_range(bounds: Any, name: str) -> tuple[float, float]:
    """A valid range ``(low, high)``: two numbers, low <= high, not NaN (an infinite end is no bound)."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise InvalidInput(f"a valid range is two numbers (low, high), got {bounds!r}", column=name) from None
    if not low <= high:
        raise InvalidInput(f"a valid range needs low <= high, got ({low}, {high})", column=name)
    return low, high


def numeric_profile(name: str, role: Role, values: NDArray[Any], bins: int, grid_levels: int,
                    valid_range: tuple[float, float] | None = None) -> NumericProfile:
    try:
        x = as_float(values)
    except ValueError as exc:
        raise InvalidInput(f"{exc}; declare it categorical if it holds labels", column=name) from exc
    missing = int(np.isnan(x).sum())
    infinite = np.isinf(x)
    finite = x[~np.isnan(x) & ~infinite]
    outside = 0
    if valid_range is not None:
        inside = (finite >= valid_range[0]) & (finite <= valid_range[1])
        outside = int(len(finite) - np.count_nonzero(inside))
        finite = finite[inside]
    if len(finite) == 0:
        empty = np.zeros(0)
        return NumericProfile(name, role, len(x), missing, int(infinite.sum()), None, None, None, None,
                              empty, empty, np.zeros(0, dtype=np.int64), valid_range=valid_range,
                              outside_valid=outside)
    # 'inverted_cdf' makes every edge an observed value, so the coarse edges are a subset of the grid
    # and the reference's counts per cell are exact; it works for any number of rows.
    quantiles = np.quantile(finite, np.arange(grid_levels + 1) / grid_levels, method="inverted_cdf")
    # Extra levels inside the outermost grid cells: heavy tails otherwise put most of the
    # Wasserstein interpolation error there (Pareto tail: +39 % with 200 levels, +6 % with these).
    tail = 2.0 ** -np.arange(1, TAIL_LEVELS + 1) / grid_levels
    tails = np.quantile(finite, np.concatenate((tail, 1.0 - tail)), method="inverted_cdf")
    grid = np.unique(np.concatenate((quantiles, tails)))
    edges = np.unique(quantiles[grid_levels // bins :: grid_levels // bins][: bins - 1])
    mean, std = _moments(finite)
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise InvalidInput(f"values up to {np.abs(finite).max():.3g} are too large for a finite mean and standard "
                           "deviation; rescale the column", column=name)
    ordered = np.sort(finite)
    at_or_below = np.searchsorted(ordered, grid, side="right")
    grid_counts = np.diff(at_or_below, prepend=0).astype(np.int64)
    return NumericProfile(
        name, role, len(x), missing, int(infinite.sum()),
        float(ordered[0]), float(ordered[-1]), mean, std,
        edges, grid, grid_counts, valid_range=valid_range, outside_valid=outside,
    )


def _moments(values: NDArray[np.float64]) -> tuple[float, float]:
    """Mean and population std, computed on values scaled to at most 1 so that squares cannot overflow."""
    scale = float(np.abs(values).max()) or 1.0
    scaled = values / scale
    with np.errstate(over="ignore"):
        return float(scaled.mean() * scale), float(scaled.std() * scale)


def categorical_profile(name: str, role: Role, values: NDArray[Any], top_k: int, max_vocabulary: int,
                        positive_values: tuple[str, ...]) -> CategoricalProfile:
    try:
        strings, present = category_strings(values)
    except ValueError as exc:
        raise InvalidInput(str(exc), column=name) from exc
    missing = int(len(values) - present.sum())
    names, counts = np.unique(strings, return_counts=True)
    order = np.lexsort((names, -counts))  # most frequent first, ties by name: deterministic
    names, counts = names[order], counts[order]
    top = tuple(str(v) for v in names[:top_k])
    others = tuple(str(v) for v in names[top_k:max_vocabulary])
    return CategoricalProfile(
        name, role, len(values), missing, top, counts[:top_k].astype(np.int64), others,
        int(counts[top_k:].sum()), len(names) > max_vocabulary, positive_values,
    )


def feature_to_dict(f: FeatureProfile) -> dict[str, Any]:
    if isinstance(f, NumericProfile):
        out = {
            "kind": "numeric", "role": f.role, "count": f.count, "missing": f.missing, "nonfinite": f.nonfinite,
            "min": f.minimum, "max": f.maximum, "mean": f.mean, "std": f.std,
            "bin_edges": f.bin_edges.tolist(), "grid": f.grid.tolist(), "grid_counts": f.grid_counts.tolist(),
        }
        if f.valid_range is not None:  # only when set: profiles without one keep their content hash
            out["valid_range"] = [_json_bound(b) for b in f.valid_range]
            out["outside_valid"] = f.outside_valid
        return out
    return {
        "kind": "categorical", "role": f.role, "count": f.count, "missing": f.missing,
        "top": [{"value": v, "count": int(c)} for v, c in zip(f.top, f.top_counts, strict=True)],
        "others": list(f.others), "other_count": f.other_count, "vocabulary_truncated": f.vocabulary_truncated,
        "positive_values": list(f.positive_values),
    }


def _json_bound(bound: float) -> float | None:
    """A range end in JSON: an infinite end (no bound on that side) is null."""
    return bound if math.isfinite(bound) else None


def feature_from_dict(name: str, d: Mapping[str, Any]) -> FeatureProfile:
    try:
        return _feature(name, d)
    except ProfileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"malformed reference profile: {type(exc).__name__}: {exc}", feature=name) from exc


def _feature(name: str, d: Mapping[str, Any]) -> FeatureProfile:
    if d["kind"] == "numeric":
        grid = np.asarray(d["grid"], dtype=np.float64)
        counts = np.asarray(d["grid_counts"], dtype=np.int64)
        if len(counts) != len(grid):
            raise ProfileError(f"grid_counts has {len(counts)} cells, the grid {len(grid)}", feature=name)
        bounds = d.get("valid_range")
        profile = NumericProfile(
            name, d["role"], int(d["count"]), int(d["missing"]), int(d["nonfinite"]),
            d["min"], d["max"], d["mean"], d["std"],
            np.asarray(d["bin_edges"], dtype=np.float64), grid, counts,
            valid_range=None if bounds is None else checked_range(
                [(-math.inf if i == 0 else math.inf) if b is None else b for i, b in enumerate(bounds)], name),
            outside_valid=int(d.get("outside_valid", 0)),
        )
        try:
            _ = profile.layout  # validates the edges against the grid
        except ValueError as exc:
            raise ProfileError(str(exc), feature=name) from None
        return profile
    if d["kind"] == "categorical":
        top = d["top"]
        return CategoricalProfile(
            name, d["role"], int(d["count"]), int(d["missing"]),
            tuple(str(t["value"]) for t in top), np.asarray([int(t["count"]) for t in top], dtype=np.int64),
            tuple(str(v) for v in d["others"]), int(d["other_count"]), bool(d["vocabulary_truncated"]),
            tuple(str(v) for v in d.get("positive_values", ())),
        )
    raise ProfileError(f"unknown kind {d['kind']!r}", feature=name)
