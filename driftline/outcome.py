"""What processing returns: :class:`StepResult`, the outcome of one batch (or of a hold, or the end of
input) — windows, late counts, alerts, rollback requests, bad events, change detections, version
switches —, the :class:`AuditEntry` rows they make, and :class:`Totals`, the running counts. Plain
values, no I/O: processing makes them, the sinks (:mod:`driftline.sinks`) write them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from driftline.engine.changewatch import ChangeDetection
from driftline.engine.features import FeatureSet
from driftline.engine.ids import digest
from driftline.engine.monitor import WindowReport
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.engine.versions import VersionChange
from driftline.engine.window_spec import LateCount
from driftline.events import BadEvent


@dataclass
class StepResult:
    reports: list[WindowReport] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    rollbacks: list[RollbackRequest] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)
    detections: list[ChangeDetection] = field(default_factory=list)
    """Early warnings of the score change watch (each names its model, version and event time)."""
    presence: list[tuple[str, str, NDArray[np.int64]]] = field(default_factory=list)
    """(model, version, accepted event times) of each model version the batch fed."""
    version_changes: list[VersionChange] = field(default_factory=list)
    """Versions that appeared or disappeared (:mod:`driftline.engine.versions`)."""
    late: list[tuple[str, str, list[LateCount]]] = field(default_factory=list)
    """(model, version, the running count of late events of each window that got one)."""
    features: dict[tuple[str, str], FeatureSet] = field(default_factory=dict)
    """The feature set of each model version with a window in ``reports`` (how its rows are laid out)."""

    def absorb(self, other: StepResult) -> None:
        """Add ``other``'s outcome to this step's (a hold's or a shard's into the batch's)."""
        for f in fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, dict):
                mine.update(getattr(other, f.name))
            else:
                mine += getattr(other, f.name)


@dataclass
class Totals:
    events: int = 0
    accepted: int = 0
    windows: int = 0
    late: int = 0
    alerts: int = 0
    rollbacks: int = 0
    version_changes: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    """Per stage: decode, validate, join, engine."""
    unmatched_requests: int = 0
    unmatched_responses: int = 0
    duplicates: int = 0

    def since(self, earlier: Totals) -> Totals:
        """What was counted after ``earlier`` (a copy of these totals taken then)."""
        return Totals(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)})

    def add(self, more: Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(more, f.name))


@dataclass(frozen=True)
class AuditEntry:
    action: str
    """What happened: ``window.closed``, ``alert.firing``, ``rollback.dry_run``, ``config.loaded``, …"""
    event_time_ms: int
    model: str = ""
    model_version: str = ""
    window_id: str = ""
    subject_id: str = ""
    details: str = "{}"
    reference_hash: str = ""
    actor: str = "driftline"

    @property
    def entry_id(self) -> str:
        return digest(self.action, self.model, self.model_version, self.window_id, self.subject_id, self.details)

