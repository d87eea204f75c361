"""``driftline demo``: three risk models, a day of live-like scoring traffic, three incidents.

Generates training data and a reference profile for a credit-scoring, a fraud-detection and a
transaction-risk model; writes a day of scoring events as JSON lines (the fraud model's requests
and responses as separate events, joined by request id; a few events out of order; a few broken
lines); then replays them through the service pipeline into ClickHouse (chDB on disk), printing a
live summary, and ends with what fired, why, what rollback it asked for (dry-run), and the SQL to
run next. ``--no-incidents`` runs the same generator with no incident: nothing should fire.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.app.replay import ReplayOutcome, replay
from driftline.app.synthetic import (
    CREDIT_CATEGORICAL, FRAUD_CATEGORICAL, TRANSACTION_CATEGORICAL, Incident, card_transactions, credit_applications,
    payments,
)
from driftline.config import load_config
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.errors import InvalidInput
from driftline.outcome import StepResult, Totals

HOUR_MS = 3_600_000
DAY_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Generator = Callable[[np.random.Generator, int, Incident], dict[str, NDArray[Any]]]


@dataclass(frozen=True)
class DemoModel:
    name: str
    version: str
    generate: Generator
    categorical: tuple[str, ...]
    split: bool
    """Requests and responses as separate events (joined by request id)."""
    incident: Incident
    incident_hours: range
    incident_label: str


MODELS = (
    DemoModel("credit_scoring", "3", credit_applications, CREDIT_CATEGORICAL, False,
              Incident(income_unit=0.001), range(8, 13), "upstream unit change: income sent in thousands"),
    DemoModel("fraud_detection", "7", card_transactions, FRAUD_CATEGORICAL, True,
              Incident(new_channel="crypto_exchange", new_channel_share=0.08), range(11, 24),
              "new merchant category 'crypto_exchange' the model never saw"),
    DemoModel("transaction_risk", "2", payments, TRANSACTION_CATEGORICAL, False,
              Incident(score_shift=1.2), range(15, 24), "silent model switch: scores shift, version label unchanged"),
)


def run_demo(workdir: str | Path = "driftline-demo", events_per_hour: int = 3_000, seed: int = 7,
             incidents: bool = True, quiet: bool = False) -> ReplayOutcome:
    say = (lambda *_: None) if quiet else print
    say(f"driftline demo: 3 models, 24 hours of traffic, {events_per_hour:,} events per model per hour, in {workdir}/")
    config_path, files = prepare(workdir, events_per_hour, seed, incidents, say)
    say("\n3. replay through decode → join → windows → statistics → policy → ClickHouse (chDB)")
    outcome = replay(load_config(config_path, environ={}), files, on_step=None if quiet else _live)
    if not quiet:
        _summary(outcome, Path(workdir))
    return outcome


def prepare(workdir: str | Path, events_per_hour: int, seed: int = 7, incidents: bool = True,
            say: Callable[..., None] = lambda *_: None) -> tuple[Path, list[Path]]:
    """Profiles, a configuration and a day of traffic in ``workdir`` (emptied first)."""
    root = Path(workdir)
    marker = root / ".driftline-demo"
    if root.exists() and any(root.iterdir()):
        if not marker.exists():
            raise InvalidInput(f"{root} is not empty and was not made by driftline demo; choose another --workdir")
        shutil.rmtree(root)
    (root / "traffic").mkdir(parents=True)
    marker.write_text("made by driftline demo; emptied by the next run\n")
    rng = np.random.default_rng(seed)
    say("\n1. profile each model's training data (100,000 rows)")
    for model in MODELS:
        profile = build_profile(model.generate(rng, 100_000, Incident()), model=model.name,
                                model_version=model.version, categorical=model.categorical,
                                score_column="score", decision_column="decision")
        save_profile(profile, root / "profiles" / f"{model.name}-{model.version}.json")
        say(f"   {model.name} v{model.version}: {len(profile.features)} columns, {profile.content_hash[:23]}…")
    config_path = _write_config(root)
    say(f"\n2. write a day of scoring events as JSON lines ({config_path.name} points driftline at them)")
    files = _write_traffic(root / "traffic", rng, events_per_hour, incidents)
    for model in MODELS:
        if incidents:
            say(f"   {model.name}: hours {model.incident_hours.start:02d}–{model.incident_hours.stop - 1:02d} "
                f"{model.incident_label}")
    return config_path, files


def _write_config(root: Path) -> Path:
    path = root / "driftline.yaml"
    config = {
        "store": {"dsn": "chdb:store", "database": "driftline"},
        "windows": {"size": "1h", "allowed_lateness": "2m"},
        "join": {"max_wait": "1m"},
        "rollback": {"dry_run": True},
        "models": [{"name": m.name, "references": {m.version: f"profiles/{m.name}-{m.version}.json"},
                    "policy": {"min_samples": 500}} for m in MODELS],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _write_traffic(folder: Path, rng: np.random.Generator, per_hour: int, incidents: bool) -> list[Path]:
    """One file per hour of *arrival*: an event that arrives after its hour is over lands in a later file."""
    files = []
    carried: list[tuple[int, str]] = []
    for hour in range(24):
        lines = carried
        for model in MODELS:
            incident = model.incident if incidents and hour in model.incident_hours else Incident()
            lines.extend(_events(model, model.generate(rng, per_hour, incident), hour, rng))
        lines.sort(key=lambda item: item[0])
        cut = DAY_START_MS + (hour + 1) * HOUR_MS if hour < 23 else None
        now = [item for item in lines if cut is None or item[0] < cut]
        carried = [item for item in lines if cut is not None and item[0] >= cut]
        path = folder / f"hour-{hour:02d}.jsonl"
        with path.open("w") as out:
            for number, (_, line) in enumerate(now):
                out.write(line + "\n")
                if number % 5_000 == 4_999:  # a broken line now and then, as real pipes produce
                    out.write(line[: len(line) // 2] + "\n")
        files.append(path)
    return files


def _events(model: DemoModel, data: dict[str, NDArray[Any]], hour: int,
            rng: np.random.Generator) -> list[tuple[int, str]]:
    n = len(data["score"])
    times = DAY_START_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    arrival = times + rng.integers(0, 60_000, n)  # arrive up to a minute late, so out of order
    stragglers = rng.random(n) < 0.001  # and a few over an hour late (a client retry queue): past the lateness
    arrival[stragglers] += 75 * 60_000
    names = [k for k in data if k not in ("score", "decision")]
    columns = {k: data[k].tolist() for k in names}
    scores, decisions = data["score"].tolist(), data["decision"].tolist()
    out = []
    for i in range(n):
        request_id = hashlib.blake2b(f"{model.name}:{hour}:{i}".encode(), digest_size=12).hexdigest()
        features = {k: (None if isinstance(v[i], float) and v[i] != v[i] else v[i]) for k, v in columns.items()}
        head = {"request_id": request_id, "model": model.name, "model_version": model.version,
                "event_time": int(times[i])}
        if model.split:
            out.append((int(arrival[i]), json.dumps({**head, "features": features})))
            if i % 997 == 0:  # a response lost on the way: the request stays unmatched
                continue
            response_time = int(times[i]) + 40
            out.append((int(arrival[i]) + 40, json.dumps({**head, "event_time": response_time,
                                                            "score": scores[i], "decision": decisions[i]})))
        else:
            out.append((int(arrival[i]), json.dumps({**head, "features": features, "score": scores[i],
                                                     "decision": decisions[i]})))
    return out


def _live(path: Path, step: StepResult, totals: Totals) -> None:
    fired = [f"{a.window.model}/{a.subject} {a.kind} ({a.severity})" for a in step.alerts]
    print(f"   {path.name:16s} events {totals.events:>9,}  windows closed {totals.windows:>4}  "
          f"bad {sum(totals.bad.values()):>3}  alerts {totals.alerts:>3}" + (f"  ← {', '.join(fired)}" if fired else ""))


def _summary(outcome: ReplayOutcome, root: Path) -> None:
    t = outcome.totals
    print(f"\n4. what fired, and why ({t.alerts} alert events over {t.windows} closed windows)")
    header = f"   {'window (UTC)':16s} {'model':17s} {'event':9s} {'severity':8s} {'subject':18s} why"
    print(header)
    for a in outcome.alerts:
        top = max(a.breaches, key=lambda b: b.value / b.threshold if b.threshold else 0.0, default=None)
        why = (f"{top.metric} = {top.value:.3g} (threshold {top.threshold:g})" if top is not None
               else "back to ok for 3 windows")
        start = (a.window.start_ms - DAY_START_MS) // HOUR_MS
        print(f"   {f'2026-01-01 {start:02d}:00':16s} {a.window.model:17s} {a.kind:9s} {a.severity:8s} "
              f"{a.subject:18s} {why}")
    print(f"\n   early warnings between window closes (the score change watch, ADWIN): {len(outcome.detections)}")
    for d in outcome.detections:
        when = datetime.fromtimestamp((d.event_time_ms or 0) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"   {when} {d.model:17s} mean score {d.before_mean:.3f} → {d.after_mean:.3f} "
              f"after {d.after_count:,} scores")
    print("\n5. rollback requests (the fleet policy is dry-run: recorded, not sent)")
    for r in outcome.rollbacks or []:
        status = f"suppressed by {r.suppressed_by}" if r.suppressed_by else r.status
        print(f"   {r.model} v{r.model_version}: {status}; trigger {r.subject} {r.severity}; "
              f"idempotency key {r.request_id}")
    if not outcome.rollbacks:
        print("   none")
    print(f"\n6. inputs that could not be used: {sum(t.bad.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(t.bad.items())) or 'none'}); "
          f"unmatched requests {t.unmatched_requests}, responses {t.unmatched_responses}; late events {t.late}")
    for bad in outcome.bad[:5]:
        print(f"   {bad.describe()}")
    if outcome.dead_letters is not None:
        print(f"   all {outcome.dead_letter_count:,} of them, with their line and reason: {outcome.dead_letters}")
    config = root / "driftline.yaml"
    command = "driftline" if shutil.which("driftline") else sys.argv[0]  # e.g. .venv/bin/driftline after make demo
    print("\n7. every window is in ClickHouse; try:")
    for title, sql in INVESTIGATIONS:
        print(f"   # {title}\n   {command} query --config {config} \"{sql}\"")


INVESTIGATIONS = (
    ("top drifting features in the last day",
     "SELECT model, feature, max(psi) AS max_psi, countIf(severity != 'ok') AS bad_windows "
     "FROM driftline.windows FINAL WHERE baseline = 'reference' "
     "AND window_start >= (SELECT max(window_start) FROM driftline.windows) - INTERVAL 1 DAY "
     "GROUP BY model, feature ORDER BY max_psi DESC LIMIT 10"),
    ("PSI trend of one feature",
     "SELECT window_start, round(psi, 4) AS psi, round(psi_critical, 4) AS psi_critical, severity "
     "FROM driftline.windows FINAL WHERE model = 'credit_scoring' AND feature = 'income' "
     "AND baseline = 'reference' ORDER BY window_start"),
    ("the windows around an alert",
     "SELECT w.window_start, w.feature, round(w.psi, 3) AS psi, round(w.unseen_share, 3) AS unseen, w.severity "
     "FROM driftline.windows AS w FINAL JOIN (SELECT model, window_start FROM driftline.alerts FINAL "
     "WHERE kind = 'firing' ORDER BY window_start LIMIT 1) AS a ON w.model = a.model "
     "WHERE w.baseline = 'reference' AND w.window_start BETWEEN a.window_start - INTERVAL 2 HOUR "
     "AND a.window_start + INTERVAL 1 HOUR AND w.severity != 'ok' ORDER BY w.window_start, w.feature"),
)
