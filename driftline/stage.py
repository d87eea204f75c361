"""Stage 1 of the two-stage service (``kafka.stages: two``): each source partition's events counted
into partial windows, and the partials records that carry them to stage 2 (:mod:`driftline.merge`).

Duplicates (a request id seen again in its partition) are dropped and reported; the state is kept
per source partition (:meth:`StageOne.snapshot` / :meth:`StageOne.restore`). The protocol and the
partials record's wire format: docs/scaling.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.features import FeatureSet
from driftline.engine.partials import PanePartial, PartitionPanes
from driftline.events import COMBINED, BadEvent, Events, refuse_future
from driftline.events.join import DUPLICATE_REASON, Joiner
from driftline.grouping import model_groups
from driftline.keys import ModelKey
from driftline.registry import ModelRegistry

LATE_PANES = 10_000
"""Panes per (model version, partition) whose running late count is remembered (the oldest go first)."""
_FEW_RUNS = 256
"""Up to this many runs of one partition in a batch, its rows are grouped by runs rather than a sort."""

Key = tuple[str, str]


@dataclass
class PartialRecord:
    """What one batch of one partition contributed to one model version's windows."""

    model: str
    version: str
    partition: str
    """The source partition, ``topic[p]``."""
    mark: int | None
    panes: list[PanePartial]
    late: dict[int, int] = field(default_factory=dict)
    """Pane → running count of the partition's late events for it (panes with a late event in the batch)."""

    @property
    def key(self) -> bytes:
        return f"{self.model}|{self.version}".encode()

    def encode(self) -> bytes:
        return json.dumps({
            "v": 1, "model": self.model, "version": self.version, "partition": self.partition, "mark": self.mark,
            "panes": [{"pane": p.pane, "counts": base64.b64encode(p.counts.astype("<i8").tobytes()).decode()}
                      for p in self.panes],
            "late": {str(pane): n for pane, n in sorted(self.late.items())},
        }, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> PartialRecord:
        data = json.loads(value)
        if data.get("v") != 1:
            raise ValueError(f"partials record version {data.get('v')!r} is not 1")
        return cls(str(data["model"]), str(data["version"]), str(data["partition"]), data["mark"],
                   [PanePartial(int(p["pane"]), np.frombuffer(base64.b64decode(p["counts"]), dtype="<i8")
                                .astype(np.int64)) for p in data["panes"]],
                   {int(pane): int(n) for pane, n in data["late"].items()})


@dataclass
class StageOneResult:
    records: list[PartialRecord] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)
    accepted: int = 0
    late: int = 0
    duplicates: int = 0


class StageOne:
    """The partial windows of the source partitions this member owns."""

    def __init__(self, registry: ModelRegistry, partitions: int = 1) -> None:
        self.features: dict[Key, FeatureSet] = {key: registry.features(key) for key in registry.profiles}
        self.spec = registry.spec
        self.max_future_ms = registry.config.windows.max_future
        self.join = registry.config.join
        self.ids_per_partition = max(1, self.join.max_pending // max(1, partitions))
        """How many recent request ids each partition remembers: ``join.max_pending`` over ``partitions``."""
        self.recent: dict[str, Joiner] = {}
        """Source partition → its recent request ids (a joiner that only ever sees combined events)."""
        self.panes: dict[str, dict[Key, PartitionPanes]] = {}
        """Source partition → model version → its open panes."""
        self.late: dict[str, dict[Key, dict[int, int]]] = {}
        """Source partition → model version → pane → running count of late events."""

    def count(self, events: Events, now_ms: int | None) -> StageOneResult:
        """One batch (in message order; ``events.source`` names each event's partition)."""
        result = StageOneResult()
        events = self._first_deliveries(self._usable(events, now_ms, result), result)
        profiles = {key: features.profile for key, features in self.features.items()}
        for key, _, group, columns in model_groups(events, profiles, result.bad):
            for partition, part in _by_partition(group.source):
                self._count(key, partition, group.event_time[part], {k: v[part] for k, v in columns.items()},
                            result)
        return result

    def _count(self, key: Key, partition: str, times: NDArray[np.int64], columns: Mapping[str, NDArray[Any]],
               result: StageOneResult) -> None:
        panes = self.panes.setdefault(partition, {})
        stage = panes.get(key)
        if stage is None:
            stage = panes[key] = PartitionPanes(self.features[key], self.spec)
        update = stage.update(times, columns)
        late = self.late.setdefault(partition, {}).setdefault(key, {})
        for pane, n in update.late.items():
            late[pane] = late.pop(pane, 0) + n
        while len(late) > LATE_PANES:
            del late[min(late)]
        result.accepted += len(update.accepted_rows)
        result.late += sum(update.late.values())
        result.records.append(PartialRecord(key[0], key[1], partition, update.mark, update.partials,
                                            {pane: late[pane] for pane in update.late if pane in late}))

    def _usable(self, events: Events, now_ms: int | None, result: StageOneResult) -> Events:
        """Combined events within ``max_future`` of the clock; the others as bad events."""
        if not len(events):
            return events
        halves = events.kind != COMBINED
        result.bad.extend(events.bad(halves, "join", "Unsupported", "a request or response half: kafka.stages "
                                     "two counts combined events only (the join needs stages: single for now)"))
        if halves.any():
            events = events.take(np.flatnonzero(~halves))
        if self.max_future_ms is not None and now_ms is not None:
            events, ahead = refuse_future(events, now_ms, self.max_future_ms)
            result.bad.extend(ahead)
        return events

    def _first_deliveries(self, events: Events, result: StageOneResult) -> Events:
        """The events whose request id their partition has not carried recently; the others as duplicates."""
        if not len(events):
            return events
        kept = []
        for partition, rows in _by_partition(events.source):
            pushed = self._recent(partition).push(events.take(rows))
            kept.append(pushed.joined)
            result.duplicates += len(pushed.duplicates)
            result.bad.extend(pushed.duplicates.bad(None, "join", "Duplicate", DUPLICATE_REASON))
        return kept[0] if len(kept) == 1 else Events.concat(kept)

    def _recent(self, partition: str) -> Joiner:
        recent = self.recent.get(partition)
        if recent is None:
            recent = self.recent[partition] = Joiner(self.join.max_wait, self.ids_per_partition)
        return recent

    def snapshot(self, partition: str) -> dict[str, Any]:
        """One source partition's state, JSON-ready."""
        recent = self.recent.get(partition)
        return {"panes": {ModelKey(*key).encode(): stage.snapshot() for key, stage in self.panes.get(partition, {}).items()},
                "late": {ModelKey(*key).encode(): {str(p): n for p, n in late.items()}
                         for key, late in self.late.get(partition, {}).items()},
                "recent": recent.snapshot() if recent is not None else None}

    def restore(self, partition: str, data: Mapping[str, Any] | None) -> None:
        """A source partition's state as a checkpoint left it (None: as new)."""
        self.drop(partition)
        if data is None:
            return
        for name, snapshot in data["panes"].items():
            key = ModelKey.decode(name)
            if key in self.features:  # a model version since removed from the configuration is forgotten
                stage = self.panes.setdefault(partition, {})[key] = PartitionPanes(self.features[key], self.spec)
                stage.restore(snapshot)
        for name, late in data["late"].items():
            key = ModelKey.decode(name)
            self.late.setdefault(partition, {})[key] = {int(p): int(n) for p, n in late.items()}
        if data.get("recent") is not None:  # (checkpoints written before duplicates were dropped have none)
            self._recent(partition).restore(data["recent"])

    def drop(self, partition: str) -> None:
        """Forget a partition (handed to another member)."""
        self.panes.pop(partition, None)
        self.late.pop(partition, None)
        self.recent.pop(partition, None)


def _by_partition(sources: NDArray[Any]) -> list[tuple[str, NDArray[np.intp]]]:
    """Row indices of each partition, in message order."""
    if not len(sources):
        return []
    names = np.asarray(sources)
    starts = np.flatnonzero(np.concatenate(([True], names[1:] != names[:-1])))
    if len(starts) <= _FEW_RUNS:  # a consume call's messages come a partition at a time: by runs, no sort
        ends = np.append(starts[1:], len(names))
        runs: dict[str, list[NDArray[np.intp]]] = {}
        for name, lo, hi in zip(names[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
            runs.setdefault(str(name), []).append(np.arange(lo, hi))
        return [(name, parts[0] if len(parts) == 1 else np.concatenate(parts)) for name, parts in sorted(runs.items())]
    unique, inverse = np.unique(names.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
    return [(str(name), order[bounds[i]:bounds[i + 1]]) for i, name in enumerate(unique.tolist())]
