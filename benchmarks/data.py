"""Seeded synthetic credit-risk scoring data for the benchmarks (reusable by tests and demos).

Each row has 24 numeric features, 6 categorical features, a ``score`` in [0, 1] (a logistic function
of the features) and a ``decision`` (approve / review / decline, cut from the score). Numeric
families: lognormal (income), normal, uniform, beta, Poisson, Pareto, Student-t and zero-inflated;
5 columns (:data:`WITH_MISSING`) have about 1 % NaN. Categoricals are numpy ``str`` arrays; the
country is one of the 27 EU member states, Zipf-skewed.

``generate(rows, seed, drifted=True)`` applies a controlled shift (:data:`DRIFTED_COLUMNS`):
income × 1.15, bureau_score − 15, debt_to_income beta(2, 5) → beta(2.6, 5), tx_amount_30d Pareto
tail 2.5 → 2.0, channel mobile share 30 % → 42 % plus two categories the reference never saw
(``kiosk``, ``voice``). The score and decision move as a consequence.

>>> columns = generate(1_000, seed=1)
>>> len(NUMERIC), len(CATEGORICAL), len(columns)
(24, 6, 32)
>>> sorted(map(str, set(generate(5_000, seed=2, drifted=True)["channel"]) - set(columns["channel"])))
['kiosk', 'voice']
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Columns = dict[str, NDArray[np.generic]]

NUMERIC: tuple[str, ...] = (
    "income", "age", "bureau_score", "debt_to_income", "tx_amount_30d", "credit_utilization",
    "employment_years", "loan_amount", "loan_term_months", "payment_to_income", "num_open_accounts",
    "num_delinquencies_2y", "cc_limit", "savings_balance", "residence_years", "num_inquiries_6m",
    "months_since_delinquency", "account_age_months", "income_change_pct", "spend_volatility",
    "device_risk", "tx_count_24h", "distance_home_km", "loan_to_value",
)
CATEGORICAL: tuple[str, ...] = ("country", "channel", "product", "employment_type", "housing", "education")
SCORE = "score"
DECISION = "decision"
CONTINUOUS: tuple[str, ...] = (
    "income", "age", "bureau_score", "debt_to_income", "tx_amount_30d", "credit_utilization", "loan_amount",
    "payment_to_income", "cc_limit", "savings_balance", "account_age_months", "income_change_pct",
    "spend_volatility", "device_risk", "distance_home_km", "loan_to_value",
)
"""The numeric features that are not integer-valued."""
WITH_MISSING: tuple[str, ...] = ("employment_years", "cc_limit", "savings_balance", "residence_years",
                                 "months_since_delinquency")
MISSING_RATE = 0.01
DRIFTED_COLUMNS: tuple[str, ...] = ("income", "bureau_score", "debt_to_income", "tx_amount_30d", "channel")

EU_COUNTRIES: tuple[str, ...] = (
    "DE", "FR", "IT", "ES", "PL", "RO", "NL", "BE", "CZ", "SE", "PT", "GR", "HU", "AT",
    "BG", "DK", "FI", "SK", "IE", "HR", "LT", "SI", "LV", "EE", "CY", "LU", "MT",
)
CHANNELS = ("web", "mobile", "branch", "partner", "call_center")
CHANNEL_SHARES = (0.45, 0.30, 0.12, 0.08, 0.05)
DRIFTED_CHANNELS = CHANNELS + ("kiosk", "voice")
DRIFTED_CHANNEL_SHARES = (0.345, 0.42, 0.09, 0.06, 0.04, 0.03, 0.015)
OTHER_CATEGORICALS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "product": (("personal_loan", "credit_card", "auto_loan", "mortgage", "bnpl", "overdraft"),
                (0.32, 0.28, 0.14, 0.12, 0.09, 0.05)),
    "employment_type": (("employed", "self_employed", "retired", "contractor", "student", "unemployed"),
                        (0.62, 0.13, 0.10, 0.07, 0.05, 0.03)),
    "housing": (("rent", "mortgage", "own", "family", "other"), (0.38, 0.30, 0.20, 0.10, 0.02)),
    "education": (("secondary", "bachelor", "vocational", "master", "doctorate", "none"),
                  (0.34, 0.27, 0.18, 0.14, 0.03, 0.04)),
}


def generate(rows: int, seed: int, drifted: bool = False) -> Columns:
    """``rows`` rows of the 32 monitored columns: 24 numeric, 6 categorical, score, decision."""
    rng = np.random.default_rng(seed)
    columns: Columns = {}
    columns.update(_numeric(rng, rows, drifted))
    columns.update(_categorical(rng, rows, drifted))
    score = _score(columns)
    columns[SCORE] = score
    columns[DECISION] = np.where(score >= 0.6, "approve", np.where(score >= 0.4, "review", "decline"))
    return columns


def event_times(rows: int, start_ms: int, events_per_second: float) -> NDArray[np.int64]:
    """Non-decreasing event times (epoch ms) at a steady rate."""
    return start_ms + (np.arange(rows) * (1_000.0 / events_per_second)).astype(np.int64)


def scaled(columns: Columns, factor: float) -> Columns:
    """Every continuous feature multiplied by ``factor`` (a mild, broad drift); the rest unchanged."""
    return {name: np.multiply(v, factor) if name in CONTINUOUS else v for name, v in columns.items()}


def as_objects(columns: Columns) -> Columns:
    """The same columns with categoricals as ``object`` arrays of Python ``str`` (what a decoder yields)."""
    return {name: v.astype(object) if v.dtype.kind == "U" else v for name, v in columns.items()}


def _numeric(rng: np.random.Generator, n: int, drifted: bool) -> Columns:
    def zero_inflated(p_zero: float, values: NDArray[Any]) -> NDArray[np.float64]:
        return np.where(rng.random(n) < p_zero, 0.0, values)

    tail = 2.0 if drifted else 2.5
    cols: Columns = {
        "income": rng.lognormal(10.4, 0.55, n) * (1.15 if drifted else 1.0),
        "age": np.clip(rng.normal(42.0, 12.0, n), 18.0, 90.0),
        "bureau_score": rng.normal(680.0, 60.0, n) - (15.0 if drifted else 0.0),
        "debt_to_income": rng.beta(2.6 if drifted else 2.0, 5.0, n),
        "tx_amount_30d": (rng.pareto(tail, n) + 1.0) * 150.0,
        "credit_utilization": rng.beta(1.5, 3.0, n),
        "employment_years": rng.poisson(6.0, n).astype(np.float64),
        "loan_amount": rng.lognormal(9.3, 0.8, n),
        "loan_term_months": rng.choice(np.array([12.0, 24.0, 36.0, 48.0, 60.0, 72.0]), n,
                                       p=[0.10, 0.20, 0.30, 0.15, 0.20, 0.05]),
        "payment_to_income": rng.uniform(0.02, 0.45, n),
        "num_open_accounts": rng.poisson(4.0, n).astype(np.float64),
        "num_delinquencies_2y": zero_inflated(0.80, rng.poisson(1.5, n) + 1.0),
        "cc_limit": rng.lognormal(8.5, 0.7, n),
        "savings_balance": zero_inflated(0.35, rng.lognormal(8.0, 1.4, n)),
        "residence_years": rng.poisson(5.0, n).astype(np.float64),
        "num_inquiries_6m": rng.poisson(1.2, n).astype(np.float64),
        "months_since_delinquency": zero_inflated(0.70, rng.uniform(1.0, 84.0, n).round()),
        "account_age_months": rng.uniform(1.0, 240.0, n),
        "income_change_pct": rng.standard_t(4.0, n) * 5.0,
        "spend_volatility": np.abs(rng.standard_t(3.0, n)) * 0.2,
        "device_risk": rng.uniform(0.0, 1.0, n),
        "tx_count_24h": rng.poisson(2.0, n).astype(np.float64),
        "distance_home_km": (rng.pareto(3.0, n) + 1.0) * 2.0,
        "loan_to_value": rng.beta(5.0, 2.0, n),
    }
    for name in WITH_MISSING:
        cols[name] = np.where(rng.random(n) < MISSING_RATE, np.nan, cols[name])
    assert tuple(cols) == NUMERIC
    return cols


def _categorical(rng: np.random.Generator, n: int, drifted: bool) -> Columns:
    def draw(labels: tuple[str, ...], shares: tuple[float, ...] | NDArray[Any]) -> NDArray[np.str_]:
        p = np.asarray(shares, dtype=np.float64)
        return np.array(labels)[rng.choice(len(labels), n, p=p / p.sum())]

    zipf = 1.0 / np.arange(1, len(EU_COUNTRIES) + 1) ** 1.1
    cols: Columns = {
        "country": draw(EU_COUNTRIES, zipf),
        "channel": draw(DRIFTED_CHANNELS, DRIFTED_CHANNEL_SHARES) if drifted else draw(CHANNELS, CHANNEL_SHARES),
    }
    for name, (labels, shares) in OTHER_CATEGORICALS.items():
        cols[name] = draw(labels, shares)
    assert tuple(cols) == CATEGORICAL
    return cols


def _score(cols: Columns) -> NDArray[np.float64]:
    """Logistic score of a few features (NaN read as the feature's typical value)."""

    def f(name: str, fill: float = 0.0) -> NDArray[np.float64]:
        return np.nan_to_num(np.asarray(cols[name], dtype=np.float64), nan=fill)

    z = (
        0.9
        + 1.0 * (f("bureau_score") - 680.0) / 60.0
        + 0.6 * (np.log(f("income")) - 10.4) / 0.55
        - 4.0 * (f("debt_to_income") - 0.286)
        - 0.6 * f("num_delinquencies_2y")
        - 0.25 * (np.log(f("tx_amount_30d")) - 5.4)
        - 1.5 * (f("credit_utilization") - 0.33)
        + 0.05 * (f("employment_years", 6.0) - 6.0)
        - 0.15 * (f("num_inquiries_6m") - 1.2)
    )
    return 1.0 / (1.0 + np.exp(-z))
