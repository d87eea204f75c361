"""Integration setup: small reference profiles, scoring-event files in JSONL/Avro/Parquet, configs, and
chDB stores (a real embedded ClickHouse engine) under tmp_path.

chDB runs one embedded server per process, bound to one path: a store must be closed (and every client
on it released) before another path is opened. ``replayed`` opens, replays, reads and closes; the
autouse fixture collects clients left by code that does not close its store (the CLI, the demo).

Kafka: one real broker for the whole session (``broker``), started the first time a test asks for it (so
``pytest tests/integration/test_replay_store.py`` starts none) and shared by every module. Each module uses
topics, prefixes and consumer groups of its own on it. A test that stops, kills or restarts a broker uses
``own_broker`` instead, a private one: the shared broker is never taken down while the session runs.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.app.replay import ReplayOutcome, replay
from driftline.app.synthetic import CREDIT_CATEGORICAL, FRAUD_CATEGORICAL, Incident, card_transactions, credit_applications
from driftline.config import Config, load_config
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.schemas import schema_text
from tests.kafka_broker import KafkaBroker

HOUR_MS = 3_600_000
DAY_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CREDIT, FRAUD = ("credit_scoring", "3"), ("fraud_detection", "7")
CREDIT_INCIDENT = Incident(income_unit=0.001)  # income sent in thousands
FRAUD_INCIDENT = Incident(new_channel="crypto_exchange", new_channel_share=0.08)  # an unseen merchant category

# the tables a replay writes, and an order that makes SELECT * deterministic
TABLES = {
    "windows": "model, model_version, feature, baseline, window_start, window_end",
    "late_events": "model, model_version, window_start, window_id",
    "alerts": "model, model_version, window_start, alert_id",
    "rollback_requests": "model, model_version, window_start, request_id",
    "change_detections": "model, model_version, event_time, detection_id",
    "version_changes": "model, window_end, change_id",
    "undeliverable_dead_letters": "dead_letter_id",
}


@pytest.fixture(autouse=True)
def _release_chdb() -> Iterator[None]:
    """Drop chDB clients left open by code under test, so the next test can open its own path."""
    gc.collect()
    yield
    gc.collect()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's Kafka broker, on free ports (never a skip: KafkaBroker raises KafkaBrokerError, a
    failure, when it cannot start). Started lazily, by the first test that needs it; stopped at the end of
    the session. Never stop, kill or restart it in a test: use ``own_broker`` for that."""
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as running:
        yield running


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A private broker for a module's tests that stop, kill or restart it (the outage, restart and SIGKILL
    tests): taking the shared ``broker`` down would break every test after them, and restoring it after a
    failure midway would not be reliable, so these get a broker of their own, gone with their module."""
    with KafkaBroker(tmp_path_factory.mktemp("own-kafka")) as running:
        yield running


@pytest.fixture(scope="session")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    return make_profiles(tmp_path_factory.mktemp("profiles"))


def make_profiles(root: Path) -> dict[tuple[str, str], Path]:
    """Reference profiles of 20,000 synthetic training rows for the credit and fraud models."""
    rng = np.random.default_rng(20260101)
    out = {}
    for (model, version), generate, categorical in ((CREDIT, credit_applications, CREDIT_CATEGORICAL),
                                                      (FRAUD, card_transactions, FRAUD_CATEGORICAL)):
        profile = build_profile(generate(rng, 20_000, Incident()), model=model, model_version=version,
                                categorical=categorical, score_column="score", decision_column="decision")
        path = root / f"{model}-{version}.json"
        save_profile(profile, path)
        out[(model, version)] = path
    return out


def write_config(folder: Path, profiles: dict[tuple[str, str], Path], *, dsn: str = "chdb:store",
                 min_samples: int = 200, extra: dict[str, Any] | None = None) -> Path:
    """A driftline.yaml in ``folder`` for the credit (combined events) and fraud (split events) models."""
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "store": {"dsn": dsn, "database": "driftline"},
        "windows": {"size": "1h", "allowed_lateness": "2m"},
        "join": {"max_wait": "1m"},
        "rollback": {"dry_run": True},
        "models": [{"name": m, "references": {v: str(profiles[(m, v)])}, "policy": {"min_samples": min_samples}}
                   for m, v in (CREDIT, FRAUD)],
    }
    for section, values in (extra or {}).items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    path = folder / "driftline.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def load(path: Path) -> Config:
    return load_config(path, environ={})


def _none_for_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _records(model: tuple[str, str], data: dict[str, np.ndarray], hour: int, rng: np.random.Generator,
             split: bool) -> list[tuple[int, dict[str, Any]]]:
    n = len(data["score"])
    times = DAY_START_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    arrival = times + rng.integers(0, 30_000, n)  # up to 30 s late: out of order, within the lateness
    arrival[np.arange(n) % 211 == 7] += 75 * 60_000  # and a few stragglers 75 min late: late events
    names = [k for k in data if k not in ("score", "decision")]
    columns = {k: data[k].tolist() for k in names}
    scores, decisions = data["score"].tolist(), data["decision"].tolist()
    out = []
    for i in range(n):
        head = {"request_id": hashlib.blake2b(f"{model[0]}:{hour}:{i}".encode(), digest_size=10).hexdigest(),
                "model": model[0], "model_version": model[1], "event_time": int(times[i])}
        features = {k: _none_for_nan(v[i]) for k, v in columns.items()}
        if split:
            out.append((int(arrival[i]), {**head, "features": features}))
            if i % 301 != 0:  # now and then a response is lost: its request is unmatched
                out.append((int(arrival[i]) + 40, {**head, "event_time": int(times[i]) + 40, "score": scores[i],
                                                   "decision": decisions[i]}))
        else:
            out.append((int(arrival[i]), {**head, "features": features, "score": scores[i],
                                          "decision": decisions[i]}))
    return out


def scoring_events(hours: int = 8, per_hour: int = 600, seed: int = 3, incidents: bool = True,
                   fraud: bool = True) -> list[dict[str, Any]]:
    """Credit events (combined) and, optionally, fraud requests and responses (split), in arrival order.
    Incidents: credit income in thousands in hours 3–5, an unseen fraud merchant category from hour 4."""
    rng = np.random.default_rng(seed)
    timed: list[tuple[int, dict[str, Any]]] = []
    for hour in range(hours):
        credit = CREDIT_INCIDENT if incidents and 3 <= hour <= 5 else Incident()
        timed += _records(CREDIT, credit_applications(rng, per_hour, credit), hour, rng, split=False)
        if fraud:
            incident = FRAUD_INCIDENT if incidents and hour >= 4 else Incident()
            timed += _records(FRAUD, card_transactions(rng, per_hour, incident), hour, rng, split=True)
    timed.sort(key=lambda item: item[0])
    return [r for _, r in timed]


def iso(millis: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)).isoformat().replace("+00:00", "Z")


def write_jsonl(records: Sequence[dict[str, Any]], path: Path, iso_every: int = 0) -> Path:
    """One event per line; with ``iso_every`` = k, every k-th event's time is an ISO-8601 string."""
    with path.open("w") as out:
        for i, r in enumerate(records):
            if iso_every and i % iso_every == 0:
                r = {**r, "event_time": iso(r["event_time"])}
            out.write(json.dumps(r, allow_nan=False) + "\n")
    return path


def write_avro(records: Sequence[dict[str, Any]], path: Path, sync_interval: int = 16_000) -> Path:
    """An Avro container file of combined events, with the package's scoring_event.avsc."""
    import fastavro

    schema = fastavro.parse_schema(json.loads(schema_text("scoring_event.avsc")))
    with path.open("wb") as out:
        fastavro.writer(out, schema, list(records), sync_interval=sync_interval)
    return path


def write_parquet(records: Sequence[dict[str, Any]], path: Path, layout: str = "flat") -> Path:
    """Combined events as Parquet: ``flat`` (one column per feature, a UTC timestamp) or ``struct``
    (a ``features`` struct column, epoch-millisecond ints)."""
    names = list(dict.fromkeys(k for r in records for k in r.get("features") or {}))
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([r["request_id"] for r in records], pa.string()),
        "model": pa.array([r["model"] for r in records], pa.string()),
        "model_version": pa.array([r["model_version"] for r in records], pa.string()),
    }
    times = [r["event_time"] for r in records]
    columns["event_time"] = pa.array(times, pa.timestamp("ms", tz="UTC")) if layout == "flat" else \
        pa.array(times, pa.int64())
    columns["score"] = pa.array([r.get("score") for r in records], pa.float64())
    columns["decision"] = pa.array([r.get("decision") for r in records], pa.string())
    feature_arrays = {n: pa.array([(r.get("features") or {}).get(n) for r in records]) for n in names}
    if layout == "flat":
        columns.update(feature_arrays)
    else:
        valid = pa.array([r.get("features") is None for r in records])
        columns["features"] = pa.StructArray.from_arrays(list(feature_arrays.values()), names=names, mask=valid)
    pq.write_table(pa.table(columns), path)
    return path


@contextmanager
def opened(config: Config) -> Iterator[ClickHouseStore]:
    store = ClickHouseStore(config.store.dsn, config.store.database, config.store.ttl_days,
                            config.store.audit_ttl_days)
    try:
        store.apply_schema()
        yield store
    finally:
        store.close()
        gc.collect()


def _normal(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # so that two equal rows compare equal
    if isinstance(value, (list, tuple)):
        return tuple(_normal(v) for v in value)
    return value


def table_rows(store: ClickHouseStore, table: str, final: bool = True) -> list[tuple[Any, ...]]:
    if table == "audit_log":  # recorded_at is the one wall-clock column
        sql = (f"SELECT * EXCEPT recorded_at FROM {store.database}.audit_log "
               "ORDER BY model, model_version, event_time, entry_id")
    else:
        sql = f"SELECT * FROM {store.database}.{table} {'FINAL' if final else ''} ORDER BY {TABLES[table]}"
    return [tuple(_normal(v) for v in row) for row in store.query(sql)[1]]


def count(store: ClickHouseStore, table: str, final: bool) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.{table} {'FINAL' if final else ''}")[1][0][0])


@dataclass
class Replayed:
    outcome: ReplayOutcome
    rows: dict[str, list[tuple[Any, ...]]]
    counts: dict[str, tuple[int, int]]
    """table → (count() FINAL, plain count())."""


def snapshot(store: ClickHouseStore) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, tuple[int, int]]]:
    rows = {table: table_rows(store, table) for table in (*TABLES, "audit_log")}
    counts = {table: (count(store, table, True), count(store, table, False)) for table in TABLES}
    counts["audit_log"] = (count(store, "audit_log", False), count(store, "audit_log", False))
    return rows, counts


def replayed(config: Config, files: Sequence[Path], times: int = 1, chunk_size: int = 20_000) -> Replayed:
    """Replay ``files`` into the config's store (``times`` over), read every table, close the store."""
    with opened(config) as store:
        for _ in range(times):
            outcome = replay(config, files, store=store, chunk_size=chunk_size)
        rows, counts = snapshot(store)
    return Replayed(outcome, rows, counts)
