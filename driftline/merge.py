"""Stage 2 of the two-stage service (``kafka.stages: two``): partials records added up into windows,
evaluated and decided; the outcome goes to the sinks.

One :class:`MergeShard` per owned partition of the partials topic; redelivered records change nothing,
so a shard restored from its checkpoint gives the same rows (docs/scaling.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from driftline.engine.monitor import ModelMonitor
from driftline.engine.partials import PartialMerge
from driftline.keys import ModelKey
from driftline.outcome import StepResult, Totals
from driftline.pipeline import MAX_LATE_WINDOWS, LateTally, decide
from driftline.registry import ModelRegistry, deciders_snapshot, restore_deciders
from driftline.stage import Key, PartialRecord

log = logging.getLogger("driftline.two_stage")


class MergeShard:
    """Stage 2 for the model versions of one partials partition."""

    def __init__(self, registry: ModelRegistry, expected: frozenset[str] | None) -> None:
        self.registry = registry
        self.expected = expected
        """The source partitions a window waits for (None: every one heard from)."""
        self.merges: dict[Key, PartialMerge] = {}
        self.monitors: dict[Key, ModelMonitor] = {}
        self.deciders = registry.deciders()
        self.late = LateTally()
        self.late_seen: dict[tuple[str, str, str, int], int] = {}
        """(model, version, source partition, pane) → the largest running late count received."""
        self.refused = 0
        """Events refused by ``windows.max_open_panes`` since the last :meth:`decide` (counted late)."""

    def add(self, record: PartialRecord, step: StepResult) -> None:
        """One partials record: its panes added, its mark raised; what closes, and the running late counts
        (of windows that may have closed long ago), go into ``step``."""
        key = (record.model, record.version)
        merge = self._merge(key)
        if merge is None:
            return
        closed = merge.add(record.partition, record.panes, record.mark)
        step.reports.extend(self.monitors[key].evaluate(window) for window in closed)
        new: dict[int, int] = dict(merge.refused)  # (refused by the bound on open panes: lost to their windows)
        if merge.refused:
            self.refused += sum(merge.refused.values())
            log.warning("%s %s: %d events of %s refused (windows.max_open_panes: %d panes open while a "
                        "partition holds the watermark); counted late for their windows", *key,
                        sum(merge.refused.values()), record.partition, self.registry.spec.pane_limit)
        for pane, running in record.late.items():
            seen = self.late_seen.get((*key, record.partition, pane), 0)
            if running > seen:
                new[pane] = new.get(pane, 0) + running - seen
                self.late_seen.pop((*key, record.partition, pane), None)
                self.late_seen[(*key, record.partition, pane)] = running
        while len(self.late_seen) > MAX_LATE_WINDOWS:
            del self.late_seen[next(iter(self.late_seen))]
        if new:
            step.late.append((key[0], key[1], self.late.running(key, merge.late_counts(new))))

    def decide(self, step: StepResult, totals: Totals) -> None:
        """The windows ``add`` closed, through this shard's deciders."""
        totals.late += self.refused
        self.refused = 0
        decide(step, self.deciders, {key: m.features for key, m in self.monitors.items()}, totals)

    def _merge(self, key: Key) -> PartialMerge | None:
        merge = self.merges.get(key)
        if merge is None:
            if key not in self.registry.profiles:  # (stage 1 refuses unknown models; one since removed is ignored)
                return None
            monitor = self.monitors[key] = self.registry.monitor(key, watch_score=False)
            merge = self.merges[key] = PartialMerge(monitor.features, self.registry.spec)
            merge.hold(self.expected)
        return merge

    def snapshot(self) -> dict[str, Any]:
        return {
            "models": {ModelKey(*key).encode(): {"merge": merge.snapshot(), "monitor": self.monitors[key].snapshot()}
                       for key, merge in self.merges.items()},
            "decider": deciders_snapshot(self.deciders),
            "late": self.late.snapshot(),
            "late_seen": [[*k, n] for k, n in self.late_seen.items()],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        for name, model in data["models"].items():
            key = ModelKey.decode(name)
            merge = self._merge(key)
            if merge is None:
                continue
            merge.restore(model["merge"])
            merge.hold(self.expected)
            self.monitors[key].restore(model["monitor"])
        restore_deciders(self.deciders, data.get("decider"))
        self.late.restore(data["late"])
        self.late_seen = {(m, v, s, int(p)): int(n) for m, v, s, p, n in data["late_seen"]}
