"""``driftline demo``: a credit-scoring model drifts, driftline notices and decides.

Generates a training reference and a day of hourly scoring traffic with scripted incidents, profiles
the reference with ``driftline reference build``, follows the traffic through event-time windows, the
statistics, the policy and its (dry-run) rollback guards, then shows ``driftline evaluate`` on one
incident hour, the batch contract a CI gate would call.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from driftline.cli import main as cli_main
from driftline.connectors.files import write_parquet
from driftline.connectors.profiles import load_profile
from driftline.engine.monitor import ModelMonitor
from driftline.engine.policy import AlertEvent, Decider, RollbackRequest
from driftline.engine.window import WindowSpec
from driftline.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications

HOUR_MS = 3_600_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

SCENARIO = (
    (range(0, 8), Incident(), "normal traffic"),
    (range(8, 13), Incident(income_unit=0.001), "upstream unit change: income sent in thousands"),
    (range(13, 17), Incident(), "unit change fixed"),
    (range(17, 24), Incident(new_channel="bnpl_partner", new_channel_share=0.12, score_shift=0.9),
     "new channel 'bnpl_partner' + silent model switch shifts scores"),
)


def run_demo(rows: int = 200_000, seed: int = 7, workdir: str | None = None) -> int:
    root = Path(workdir or tempfile.mkdtemp(prefix="driftline-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    reference_data, profile_path = root / "credit_training.parquet", root / "credit_v3.profile.json"
    write_parquet(credit_applications(rng, 100_000), reference_data)
    print(f"== 1. profile the training data ({reference_data})")
    cli_main(["reference", "build", "--data", str(reference_data), "--model", "credit_scoring", "--model-version", "3",
              "--categorical", ",".join(CREDIT_CATEGORICAL), "--score-column", "score",
              "--decision-column", "decision", "--out", str(profile_path)])
    profile = load_profile(profile_path)

    print("\n== 2. follow a day of hourly scoring traffic (tumbling 1 h windows, 2 min allowed lateness)")
    monitor = ModelMonitor(profile, WindowSpec(size_ms=HOUR_MS, allowed_lateness_ms=120_000))
    decider = Decider()
    alerts: list[AlertEvent] = []
    requests: list[RollbackRequest] = []
    per_hour = max(rows // 24, 1)
    incident_file = root / "credit_hour_09.parquet"
    for hours, incident, label in SCENARIO:
        print(f"   hours {hours.start:02d}-{hours.stop - 1:02d}: {label}")
        for hour in hours:
            batch = credit_applications(rng, per_hour, incident)
            if hour == 9:
                write_parquet(batch, incident_file)
            offsets = np.sort(rng.integers(0, HOUR_MS, per_hour))
            jitter = rng.integers(-60_000, 1, per_hour)  # up to a minute out of order
            times = START_MS + hour * HOUR_MS + np.clip(offsets + jitter, 0, HOUR_MS - 1)
            update = monitor.update(times, batch)
            _follow(update.reports, decider, alerts, requests)
    _follow(monitor.flush(), decider, alerts, requests)

    print("\n== 3. what fired, and why")
    for a in alerts:
        top = max(a.breaches, key=lambda b: b.value / b.threshold if b.threshold else b.value, default=None)
        why = f"{top.metric}={top.value:.3g} (threshold {top.threshold:g})" if top else "back to ok"
        print(f"   {_hour(a.window.start_ms)}  {a.kind:9s} {a.severity:8s} {a.subject:16s} {why}")
    print("\n== 4. rollback requests (the policy is in dry-run: nothing was sent)")
    for r in requests:
        guard = f" by {r.suppressed_by}" if r.suppressed_by else ""
        print(f"   {_hour(r.window.start_ms)}  {r.model} v{r.model_version}: {r.status}{guard} "
              f"({r.subject} {r.severity}), idempotency key {r.request_id[:12]}…")

    print(f"\n== 5. the batch contract a CI gate calls: driftline evaluate on hour 09 ({incident_file})")
    code = cli_main(["evaluate", "--reference", str(profile_path), "--data", str(incident_file)])
    print(f"   exit code {code} (0 ok, 1 critical, 2 bad input)")
    print(f"\nfiles kept in {root}")
    return 0


def _follow(reports: list, decider: Decider, alerts: list[AlertEvent], requests: list[RollbackRequest]) -> None:
    for report in reports:
        events, asked = decider.step(report.ref, report.assessment)
        alerts.extend(events)
        requests.extend(asked)
        drifted = [name for name, f in report.assessment.features.items() if f.severity != "ok"]
        print(f"   window {_hour(report.window.start_ms)}  rows={report.window.rows:6d}  "
              f"worst={report.assessment.severity:8s} drifted={','.join(drifted) or '-'}"
              + "".join(f"\n      ALERT {e.kind} {e.subject} ({e.severity})" for e in events))


def _hour(ms: int) -> str:
    return f"{(ms - START_MS) // HOUR_MS:02d}:00"
