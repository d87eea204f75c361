"""Stage 2 of the two-stage service (``kafka.stages: two``): partials records added up into windows,
evaluated, decided, persisted.

One :class:`MergeShard` per partition of the partials topic that this member's ``<group>.merge``
consumer owns; it holds, for each model version whose records that partition carries (the record key
is ``model|version``), a :class:`~driftline.engine.partials.PartialMerge`, the model's
:class:`~driftline.engine.monitor.ModelMonitor` (evaluation against the reference and the previous
window), and the deciders (one :class:`~driftline.engine.policy.DeciderState` per shard: the fleet
circuit breaker counts the models of one partials partition). A window closes when every partition of
the subscribed scoring topics has passed it (``expected``, from the topics' metadata).

Redelivered records change nothing: a pane already added is recognised by (partition, pane), a mark
only moves forward, and late counts are running counts per (partition, pane) of which the largest seen
is kept. So a shard restored from its checkpoint and fed its partials partition again from the
checkpoint's offset writes the same rows (every store insert is idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline.config import Config
from driftline.engine.monitor import ModelMonitor
from driftline.engine.partials import PartialMerge
from driftline.engine.policy import Decider, DeciderState
from driftline.engine.profile import ReferenceProfile
from driftline.engine.window_spec import WindowSpec
from driftline.keys import ModelKey
from driftline.outcome import StepResult, Totals
from driftline.pipeline import MAX_LATE_WINDOWS, LateTally, assessment_policy, decide_and_persist, decision_policies
from driftline.protocols import Store
from driftline.stage import Key, PartialRecord


class MergeShard:
    """Stage 2 for the model versions of one partials partition."""

    def __init__(self, config: Config, profiles: Mapping[Key, ReferenceProfile], spec: WindowSpec,
                 expected: frozenset[str] | None) -> None:
        self.config = config
        self.profiles = profiles
        self.spec = spec
        self.expected = expected
        """The source partitions a window waits for (None: every one heard from)."""
        self.merges: dict[Key, PartialMerge] = {}
        self.monitors: dict[Key, ModelMonitor] = {}
        state = DeciderState()
        self.deciders = {model.name: Decider(*decision_policies(config, model), state=state) for model in config.models}
        self.late = LateTally()
        self.late_seen: dict[tuple[str, str, str, int], int] = {}
        """(model, version, source partition, pane) → the largest running late count received."""

    def add(self, record: PartialRecord, step: StepResult, store: Store | None) -> None:
        """One partials record: its panes added, its mark raised; what closes goes into ``step``. Late counts
        are written to the store here (their windows may have closed long ago)."""
        key = (record.model, record.version)
        merge = self._merge(key)
        if merge is None:
            return
        closed = merge.add(record.partition, record.panes, record.mark)
        step.reports.extend(self.monitors[key].evaluate(window) for window in closed)
        new: dict[int, int] = {}
        for pane, running in record.late.items():
            seen = self.late_seen.get((*key, record.partition, pane), 0)
            if running > seen:
                new[pane] = running - seen
                self.late_seen.pop((*key, record.partition, pane), None)
                self.late_seen[(*key, record.partition, pane)] = running
        while len(self.late_seen) > MAX_LATE_WINDOWS:
            del self.late_seen[next(iter(self.late_seen))]
        if new and store is not None:
            store.write_late(key[0], key[1], self.late.running(key, merge.late_counts(new)))

    def persist(self, step: StepResult, totals: Totals, store: Store | None) -> None:
        decide_and_persist(step, self.deciders, {key: m.features for key, m in self.monitors.items()}, totals, store)

    def _merge(self, key: Key) -> PartialMerge | None:
        merge = self.merges.get(key)
        if merge is None:
            profile = self.profiles.get(key)
            if profile is None:  # (stage 1 refuses unknown models; a record of one since removed is ignored)
                return None
            model = next(m for m in self.config.models if m.name == key[0])
            monitor = self.monitors[key] = ModelMonitor(profile, self.spec, assessment_policy(model),
                                                        watch_score=False)
            merge = self.merges[key] = PartialMerge(monitor.features, self.spec)
            merge.hold(self.expected)
        return merge

    def snapshot(self) -> dict[str, Any]:
        decider = next(iter(self.deciders.values()), None)
        return {
            "models": {ModelKey(*key).encode(): {"merge": merge.snapshot(), "monitor": self.monitors[key].snapshot()}
                       for key, merge in self.merges.items()},
            "decider": decider.state.to_dict() if decider is not None else None,
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
        if data.get("decider") is not None:
            state = DeciderState.from_dict(data["decider"])
            for decider in self.deciders.values():
                decider.state = state
        self.late.restore(data["late"])
        self.late_seen = {(m, v, s, int(p)): int(n) for m, v, s, p, n in data["late_seen"]}
