"""``driftline replay``: files of scoring events through the same pipeline the Kafka service runs.

decode (JSONL, Avro container, Parquet) → join → engine → decide → the store sink. Files that cannot be read at
all (missing, empty, not of their type) are refused before anything starts (:class:`InvalidInput`). Bad
inputs inside them are counted, written one per line to the run's dead-letter file with their line
number and reason (``connectors/dead_letters.py``), and never stop the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from driftline.config import Config
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.dead_letters import DeadLetterFile, dead_letter_path
from driftline.connectors.sources import check_input, read_events
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.events import BadEvent
from driftline.outcome import StepResult, Totals
from driftline.pipeline import Pipeline
from driftline.protocols import Sink
from driftline.registry import ModelRegistry
from driftline.sinks import StoreSink

MAX_BAD_KEPT = 1_000


@dataclass
class ReplayOutcome:
    totals: Totals
    alerts: list[AlertEvent] = field(default_factory=list)
    rollbacks: list[RollbackRequest] = field(default_factory=list)
    detections: list[ChangeDetection] = field(default_factory=list)
    """Early warnings of the score change watch, in the order they were decided."""
    bad: list[BadEvent] = field(default_factory=list)
    """The first ``MAX_BAD_KEPT`` bad inputs (all are counted in ``totals.bad`` and written to ``dead_letters``)."""
    dead_letters: Path | None = None
    """The dead-letter file with every bad input, one JSON object a line; None when there was none."""
    dead_letter_count: int = 0

    @property
    def critical(self) -> bool:
        """Whether an alert fired or escalated at critical severity (``driftline replay`` then exits 1)."""
        return any(a.severity == "critical" and a.kind != "resolved" for a in self.alerts)


def open_store(config: Config) -> ClickHouseStore:
    store = ClickHouseStore(config.store.dsn, config.store.database, config.store.ttl_days,
                            config.store.audit_ttl_days)
    store.apply_schema()
    return store


def replay(config: Config, paths: Sequence[str | Path], store: ClickHouseStore | None = None,
           on_step: Callable[[Path, StepResult, Totals], None] | None = None, chunk_size: int = 20_000,
           dead_letters: str | Path | None = None) -> ReplayOutcome:
    """Replay ``paths`` in order. ``dead_letters``: the file for the bad inputs (default
    :func:`~driftline.connectors.dead_letters.dead_letter_path`, beside the store; made only if needed).
    Raises :class:`~driftline.errors.InvalidInput` for a file that cannot be read at all, and
    :class:`~driftline.errors.ProfileError` for a reference profile that cannot be used, before
    the store is opened (a bad configuration leaves nothing behind)."""
    for path in paths:
        check_input(path)
    registry = ModelRegistry(config)
    letters = DeadLetterFile(Path(dead_letters) if dead_letters is not None else dead_letter_path(config, Path.cwd()),
                             paths)
    owned = store is None
    store = store if store is not None else open_store(config)
    try:
        return _replay(config, paths, StoreSink(store), on_step, chunk_size, letters, registry)
    finally:
        letters.close()
        if owned:
            store.close()


def _replay(config: Config, paths: Sequence[str | Path], sink: Sink,
            on_step: Callable[[Path, StepResult, Totals], None] | None, chunk_size: int,
            letters: DeadLetterFile, registry: ModelRegistry) -> ReplayOutcome:
    pipeline = Pipeline(config, registry)
    outcome = ReplayOutcome(pipeline.totals)

    def collect(path: Path, step: StepResult) -> None:
        sink.write(step)
        outcome.alerts.extend(step.alerts)
        outcome.rollbacks.extend(step.rollbacks)
        outcome.detections.extend(step.detections)
        outcome.bad.extend(step.bad[: max(MAX_BAD_KEPT - len(outcome.bad), 0)])
        letters.write(step.bad)
        outcome.dead_letters, outcome.dead_letter_count = letters.written, letters.count
        if on_step is not None:
            on_step(path, step, pipeline.totals)

    # Each file is a source of its own for the join, read to its end before the next starts, as a Kafka
    # partition is: a file of requests replayed before the file of their responses waits for them.
    sources = [f"file {i}[0]" for i in range(len(paths))]
    for i, path in enumerate(map(Path, paths)):
        pipeline.hold_join(frozenset(sources[i:i + 1]), frozenset(sources[i + 1:]), frozenset(sources))
        for events, bad in read_events(path, chunk_size):
            events.source = np.full(len(events), sources[i], dtype=object)
            collect(path, pipeline.process(events, bad))
    collect(Path("(end of input)"), pipeline.finish())
    return outcome
