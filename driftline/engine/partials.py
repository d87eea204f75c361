"""Partial windows: what one partition contributes to a model's windows, and how contributions merge.

Stage 1, :class:`PartitionPanes` (one per model version and partition), hands on final panes as
:class:`PanePartial`; stage 2, :class:`PartialMerge` (one per model version), adds them into windows.
The semantics that make it exact: docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import Counts
from driftline.engine.features import FeatureSet
from driftline.engine.window import WindowState
from driftline.engine.window_spec import ClosedWindow, LateCount, WindowSpec, window_id

NO_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True)
class PanePartial:
    """The final count vector of one pane of one partition."""

    pane: int
    """The pane's index: its start is ``pane * hop``."""
    counts: Counts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PanePartial) and self.pane == other.pane and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class PartitionUpdate:
    """What one batch of a partition produced: the panes it made final, the late events per pane, and
    the partition's largest event time so far (None before its first event)."""

    partials: list[PanePartial]
    late: dict[int, int]
    mark: int | None
    accepted_rows: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))


class PartitionPanes:
    """Stage 1: the open panes of one partition's events for one model version."""

    def __init__(self, features: FeatureSet, spec: WindowSpec) -> None:
        self.features = features
        self.spec = spec
        self.panes: dict[int, Counts] = {}
        self.mark: int | None = None
        """The largest event time seen in the partition."""

    def update(self, event_time_ms: NDArray[np.int64], columns: Mapping[str, NDArray[Any]]) -> PartitionUpdate:
        """Add one batch of the partition's events, in the partition's order."""
        times = np.asarray(event_time_ms, dtype=np.int64)
        if not len(times):
            return PartitionUpdate([], {}, self.mark)
        hop, lateness = self.spec.hop, self.spec.allowed_lateness_ms
        running = np.maximum.accumulate(times)
        before = np.empty_like(times)  # the largest time before each event, in this partition
        before[0] = NO_TIME if self.mark is None else self.mark
        if len(times) > 1:
            before[1:] = np.maximum(running[:-1], before[0])
        panes = np.floor_divide(times, hop)
        late = (panes + 1) * hop + lateness <= before
        accepted = np.flatnonzero(~late)
        self._count(panes, accepted, columns)
        newest = int(running[-1])
        self.mark = newest if self.mark is None else max(self.mark, newest)
        late_panes, late_counts = np.unique(panes[late], return_counts=True)
        return PartitionUpdate(self._final(), dict(zip(late_panes.tolist(), late_counts.tolist(), strict=True)),
                               self.mark, accepted)

    def flush(self) -> list[PanePartial]:
        """End of input: every open pane is final."""
        partials = [PanePartial(pane, self.panes.pop(pane)) for pane in sorted(self.panes)]
        return partials

    def _count(self, panes: NDArray[np.int64], accepted: NDArray[np.intp], columns: Mapping[str, NDArray[Any]]) -> None:
        if not len(accepted):
            return
        order = accepted[np.argsort(panes[accepted], kind="stable")]
        unique, starts = np.unique(panes[order], return_index=True)
        bounds = np.append(starts, len(order))
        for pane, lo, hi in zip(unique.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            counts = self.features.count(columns, len(panes), index=order[lo:hi])
            current = self.panes.get(pane)
            self.panes[pane] = counts if current is None else current + counts

    def _final(self) -> list[PanePartial]:
        assert self.mark is not None
        hop, lateness = self.spec.hop, self.spec.allowed_lateness_ms
        final = sorted(pane for pane in self.panes if (pane + 1) * hop + lateness <= self.mark)
        return [PanePartial(pane, self.panes.pop(pane)) for pane in final]

    def snapshot(self) -> dict[str, Any]:
        return {"mark": self.mark, "panes": {str(p): c.tolist() for p, c in sorted(self.panes.items())}}

    def restore(self, data: Mapping[str, Any]) -> None:
        self.mark = data["mark"]
        self.panes = {int(p): self.features.upgrade(np.asarray(c, dtype=np.int64)) for p, c in data["panes"].items()}


class PartialMerge:
    """Stage 2: the partitions' partials of one model version, summed into windows."""

    def __init__(self, features: FeatureSet, spec: WindowSpec) -> None:
        self.spec = spec
        self.state = WindowState(features, spec)
        self.received: set[tuple[str, int]] = set()
        """(partition, pane) of the partials added to panes still open here."""
        self.refused: dict[int, int] = {}
        """Pane → rows of the partials the last :meth:`add` refused: they would have left more than
        ``max_open_panes`` panes open (a partition far ahead of one that holds the watermark)."""

    def add(self, source: str, partials: list[PanePartial], mark: int | None) -> list[ClosedWindow]:
        """One partition's final panes and its largest event time; returns the windows that closed."""
        watermark = self.state.watermark
        opened = []
        for partial in partials:
            spent = watermark is not None and partial.pane * self.spec.hop + self.spec.size_ms <= watermark
            if (source, partial.pane) in self.received or spent:  # delivered before
                continue
            self.received.add((source, partial.pane))
            if partial.pane not in self.state.panes:
                opened.append(partial.pane)
            # (a stage 1 of the release before invalid counts sends shorter vectors: read as zero invalid)
            self.state.add_pane(partial.pane, self.state.features.upgrade(partial.counts).copy())
        closed = self.state.set_mark(source, mark) if mark is not None else []
        self.refused = self._bound(opened)
        self._forget()
        return closed

    def _bound(self, opened: list[int]) -> dict[int, int]:
        """``windows.max_open_panes``: the panes this call opened that leave more than that open (the newest
        go first, as the single stage refuses the newest events), taken out again; pane → its rows."""
        excess = len(self.state.panes) - self.spec.pane_limit
        refused = {}
        for pane in sorted((p for p in opened if p in self.state.panes), reverse=True)[:max(excess, 0)]:
            refused[pane] = int(self.state.panes.pop(pane)[0])
        return refused

    def hold(self, sources: frozenset[str] | None) -> list[ClosedWindow]:
        """The partitions to wait for (None: every partition heard from); returns what closes."""
        closed = self.state.hold(sources)
        self._forget()
        return closed

    def late_counts(self, late: Mapping[int, int]) -> list[LateCount]:
        """Late events per pane → per window holding the pane (each lost the event)."""
        per_window: dict[int, int] = {}
        for pane, n in late.items():
            for start_pane in range(pane - self.spec.panes_per_window + 1, pane + 1):
                per_window[start_pane] = per_window.get(start_pane, 0) + n
        out = []
        for start_pane in sorted(per_window):
            start, end = self.state.window_bounds(start_pane)
            out.append(LateCount(window_id(self.state.model, self.state.model_version, start, end), start, end,
                                 per_window[start_pane]))
        return out

    def flush(self) -> list[ClosedWindow]:
        return self.state.flush()

    def snapshot(self) -> dict[str, Any]:
        """Open panes, the partitions' marks and the partials already added, as plain JSON-ready data."""
        return {"window_state": self.state.snapshot(), "received": sorted([s, p] for s, p in self.received)}

    def restore(self, data: Mapping[str, Any]) -> None:
        self.state = WindowState.restore(self.state.features, data["window_state"])
        self.received = {(str(s), int(p)) for s, p in data["received"]}

    def _forget(self) -> None:
        self.received = {(s, p) for s, p in self.received if p in self.state.panes}
