"""``driftline replay``: files of scoring events through the same pipeline the Kafka service runs.

decode (JSONL, Avro container, Parquet) → join → engine → decide → persist. Bad inputs are counted and
reported with their line number and reason; they never stop the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from driftline.config import Config
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.sources import read_events
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.events import BadEvent
from driftline.pipeline import Pipeline, StepResult, Totals

MAX_BAD_KEPT = 1_000


@dataclass
class ReplayOutcome:
    totals: Totals
    alerts: list[AlertEvent] = field(default_factory=list)
    rollbacks: list[RollbackRequest] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)
    """The first ``MAX_BAD_KEPT`` bad inputs (all are counted in ``totals.bad``)."""


def open_store(config: Config) -> ClickHouseStore:
    store = ClickHouseStore(config.store.dsn, config.store.database, config.store.ttl_days,
                            config.store.audit_ttl_days)
    store.apply_schema()
    return store


def replay(config: Config, paths: Sequence[str | Path], store: ClickHouseStore | None = None,
           on_step: Callable[[Path, StepResult, Totals], None] | None = None, chunk_size: int = 20_000) -> ReplayOutcome:
    owned = store is None
    store = store if store is not None else open_store(config)
    try:
        return _replay(config, paths, store, on_step, chunk_size)
    finally:
        if owned:
            store.close()


def _replay(config: Config, paths: Sequence[str | Path], store: ClickHouseStore,
            on_step: Callable[[Path, StepResult, Totals], None] | None, chunk_size: int) -> ReplayOutcome:
    pipeline = Pipeline(config, store)
    outcome = ReplayOutcome(pipeline.totals)

    def collect(path: Path, step: StepResult) -> None:
        outcome.alerts.extend(step.alerts)
        outcome.rollbacks.extend(step.rollbacks)
        outcome.bad.extend(step.bad[: max(MAX_BAD_KEPT - len(outcome.bad), 0)])
        if on_step is not None:
            on_step(path, step, pipeline.totals)

    for path in map(Path, paths):
        for events, bad in read_events(path, chunk_size):
            collect(path, pipeline.process(events, bad))
    collect(Path("(end of input)"), pipeline.finish())
    return outcome
