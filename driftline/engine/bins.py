"""Bin layouts: how one column's values become cell counts, fixed by the reference.

A *layout* (:class:`NumericLayout`, :class:`CategoricalLayout`) is derived once from a feature's
reference profile and turns any batch of that feature's values into a vector of int64 cell counts,
which add up exactly in any order. The cells: docs/engine.md, *Cells*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from typing import Any

from numpy.typing import NDArray

Counts = NDArray[np.int64]

OVERFLOW_OFFSETS = 2.0 ** np.arange(-2.0, 16.5, 0.5)
"""Distances (in reference standard deviations) of the out-of-range edges from min and max."""


@dataclass(frozen=True, eq=False)
class NumericLayout:
    """Cells of a numeric feature (see module docstring)."""

    edges: NDArray[np.float64]
    """Right edges of the value cells, increasing, ending with ``+inf``."""
    grid_cells: slice
    """The cells whose right edges are the reference grid (``x`` within ``[min, max]``)."""
    coarse_starts: NDArray[np.intp]
    """First cell of each coarse (PSI) bin, for ``np.add.reduceat``."""

    @property
    def n_cells(self) -> int:
        """Value cells plus the missing cell."""
        return len(self.edges) + 1

    @property
    def missing_cell(self) -> int:
        return len(self.edges)

    @property
    def grid(self) -> NDArray[np.float64]:
        return self.edges[self.grid_cells]

    @classmethod
    def from_edges(cls, grid: NDArray[np.float64], bin_edges: NDArray[np.float64], scale: float) -> NumericLayout:
        """Build from the fine grid, the interior coarse edges (each a grid value) and the scale
        (reference std, or 1 for a constant reference) of the out-of-range ladder."""
        grid = np.asarray(grid, dtype=np.float64)
        bin_edges = np.asarray(bin_edges, dtype=np.float64)
        if grid.ndim != 1 or len(grid) == 0 or np.any(np.diff(grid) <= 0) or not np.all(np.isfinite(grid)):
            raise ValueError("grid must be a non-empty, strictly increasing array of finite values")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        low, high = grid[0], grid[-1]
        below = np.concatenate((low - scale * OVERFLOW_OFFSETS[::-1], [np.nextafter(low, -np.inf)]))
        below = np.unique(below[np.isfinite(below) & (below < low)])
        above = high + scale * OVERFLOW_OFFSETS
        above = np.unique(above[np.isfinite(above) & (above > high)])
        edges = np.concatenate((below, grid, above, [np.inf]))
        grid_cells = slice(len(below), len(below) + len(grid))
        positions = np.searchsorted(grid, bin_edges)
        off_grid = (positions >= len(grid)) | (grid[np.minimum(positions, len(grid) - 1)] != bin_edges)
        if np.any(off_grid):
            first = int(np.argmax(off_grid))
            raise ValueError(f"bin_edges[{first}] = {float(bin_edges[first])!r} is not a value of the grid (every coarse "
                             "bin edge must be a value of the fine grid)")
        starts = np.concatenate(([0], grid_cells.start + positions + 1)).astype(np.intp)
        return cls(edges=edges, grid_cells=grid_cells, coarse_starts=starts)

    def count(self, values: NDArray[Any]) -> Counts:
        """Cell counts of one batch of values (missing last)."""
        return self.count_sorted(np.sort(as_float(values)))

    def count_valid(self, values: NDArray[Any], valid_range: tuple[float, float] | None = None
                    ) -> tuple[Counts, int]:
        """Cell counts of the batch's valid values (missing last), and how many were invalid.

        Invalid values are ±inf and, when ``valid_range`` ``(low, high)`` is given, values outside
        ``[low, high]``; they are counted apart and never enter a cell. One sort: the invalid values
        are the two ends of the sorted batch (NaN sorts after +inf).
        """
        ordered = np.sort(as_float(values))
        low, high = valid_range if valid_range is not None else (-np.inf, np.inf)
        low, high = max(low, -np.finfo(np.float64).max), min(high, np.finfo(np.float64).max)
        start = int(np.searchsorted(ordered, low, side="left"))
        stop = int(np.searchsorted(ordered, high, side="right"))
        present = int(np.searchsorted(ordered, np.inf, side="right"))
        counts = self.count_sorted(ordered[start:stop])
        counts[-1] = len(ordered) - present
        return counts, start + present - stop

    def count_sorted(self, ordered: NDArray[np.float64]) -> Counts:
        """Cell counts of values already sorted by ``np.sort`` (NaN last)."""
        at_or_below = np.searchsorted(ordered, self.edges, side="right")
        counts = np.empty(self.n_cells, dtype=np.int64)
        counts[0] = at_or_below[0]
        np.subtract(at_or_below[1:], at_or_below[:-1], out=counts[1:-1])
        counts[-1] = len(ordered) - at_or_below[-1]
        return counts

    def coarse(self, counts: Counts) -> Counts:
        """Counts per coarse (PSI) bin; out-of-range cells fold into the end bins, missing is left out."""
        return np.add.reduceat(counts[: self.missing_cell], self.coarse_starts)

    def out_of_range(self, counts: Counts) -> int:
        """Valid values below the reference min or above its max."""
        return int(counts[: self.grid_cells.start].sum() + counts[self.grid_cells.stop : self.missing_cell].sum())


@dataclass(frozen=True, eq=False)
class CategoricalLayout:
    """Codes of a categorical feature (see module docstring)."""

    top: tuple[str, ...]
    """The reference's top-K categories, most frequent first; code ``i`` is ``top[i]``."""
    vocabulary: NDArray[np.str_]
    """Every category the reference saw (top-K and rarer), sorted, for vectorised look-up."""
    vocabulary_codes: NDArray[np.intp]
    """Code of each ``vocabulary`` entry: its index in ``top``, or ``K`` for a rarer category."""

    @property
    def k(self) -> int:
        return len(self.top)

    @property
    def other_code(self) -> int:
        return self.k

    @property
    def unseen_code(self) -> int:
        return self.k + 1

    @property
    def missing_cell(self) -> int:
        return self.k + 2

    @property
    def n_cells(self) -> int:
        return self.k + 3

    @classmethod
    def from_categories(cls, top: tuple[str, ...], others: tuple[str, ...]) -> CategoricalLayout:
        names = np.array(list(top) + list(others), dtype=str)
        codes = np.concatenate((np.arange(len(top)), np.full(len(others), len(top)))).astype(np.intp)
        order = np.argsort(names, kind="stable")
        return cls(top=top, vocabulary=names[order], vocabulary_codes=codes[order])

    def encode(self, values: NDArray[np.generic]) -> NDArray[np.intp]:
        """Codes of a batch of categorical values.

        Values are labels (see :func:`category_strings`), looked up in the vocabulary; ``None`` and
        NaN are missing.
        """
        strings, present = category_strings(values)
        codes = np.full(len(values), self.missing_cell, dtype=np.intp)
        codes[present] = self._lookup(strings)
        return codes

    def count(self, values: NDArray[np.generic]) -> Counts:
        return np.bincount(self.encode(values), minlength=self.n_cells).astype(np.int64, copy=False)

    def _lookup(self, strings: NDArray[np.str_]) -> NDArray[np.intp]:
        if len(self.vocabulary) == 0:
            return np.full(len(strings), self.unseen_code, dtype=np.intp)
        position = np.searchsorted(self.vocabulary, strings)
        clipped = np.minimum(position, len(self.vocabulary) - 1)
        found = self.vocabulary[clipped] == strings
        return np.where(found, self.vocabulary_codes[clipped], self.unseen_code)


_TYPE_OF = np.frompyfunc(type, 1, 1)


def as_float(values: NDArray[Any]) -> NDArray[np.float64]:
    """Values of a numeric column as float64, ``None`` as NaN; anything else non-numeric is an error."""
    array = np.asarray(values)
    if array.dtype.kind in "fiub":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O":
        text = _TYPE_OF(array) == str
        if text.any():
            raise ValueError(f"expected numbers, found a non-numeric value: text such as {array[text][0]!r}")
        missing = np.asarray(array == None)  # noqa: E711  (elementwise on object arrays)
        if missing.any():
            array = np.where(missing, np.nan, array)
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"expected numbers, found a non-numeric value ({exc})") from None
    raise ValueError(f"expected numbers, got values of dtype {array.dtype}")


def category_strings(values: NDArray[np.generic]) -> tuple[NDArray[np.str_], NDArray[np.bool_]]:
    """The present values of a categorical column as strings, and the mask of present rows.

    ``None`` and NaN are missing. Numbers used as labels print without a trailing ``.0`` and
    booleans as ``"true"``/``"false"`` (as Arrow and JSON write them, whatever Python's ``str`` says), so a
    reference read from CSV or Parquet and serving JSON agree.
    """
    values = np.asarray(values)
    kind = values.dtype.kind
    if kind == "O":
        present = ~((values == None) | (values != values))  # noqa: E711  (None and NaN are missing)
        return _canonical_labels(values[present].astype(str)), present
    if kind in "UST":
        return values.astype(str, copy=False), np.ones(len(values), dtype=bool)
    if kind == "f":
        present = ~np.isnan(values)
        return _float_labels(values[present]), present
    if kind == "b":
        return np.where(values, "true", "false"), np.ones(len(values), dtype=bool)
    if kind in "iu":
        return values.astype(str), np.ones(len(values), dtype=bool)
    raise ValueError(f"categorical values must be strings or labels, got dtype {values.dtype}")


def _canonical_labels(strings: NDArray[np.str_]) -> NDArray[np.str_]:
    """``"True"`` → ``"true"``, ``"3.0"`` → ``"3"``: labels from Python objects printed as
    :func:`category_strings` prints typed arrays."""
    strings = np.where(strings == "True", "true", np.where(strings == "False", "false", strings))
    candidates = np.flatnonzero(np.strings.endswith(strings, ".0"))
    if len(candidates) == 0:
        return strings
    for i in candidates.tolist():
        head = str(strings[i])[:-2]
        if head.lstrip("-").isdigit():
            strings[i] = "0" if head == "-0" else head
    return strings


def _float_labels(values: NDArray[np.float64]) -> NDArray[np.str_]:
    """Labels of numbers used as categories: integral floats print without ``.0`` (``3.0`` → ``"3"``)."""
    # Python prints integral floats from 1e16 up in exponent form ("1e+16"), as numpy does: keep those
    integral = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 1e16)
    labels = values.astype(str)
    labels[integral] = values[integral].astype(np.int64).astype(str)
    return labels
