"""A batch of events by model version, as the engine takes them: each (model, version)'s rows in arrival
order with their typed columns (:func:`model_groups`); events of a model version without a reference
profile, and values of the wrong type, as bad events. Used by the pipeline and by stage 1."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import as_float
from driftline.engine.profile import ReferenceProfile
from driftline.events import BadEvent, Events
from driftline.events.join import group_indices


def model_groups(events: Events, profiles: Mapping[tuple[str, str], ReferenceProfile], bad: list[BadEvent]
                 ) -> Iterator[tuple[tuple[str, str], NDArray[np.intp], Events, dict[str, NDArray[Any]]]]:
    """Each (model, version)'s usable events, in order: (key, their rows in ``events``, the events,
    their typed columns). Events of a model version without a profile, and rows whose values have the
    wrong type, go to ``bad``."""
    for key, rows in sorted(group_indices(events).items()):
        group = events.take(rows)
        profile = profiles.get(key)
        if profile is None:
            bad.extend(group.bad(None, "engine", "UnknownModel",
                                 f"no reference profile configured for model {key[0]} version {key[1]}"))
            continue
        columns, invalid = typed_columns(profile, group)
        if invalid:
            bad.extend(BadEvent.of(at, "validate", "SchemaMismatch", reason)
                       for at, reason in zip(group.where(np.fromiter(invalid, dtype=np.intp)), invalid.values()))
            keep = np.setdiff1d(np.arange(len(group)), np.fromiter(invalid, dtype=np.intp))
            rows, group = rows[keep], group.take(keep)
            columns = {name: values[keep] for name, values in columns.items()}
        yield key, rows, group, columns


def typed_columns(profile: ReferenceProfile, events: Events) -> tuple[dict[str, NDArray[Any]], dict[int, str]]:
    """The engine's columns for one model version's events, and the rows whose values have the wrong type."""
    columns: dict[str, NDArray[Any]] = {}
    invalid: dict[int, str] = {}
    absent = np.full(len(events), None, dtype=object)
    for name, feature in profile.features.items():
        if feature.role == "score":
            columns[name] = events.score
            continue
        raw = events.decision if feature.role == "decision" else events.features.get(name, absent)
        if feature.kind == "categorical":
            columns[name] = raw
            continue
        try:
            columns[name] = as_float(raw)
        except (ValueError, OverflowError):  # find the rows at fault, keep the others
            values = np.full(len(raw), np.nan)
            for row, value in enumerate(raw.tolist()):
                if value is None:
                    continue
                if isinstance(value, (str, bytes)) or not isinstance(value, (int, float)):
                    invalid.setdefault(row, f"feature {name!r} must be a number, got {str(value)[:40]!r}")
                    continue
                try:
                    values[row] = float(value)
                except OverflowError:
                    invalid.setdefault(row, f"feature {name!r} is too large for a float")
            columns[name] = values
    return columns, invalid
