"""The reference profile: a model version's training data, summarised once, frozen.

:func:`build_profile` builds it from training columns (per-column profiles: :mod:`driftline.engine.feature_profile`);
it is plain JSON with a ``content_hash``, and its edges never move with serving data (docs/engine.md,
*Reference profile*).

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> profile = build_profile(
...     {"income": rng.lognormal(10, 0.5, 5_000), "channel": rng.choice(["web", "app"], 5_000)},
...     model="credit", model_version="3", categorical=("channel",))
>>> profile.features["income"].bin_edges.shape
(9,)
>>> sorted(profile.features["channel"].top)
['app', 'web']
>>> ReferenceProfile.from_dict(profile.to_dict()).content_hash == profile.content_hash
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.feature_profile import (CategoricalProfile, FeatureProfile, NumericProfile, Role,
                                              categorical_profile, checked_range, feature_from_dict,
                                              feature_to_dict, numeric_profile)
from driftline.errors import InvalidInput, ProfileError

__all__ = [
    "DEFAULT_BINS", "DEFAULT_GRID_POINTS", "DEFAULT_MAX_VOCABULARY", "DEFAULT_POSITIVE_DECISIONS", "DEFAULT_TOP_K",
    "FORMAT_VERSION", "CategoricalProfile", "FeatureProfile", "NumericProfile", "ReferenceProfile", "Role",
    "build_profile", "checked_range", "content_hash",
]

FORMAT_VERSION = 1
DEFAULT_BINS = 10
"""Deciles: the credit-scorecard convention for PSI/CSI (Siddiqi, *Credit Risk Scorecards*, 2006)."""
DEFAULT_GRID_POINTS = 200
"""Minimum number of fine quantile levels for KS/Wasserstein; rounded up to a multiple of ``bins``."""
DEFAULT_TOP_K = 50
DEFAULT_MAX_VOCABULARY = 10_000
DEFAULT_POSITIVE_DECISIONS = ("approve", "approved", "accept", "accepted", "pass", "allow", "1", "true", "yes")


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    model: str
    model_version: str
    features: dict[str, FeatureProfile]
    """Every monitored column by name, the score and decision included (see ``role``), sorted by name:
    the layout of every count vector follows this order."""
    settings: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    content_hash: str = ""

    @property
    def score(self) -> NumericProfile | None:
        return next((f for f in self.features.values() if f.role == "score" and isinstance(f, NumericProfile)), None)

    @property
    def decision(self) -> CategoricalProfile | None:
        return next(
            (f for f in self.features.values() if f.role == "decision" and isinstance(f, CategoricalProfile)), None
        )

    def to_dict(self) -> dict[str, Any]:
        body = _body(self)
        body["content_hash"] = content_hash(body)
        return body

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Rebuild a profile; the stored hash must match the content (a tampered profile is refused)."""
        named = {k: str(data[f]) if isinstance(data, Mapping) and isinstance(data.get(f), (str, int)) else None
                 for k, f in (("model", "model"), ("model_version", "model_version"))}
        try:
            version = data["format_version"]
            if version != FORMAT_VERSION:
                raise ProfileError(f"unsupported profile format_version {version!r}; this driftline reads "
                                   f"{FORMAT_VERSION}", **named)
            features = {name: feature_from_dict(name, f) for name, f in sorted(data["features"].items())}
            profile = cls(
                model=str(data["model"]),
                model_version=str(data["model_version"]),
                features=features,
                settings=dict(data.get("settings", {})),
                rows=int(data.get("rows", 0)),
            )
        except ProfileError as exc:
            raise ProfileError(exc.reason, feature=exc.feature, **named) from exc
        except (KeyError, TypeError, ValueError, InvalidInput) as exc:
            raise ProfileError(f"malformed reference profile: {type(exc).__name__}: {exc}", **named) from exc
        computed = content_hash(_body(profile))
        stored = data.get("content_hash")
        if stored != computed:
            raise ProfileError(f"content_hash {stored!r} does not match its content ({computed}): it was changed "
                               "after it was built; build it again (driftline reference build)", **named)
        return cls(profile.model, profile.model_version, features, profile.settings, profile.rows, computed)


def content_hash(body: Mapping[str, Any]) -> str:
    """``sha256:`` of the canonical JSON (sorted keys, no whitespace) of a profile without its hash."""
    canonical = json.dumps({k: v for k, v in body.items() if k != "content_hash"}, sort_keys=True,
                           separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def build_profile(
    columns: Mapping[str, NDArray[Any]],
    *,
    model: str,
    model_version: str,
    categorical: Iterable[str] = (),
    score_column: str | None = None,
    decision_column: str | None = None,
    positive_decisions: Iterable[str] = DEFAULT_POSITIVE_DECISIONS,
    bins: int = DEFAULT_BINS,
    grid_points: int = DEFAULT_GRID_POINTS,
    top_k: int = DEFAULT_TOP_K,
    max_vocabulary: int = DEFAULT_MAX_VOCABULARY,
    valid_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> ReferenceProfile:
    """Profile training columns (name → 1-D array). String, object and bool columns are categorical,
    as is every name in ``categorical``; the rest must be numeric. ``valid_ranges`` names the numeric
    columns' valid ``(low, high)`` (e.g. ``{"score": (0.0, 1.0)}``): see :attr:`NumericProfile.valid_range`."""
    if bins < 2:
        raise InvalidInput(f"bins must be at least 2, got {bins}")
    if grid_points < 1:
        raise InvalidInput(f"grid_points must be at least 1 (it is rounded up to a multiple of bins), got {grid_points}")
    if top_k < 1 or max_vocabulary < top_k:
        raise InvalidInput(f"need 1 <= top_k <= max_vocabulary, got top_k={top_k}, max_vocabulary={max_vocabulary}")
    if not columns:
        raise InvalidInput("no columns to profile")
    lengths = {name: len(np.asarray(v)) for name, v in columns.items()}
    rows = next(iter(lengths.values()))
    if any(n != rows for n in lengths.values()):
        raise InvalidInput(f"columns differ in length: {lengths}")
    if rows == 0:
        raise InvalidInput("the training data has no rows")
    categorical = set(categorical)
    valid_ranges = dict(valid_ranges or {})
    for name in (*categorical, score_column, decision_column, *valid_ranges):
        if name is not None and name not in columns:
            raise InvalidInput(f"column {name!r} is not in the data (columns: {', '.join(columns)})")
    for name, bounds in valid_ranges.items():
        valid_ranges[name] = checked_range(bounds, name)
    grid_levels = bins * math.ceil(grid_points / bins)
    features: dict[str, FeatureProfile] = {}
    for name, values in columns.items():
        role: Role = "score" if name == score_column else "decision" if name == decision_column else "feature"
        array = np.asarray(values)
        if name == decision_column or (name in categorical or array.dtype.kind in "OUSTb") and role != "score":
            features[name] = categorical_profile(
                name, role, array, top_k, max_vocabulary,
                tuple(p.lower() for p in positive_decisions) if role == "decision" else ())
        else:
            features[name] = numeric_profile(name, role, array, bins, grid_levels, valid_ranges.get(name))
        if name in valid_ranges and features[name].kind != "numeric":
            raise InvalidInput("a valid range applies to numeric columns only; this one is categorical", column=name)
    features = dict(sorted(features.items()))  # canonical order: the count-vector layout depends on it
    profile = ReferenceProfile(model=model, model_version=model_version, features=features,
                               settings={"bins": bins, "grid_points": grid_levels, "top_k": top_k,
                                         "max_vocabulary": max_vocabulary},
                               rows=rows)
    return ReferenceProfile(model, model_version, features, profile.settings, rows, content_hash(_body(profile)))


def _body(profile: ReferenceProfile) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": profile.model,
        "model_version": profile.model_version,
        "rows": profile.rows,
        "settings": dict(profile.settings),
        "features": {name: feature_to_dict(f) for name, f in profile.features.items()},
    }

