"""Synthetic scoring traffic with realistic feature mixes, for the demo and the tests.

Seeded and vectorised. A credit-scoring model's applications: skewed incomes and loan amounts, EU
country codes (Zipf-skewed), channels, employment types, missing values; a probability-of-default
score from a logistic of the features and an approve/review/decline decision. Incidents that a risk
team knows are parameters: an upstream unit change (income reported in thousands), a new category
(a channel the model never saw), a score shift (a silently switched model version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

EU_COUNTRIES = ("DE", "FR", "IT", "ES", "PL", "RO", "NL", "BE", "CZ", "GR", "PT", "SE", "HU", "AT", "BG", "DK",
                "FI", "SK", "IE", "HR", "LT", "SI", "LV", "EE", "CY", "LU", "MT")
CHANNELS = ("web", "mobile", "branch", "partner")
EMPLOYMENT = ("employed", "self_employed", "unemployed", "retired", "student")


@dataclass(frozen=True)
class Incident:
    income_unit: float = 1.0
    """Multiply incomes by this (0.001: an upstream switch to thousands)."""
    new_channel: str | None = None
    new_channel_share: float = 0.0
    score_shift: float = 0.0
    """Added to the score's logit (a silent model-version switch)."""


def credit_applications(rng: np.random.Generator, n: int, incident: Incident = Incident()) -> dict[str, NDArray[Any]]:
    income = rng.lognormal(10.4, 0.55, n)
    age = np.clip(rng.normal(41, 12, n), 18, 90).round()
    debt_to_income = rng.beta(2.0, 5.0, n)
    bureau_score = np.clip(rng.normal(680, 70, n), 300, 850).round()
    loan_amount = rng.lognormal(9.2, 0.8, n)
    open_accounts = rng.poisson(4.0, n).astype(np.float64)
    months_employed = np.where(rng.random(n) < 0.08, 0.0, rng.gamma(2.0, 30.0, n).round())
    zipf = 1.0 / np.arange(1, len(EU_COUNTRIES) + 1) ** 1.1
    country = rng.choice(np.array(EU_COUNTRIES, dtype=object), n, p=zipf / zipf.sum())
    channel = rng.choice(np.array(CHANNELS, dtype=object), n, p=[0.45, 0.35, 0.12, 0.08])
    employment = rng.choice(np.array(EMPLOYMENT, dtype=object), n, p=[0.62, 0.16, 0.07, 0.1, 0.05])
    # Missing values as they arrive from real application forms.
    months_employed[rng.random(n) < 0.02] = np.nan
    bureau_score[rng.random(n) < 0.01] = np.nan
    employment[rng.random(n) < 0.015] = None
    logit = (-1.2 - 0.9 * (np.log(income) - 10.4) + 2.2 * (debt_to_income - 0.28)
             - 0.012 * (np.nan_to_num(bureau_score, nan=680.0) - 680) + 0.25 * (loan_amount / income - 0.3)
             + 0.3 * (channel == "partner") + incident.score_shift + rng.normal(0, 0.35, n))
    score = 1.0 / (1.0 + np.exp(-logit))
    decision = np.where(score < 0.2, "approve", np.where(score < 0.35, "review", "decline")).astype(object)
    if incident.new_channel is not None and incident.new_channel_share > 0:
        channel[rng.random(n) < incident.new_channel_share] = incident.new_channel
    return {
        "income": income * incident.income_unit, "age": age, "debt_to_income": debt_to_income,
        "bureau_score": bureau_score, "loan_amount": loan_amount, "open_accounts": open_accounts,
        "months_employed": months_employed, "country": country, "channel": channel, "employment": employment,
        "score": score, "decision": decision,
    }


CREDIT_CATEGORICAL = ("country", "channel", "employment")
