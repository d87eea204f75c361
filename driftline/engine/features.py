"""A reference profile compiled for counting: one flat int64 vector per window.

Every monitored column owns a slice of one flat count vector (element 0 is the number of rows, the
numeric columns' invalid counts come last), so merging is one ``+`` and a snapshot a list of ints.

>>> import numpy as np
>>> from driftline.engine.profile import build_profile
>>> rng = np.random.default_rng(3)
>>> profile = build_profile({"amount": rng.gamma(2.0, 50.0, 1_000), "channel": rng.choice(["web", "app"], 1_000)},
...                         model="fraud", model_version="7")
>>> features = FeatureSet(profile)
>>> vector = features.count({"amount": np.array([10.0, np.nan]), "channel": np.array(["web", "pos"])}, rows=2)
>>> int(vector[0]), int(features.counts(vector, "amount")[-1]), int(features.counts(vector, "channel")[-2])
(2, 1, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import Counts, as_float
from driftline.engine.profile import CategoricalProfile, FeatureProfile, NumericProfile, ReferenceProfile
from driftline.engine.stats import FeatureStats, compare_categorical, compare_numeric, invalid_shares, missing_rates
from driftline.errors import InvalidInput


class FeatureSet:
    """The counting plan of one reference profile."""

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self.names: tuple[str, ...] = tuple(profile.features)
        self.slices: dict[str, slice] = {}
        offset = 1
        for name, feature in profile.features.items():
            width = _width(feature)
            self.slices[name] = slice(offset, offset + width)
            offset += width
        self.invalid_slots: dict[str, int] = {}
        """Where each numeric column's invalid count sits in the vector (after every column's slice)."""
        for name, feature in profile.features.items():
            if isinstance(feature, NumericProfile):
                self.invalid_slots[name] = offset
                offset += 1
        self.size = offset
        self._positive_codes = _positive_codes(profile.decision)
        self._reference: Counts | None = None

    def empty(self) -> Counts:
        return np.zeros(self.size, dtype=np.int64)

    def reference(self) -> Counts:
        """The reference profile's own counts in this plan (computed once; do not modify)."""
        if self._reference is not None:
            return self._reference
        vector = self.empty()
        vector[0] = self.profile.rows
        for name, feature in self.profile.features.items():
            vector[self.slices[name]] = _reference_counts(feature)
            if isinstance(feature, NumericProfile):
                vector[self.invalid_slots[name]] = feature.invalid
        vector.flags.writeable = False
        self._reference = vector
        return vector

    def counts(self, vector: Counts, name: str) -> Counts:
        return vector[self.slices[name]]

    def invalid(self, vector: Counts, name: str) -> int:
        """The column's invalid values in ``vector`` (0 for a categorical column)."""
        slot = self.invalid_slots.get(name)
        return 0 if slot is None else int(vector[slot])

    def upgrade(self, vector: Counts) -> Counts:
        """A vector of this plan from a snapshot taken before invalid counts existed (they are zero
        there: such values were counted in the out-of-range cells); a vector of this plan as it is."""
        if len(vector) == self.size - len(self.invalid_slots):
            return np.concatenate((vector, np.zeros(len(self.invalid_slots), dtype=np.int64)))
        return vector

    def count(self, columns: Mapping[str, NDArray[Any]], rows: int, index: NDArray[np.intp] | None = None) -> Counts:
        """Count one batch (or the rows ``index`` of it) into a new vector.

        A monitored column absent from ``columns`` counts as missing on every row.
        """
        vector = self.empty()
        vector[0] = rows if index is None else len(index)
        for name, feature in self.profile.features.items():
            target = vector[self.slices[name]]
            values = columns.get(name)
            if values is None:
                target[-1] = vector[0]
                continue
            if index is not None:
                values = values[index]
            try:
                counts, invalid = _count(feature, values)
            except ValueError as exc:
                raise InvalidInput(str(exc), column=name) from exc
            target += counts
            if invalid:
                vector[self.invalid_slots[name]] += invalid
        return vector

    def compare(self, expected: Counts, actual: Counts) -> dict[str, FeatureStats]:
        """Statistics of every column of ``actual`` against ``expected`` (both vectors of this plan)."""
        result: dict[str, FeatureStats] = {}
        for name, feature in self.profile.features.items():
            e, a = expected[self.slices[name]], actual[self.slices[name]]
            if isinstance(feature, CategoricalProfile):
                codes = self._positive_codes if feature.role == "decision" else None
                result[name] = compare_categorical(feature.layout, e, a, codes)
            elif feature.layout is None:
                result[name] = compare_missing_only(e, a, self.invalid(expected, name), self.invalid(actual, name))
            else:
                result[name] = compare_numeric(feature.layout, e, a, feature.scale, self.invalid(expected, name),
                                               self.invalid(actual, name))
        return result


def compare_missing_only(expected: Counts, actual: Counts, invalid_e: int = 0, invalid_a: int = 0) -> FeatureStats:
    """A numeric feature whose reference has no valid value: only the missing rate and invalid share are
    comparable."""
    n_e, n_a = int(expected.sum()) + invalid_e, int(actual.sum()) + invalid_a
    return FeatureStats(n=n_a, n_expected=n_e, **missing_rates(n_e, n_a, int(expected[-1]), int(actual[-1])),
                        **invalid_shares(n_a - int(actual[-1]), invalid_a))


def _width(feature: FeatureProfile) -> int:
    layout = feature.layout
    return 2 if layout is None else layout.n_cells


def _reference_counts(feature: FeatureProfile) -> Counts:
    if isinstance(feature, NumericProfile) and feature.layout is None:
        return np.array([feature.count - feature.missing - feature.invalid, feature.missing], dtype=np.int64)
    return feature.cell_counts


def _count(feature: FeatureProfile, values: NDArray[Any]) -> tuple[Counts, int]:
    """The column's cell counts and its invalid values (always 0 for a categorical column)."""
    if isinstance(feature, CategoricalProfile):
        return feature.layout.count(values), 0
    layout = feature.layout
    if layout is None:
        x = as_float(values)
        missing = int(np.isnan(x).sum())
        invalid = np.isinf(x)
        if feature.valid_range is not None:
            low, high = feature.valid_range
            invalid |= (x < low) | (x > high)
        bad = int(np.count_nonzero(invalid))
        return np.array([len(values) - missing - bad, missing], dtype=np.int64), bad
    return layout.count_valid(values, feature.valid_range)


def _positive_codes(decision: CategoricalProfile | None) -> NDArray[np.intp] | None:
    if decision is None:
        return None
    positive = {value.lower() for value in decision.positive_values}
    return np.array([i for i, value in enumerate(decision.top) if value.lower() in positive], dtype=np.intp)
