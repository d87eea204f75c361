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
    """A channel (credit) or merchant category (fraud) the model never saw."""
    new_channel_share: float = 0.0
    new_channel_score_shift: float = 0.0
    """Added to the logit of the events in the new category (how the model scores a category it never saw)."""
    score_shift: float = 0.0
    """Added to the score's logit (a silent model-version switch)."""

    @property
    def active(self) -> bool:
        return self != Incident()


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
    income = income * incident.income_unit  # the model scores what it is served
    logit = (-1.2 - 0.9 * (np.log(income) - 10.4) + 2.2 * (debt_to_income - 0.28)
             - 0.012 * (np.nan_to_num(bureau_score, nan=680.0) - 680) + 0.25 * (loan_amount / income - 0.3)
             + 0.3 * (channel == "partner") + incident.score_shift + rng.normal(0, 0.35, n))
    score = 1.0 / (1.0 + np.exp(-logit))
    decision = np.where(score < 0.2, "approve", np.where(score < 0.35, "review", "decline")).astype(object)
    if incident.new_channel is not None and incident.new_channel_share > 0:
        channel[rng.random(n) < incident.new_channel_share] = incident.new_channel
    return {
        "income": income, "age": age, "debt_to_income": debt_to_income,
        "bureau_score": bureau_score, "loan_amount": loan_amount, "open_accounts": open_accounts,
        "months_employed": months_employed, "country": country, "channel": channel, "employment": employment,
        "score": score, "decision": decision,
    }


CREDIT_CATEGORICAL = ("country", "channel", "employment")


MERCHANT_CATEGORIES = ("grocery", "fuel", "restaurants", "travel", "electronics", "fashion", "pharmacy",
                       "entertainment", "utilities", "marketplace")
CARD_CHANNELS = ("card_present", "ecommerce", "contactless", "atm")
FRAUD_CATEGORICAL = ("merchant_category", "channel", "country", "device_os")


def card_transactions(rng: np.random.Generator, n: int, incident: Incident = Incident()) -> dict[str, NDArray[Any]]:
    """A fraud-detection model's card transactions: heavy-tailed amounts, merchant categories, channels."""
    amount = rng.lognormal(3.6, 1.1, n)
    hour = rng.choice(24, n, p=_daily_profile()).astype(np.float64)
    velocity_1h = rng.poisson(0.8, n).astype(np.float64)
    distance_km = rng.gamma(0.6, 40.0, n)
    device_age_days = np.where(rng.random(n) < 0.05, np.nan, rng.gamma(1.5, 120.0, n).round())
    merchant = rng.choice(np.array(MERCHANT_CATEGORIES, dtype=object), n,
                          p=[0.24, 0.1, 0.14, 0.05, 0.07, 0.1, 0.06, 0.06, 0.08, 0.1])
    channel = rng.choice(np.array(CARD_CHANNELS, dtype=object), n, p=[0.35, 0.38, 0.22, 0.05])
    zipf = 1.0 / np.arange(1, len(EU_COUNTRIES) + 1) ** 1.4
    country = rng.choice(np.array(EU_COUNTRIES, dtype=object), n, p=zipf / zipf.sum())
    device_os = rng.choice(np.array(["ios", "android", "web", None], dtype=object), n, p=[0.34, 0.41, 0.22, 0.03])
    if incident.new_channel is not None and incident.new_channel_share > 0:
        merchant[rng.random(n) < incident.new_channel_share] = incident.new_channel
    logit = (-4.2 + 0.45 * (np.log(amount) - 3.6) + 0.5 * velocity_1h + 0.006 * distance_km
             + 0.8 * (channel == "ecommerce") + 0.6 * ((hour < 5) | (hour > 22)) + incident.score_shift
             + rng.normal(0, 0.4, n))
    if incident.new_channel is not None and incident.new_channel_score_shift:
        logit = logit + incident.new_channel_score_shift * (merchant == incident.new_channel)
    score = 1.0 / (1.0 + np.exp(-logit))
    decision = np.where(score < 0.3, "approve", np.where(score < 0.6, "challenge", "decline")).astype(object)
    return {"amount": amount, "hour_of_day": hour, "velocity_1h": velocity_1h, "distance_km": distance_km,
            "device_age_days": device_age_days, "merchant_category": merchant, "channel": channel,
            "country": country, "device_os": device_os, "score": score, "decision": decision}


PAYMENT_TYPES = ("sepa_credit", "sepa_instant", "swift", "card_payout")
TRANSACTION_CATEGORICAL = ("payment_type", "counterparty_country", "customer_segment")


def payments(rng: np.random.Generator, n: int, incident: Incident = Incident()) -> dict[str, NDArray[Any]]:
    """A transaction-risk (AML) model's payments: amounts, counterparties, account history."""
    amount = rng.pareto(2.2, n) * 400 + 20
    account_age_days = rng.gamma(2.0, 500.0, n).round()
    tx_count_24h = rng.poisson(2.5, n).astype(np.float64)
    new_beneficiary = (rng.random(n) < 0.18).astype(np.float64)
    payment_type = rng.choice(np.array(PAYMENT_TYPES, dtype=object), n, p=[0.55, 0.3, 0.08, 0.07])
    zipf = 1.0 / np.arange(1, len(EU_COUNTRIES) + 1) ** 1.2
    counterparty = rng.choice(np.array(EU_COUNTRIES, dtype=object), n, p=zipf / zipf.sum())
    segment = rng.choice(np.array(["retail", "premium", "sme", "corporate"], dtype=object), n,
                         p=[0.7, 0.12, 0.14, 0.04])
    logit = (-3.0 + 0.5 * (np.log(amount) - 6.3) - 0.0006 * account_age_days + 0.25 * tx_count_24h
             + 1.1 * new_beneficiary + 0.9 * (payment_type == "swift") + incident.score_shift
             + rng.normal(0, 0.35, n))
    score = 1.0 / (1.0 + np.exp(-logit))
    decision = np.where(score < 0.25, "pass", np.where(score < 0.5, "review", "block")).astype(object)
    return {"amount": amount, "account_age_days": account_age_days, "tx_count_24h": tx_count_24h,
            "new_beneficiary": new_beneficiary, "payment_type": payment_type, "counterparty_country": counterparty,
            "customer_segment": segment, "score": score, "decision": decision}


def _daily_profile() -> NDArray[np.float64]:
    hours = np.arange(24)
    weights = 0.3 + np.exp(-((hours - 13) ** 2) / 30.0) + 0.5 * np.exp(-((hours - 20) ** 2) / 8.0)
    return weights / weights.sum()


# -- traffic for the score change watch (benchmarks/changewatch.py, tests) --------------------------------

RATE_PER_HOUR = 1_500
"""Scored events per model and hour in the change-watch traffic (one event every 2.4 s)."""

AGRAWAL_SERVED, AGRAWAL_SWITCHED = 0, 4
"""river's Agrawal classification functions: the version served, and the one silently switched to."""


@dataclass(frozen=True)
class ScoreStream:
    """One model's seeded traffic: event times (epoch ms, one every 3600/RATE_PER_HOUR s), columns, and
    where its incident starts (None: stationary)."""

    model: str
    event_time_ms: NDArray[np.int64]
    columns: dict[str, NDArray[Any]]
    incident_at: int | None
    incident: str

    @property
    def scores(self) -> NDArray[np.float64]:
        return np.asarray(self.columns["score"], dtype=np.float64)


def change_traffic(seed: int, hours: float, incident_hour: float | None,
                   rate_per_hour: int = RATE_PER_HOUR, start_ms: int = 1_767_225_600_000) -> dict[str, ScoreStream]:
    """Three models' traffic with known incidents from ``incident_hour`` on (None: stationary):

    * ``credit``: an upstream unit change — 6 % of applications (one source) report income in thousands;
    * ``fraud``: a new merchant category (15 % of transactions), which the model scores +1 on the logit;
    * ``agrawal``: river's Agrawal stream (``river.datasets.synth.Agrawal``); its score is the served
      version's decision, and the served version silently switches from classification function 0 to 4.
    """
    n = int(hours * rate_per_hour)
    at = None if incident_hour is None else int(incident_hour * rate_per_hour)
    cut = n if at is None else at
    times = start_ms + (np.arange(n, dtype=np.int64) * 3_600_000) // rate_per_hour
    rng = np.random.default_rng(seed)
    streams = {}

    normal = credit_applications(rng, n)
    unit = credit_applications(rng, n, Incident(income_unit=0.001))
    affected = (np.arange(n) >= cut) & (rng.random(n) < 0.06)
    credit = {k: np.where(affected, unit[k], v) for k, v in normal.items()}
    streams["credit"] = ScoreStream("credit", times, credit, at, "income unit change on 6 % of applications")

    before = card_transactions(rng, cut)
    after = card_transactions(rng, n - cut, Incident(new_channel="crypto_exchange", new_channel_share=0.15,
                                                      new_channel_score_shift=1.0))
    fraud = {k: np.concatenate((before[k], after[k])) for k in before}
    streams["fraud"] = ScoreStream("fraud", times, fraud, at, "new merchant category on 15 % of transactions")

    streams["agrawal"] = ScoreStream("agrawal", times, agrawal_scores(seed, n, cut), at,
                                     f"Agrawal function {AGRAWAL_SERVED} → {AGRAWAL_SWITCHED} (silent version switch)")
    return streams


def agrawal_scores(seed: int, n: int, switch_at: int) -> dict[str, NDArray[Any]]:
    """river's Agrawal features, scored by function AGRAWAL_SERVED before ``switch_at`` and by
    AGRAWAL_SWITCHED from then on (river generates one event at a time: about 0.1 ms each)."""
    from river.datasets import synth  # river is needed only for this stream

    columns: dict[str, list[Any]] = {}
    labels = []
    for function, count, offset in ((AGRAWAL_SERVED, switch_at, 0), (AGRAWAL_SWITCHED, n - switch_at, 1)):
        for x, y in synth.Agrawal(classification_function=function, seed=seed + offset).take(count):
            for key, value in x.items():
                columns.setdefault(key, []).append(value)
            labels.append(float(y))
    out: dict[str, NDArray[Any]] = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    for key in ("elevel", "car", "zipcode"):  # codes, not quantities
        if key in out:
            out[key] = out[key].astype(np.int64).astype(str).astype(object)
    out["score"] = np.asarray(labels, dtype=np.float64)
    out["decision"] = np.where(out["score"] >= 0.5, "approve", "decline").astype(object)
    return out
