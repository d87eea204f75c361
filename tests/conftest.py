"""Shared test setup: the two tiers, a hypothesis profile, small reference profiles.

``tests/unit`` is pure (no network, seconds); ``tests/integration`` needs real services. Every test
under ``tests/unit`` is marked ``unit`` here, so ``pytest -m unit`` and ``pytest -m integration`` run
one tier alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is used from the checkout, not installed into the venv
    sys.path.insert(0, str(ROOT))

from driftline.engine.features import FeatureSet  # noqa: E402
from driftline.engine.profile import ReferenceProfile, build_profile  # noqa: E402

settings.register_profile(
    "unit", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.register_profile("thorough", max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "unit"))  # "thorough" to hunt for bugs


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: pure, fast test (no network, no services)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unit_dir = ROOT / "tests" / "unit"
    for item in items:
        if unit_dir in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.unit)


def small_profile(seed: int = 11, rows: int = 400) -> ReferenceProfile:
    """A numeric feature, a categorical feature, a score and a decision: every kind of column."""
    rng = np.random.default_rng(seed)
    return build_profile(
        {
            "x": rng.normal(0.0, 1.0, rows),
            "c": rng.choice(["a", "b", "c", "d"], rows, p=[0.4, 0.3, 0.2, 0.1]),
            "score": rng.beta(2.0, 5.0, rows),
            "decision": rng.choice(["approve", "decline"], rows, p=[0.7, 0.3]),
        },
        model="m",
        model_version="1",
        score_column="score",
        decision_column="decision",
        bins=5,
        grid_points=20,
    )


@pytest.fixture(scope="session")
def profile() -> ReferenceProfile:
    return small_profile()


@pytest.fixture(scope="session")
def features(profile: ReferenceProfile) -> FeatureSet:
    return FeatureSet(profile)
