"""Event-time windows of one (model, version): panes, a watermark, allowed lateness.

:class:`WindowState` counts events into panes (one hop of event time), closes tumbling or hopping
windows as the watermark passes them, counts late events, bounds what it keeps, and merges with
another state. The semantics: docs/engine.md, *Windows*.

>>> import numpy as np
>>> from driftline.engine.profile import build_profile
>>> from driftline.engine.features import FeatureSet
>>> profile = build_profile({"x": np.arange(100.0)}, model="m", model_version="1")
>>> state = WindowState(FeatureSet(profile), WindowSpec(size_ms=60_000))
>>> result = state.update(np.array([1_000, 59_000, 61_000]), {"x": np.array([1.0, 2.0, 3.0])})
>>> [(w.start_ms, w.end_ms, w.rows) for w in result.closed]
[(0, 60000, 2)]
>>> [(w.start_ms, w.rows) for w in state.flush()]
[(60000, 1)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import Counts
from driftline.engine.features import FeatureSet
from driftline.engine.window_spec import ClosedWindow, LateCount, UpdateResult, WindowSpec, window_id
from driftline.errors import InvalidInput

__all__ = ["ClosedWindow", "LateCount", "UpdateResult", "WindowSpec", "WindowState", "window_id"]


_FEW_RUNS = 256
"""Beyond this many runs of one source in a batch, per-source marks are found by a sort of the names."""


def _marked(marks: Mapping[str, int], times: NDArray[np.int64], rows: NDArray[np.intp],
            sources: NDArray[Any] | None) -> dict[str, int]:
    """``marks`` updated with the newest time per source among ``rows``."""
    updated = dict(marks)
    if len(rows) == 0:
        return updated
    if sources is None:
        updated[""] = max(int(times[rows].max()), updated.get("", int(times[rows].max())))
        return updated
    # A batch's events come a partition at a time: the newest time of each run of one source, then of
    # each source (a sort of the names would cost more than the few runs).
    names = np.asarray(sources)[rows]
    starts = np.flatnonzero(np.concatenate(([True], names[1:] != names[:-1])))
    run_names, newest = names[starts], np.maximum.reduceat(times[rows], starts)
    if len(starts) > _FEW_RUNS:  # interleaved event by event: per source, by a sort of the runs' names
        distinct, inverse = np.unique(run_names.astype(str), return_inverse=True)
        per_source = np.full(len(distinct), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(per_source, inverse, newest)
        run_names, newest = distinct, per_source
    for name, mark in zip(run_names.tolist(), newest.tolist(), strict=True):
        name = str(name)
        updated[name] = max(mark, updated.get(name, mark))
    return updated



class WindowState:
    """Open panes and the watermark of one (model, version)."""

    def __init__(self, features: FeatureSet, spec: WindowSpec) -> None:
        self.features = features
        self.spec = spec
        self.panes: dict[int, Counts] = {}
        """Pane index (event time // hop) → count vector."""
        self.watermark: int | None = None
        self.source_marks: dict[str, int] = {}
        """Newest accepted event time per source (a Kafka partition; ``""`` when the caller names none)."""
        self.holding: frozenset[str] | None = None
        """The sources the watermark waits for (None: every source seen). See :meth:`hold`."""
        self.late_events = 0
        self.rejected_events = 0
        self._running: tuple[int, Counts] | None = None
        """(start pane of the next window to close, the sum of its panes so far): derived, not state."""

    @property
    def model(self) -> str:
        return self.features.profile.model

    @property
    def model_version(self) -> str:
        return self.features.profile.model_version

    def update(
        self, event_time_ms: NDArray[np.int64], columns: Mapping[str, NDArray[Any]], now_ms: int | None = None,
        sources: NDArray[Any] | None = None,
    ) -> UpdateResult:
        """Add one columnar batch; return the windows it closed and the late counts it found.

        ``sources`` names each event's source (e.g. its Kafka partition): the watermark is then the
        smallest of the sources' (see :meth:`hold`), so a source read ahead of the others (a backlog
        handed out one partition at a time) cannot make their events late.
        """
        times = np.asarray(event_time_ms)
        if times.dtype.kind not in "iu":
            raise InvalidInput(f"event times must be integer epoch milliseconds, got dtype {times.dtype}")
        times = times.astype(np.int64, copy=False)
        rows = len(times)
        for name, values in columns.items():
            if len(values) != rows:
                raise InvalidInput(f"has {len(values)} values for {rows} event times", column=name)
        if rows == 0:
            return UpdateResult(0, [], [])
        hop = self.spec.hop
        panes = np.floor_divide(times, hop)
        keep = np.ones(rows, dtype=bool)
        if now_ms is not None and self.spec.max_future_ms is not None:
            keep &= times <= now_ms + self.spec.max_future_ms
        late: list[LateCount] = []
        if self.watermark is not None:
            # The earliest-ending window that holds pane p ends at (p + 1) * hop.
            partly_late = keep & ((panes + 1) * hop <= self.watermark)
            if partly_late.any():
                late = self._late_counts(panes[partly_late])
                self.late_events += int(partly_late.sum())
                # Keep the event for still-open windows: the newest window holding pane p ends at
                # p * hop + size.
                keep &= ~(partly_late & (panes * hop + self.spec.size_ms <= self.watermark))
        keep &= self._within_pane_bound(times, panes, keep, sources)
        rejected = np.flatnonzero(~keep & ~self._fully_late(panes))
        self.rejected_events += len(rejected)
        accepted = np.flatnonzero(keep)
        self._accumulate(panes, accepted, columns)
        if len(accepted):
            self.source_marks = _marked(self.source_marks, times, accepted, sources)
            candidate = self._candidate(self.source_marks)
            if candidate is not None and (self.watermark is None or candidate > self.watermark):
                return UpdateResult(len(accepted), self._advance(candidate), late, rejected, accepted)
        return UpdateResult(len(accepted), [], late, rejected, accepted)

    def add_pane(self, pane: int, counts: Counts) -> None:
        """Add a pane's counts made elsewhere (a partition's final pane: engine/partials.py)."""
        self._add(pane, counts)

    def set_mark(self, source: str, mark: int) -> list[ClosedWindow]:
        """Raise ``source``'s largest event time to ``mark``; returns the windows that closes."""
        if mark > self.source_marks.get(source, mark - 1):
            self.source_marks[source] = mark
        candidate = self._candidate(self.source_marks)
        if candidate is not None and (self.watermark is None or candidate > self.watermark):
            return self._advance(candidate)
        return []

    def hold(self, sources: frozenset[str] | None) -> list[ClosedWindow]:
        """Say which sources the watermark waits for: those still to deliver (a Kafka partition assigned
        and not yet read to its end). A source not yet seen holds the watermark where it is; a source
        left out (read to its end, revoked) no longer holds it back. With none left, the watermark is the
        newest of all sources'. Returns the windows that letting go closes."""
        self.holding = sources
        candidate = self._candidate(self.source_marks)
        if candidate is not None and (self.watermark is None or candidate > self.watermark):
            return self._advance(candidate)
        return []

    def reset(self) -> None:
        """Forget every pane, the watermark and the counters: the state of a fresh instance."""
        self.panes = {}
        self.watermark = None
        self.source_marks = {}
        self.holding = None
        self.late_events = 0
        self.rejected_events = 0
        self._running = None

    def flush(self) -> list[ClosedWindow]:
        """Close every open window (end of input)."""
        if not self.panes:
            return []
        last_end = (max(self.panes) * self.spec.hop) + self.spec.size_ms
        return self._advance(last_end)

    def merge(self, other: WindowState) -> WindowState:
        """A new state holding both states' panes; the watermark is the smaller one."""
        if other.features.profile.content_hash != self.features.profile.content_hash or other.spec != self.spec:
            raise InvalidInput("can only merge window states of the same reference profile and window spec")
        merged = WindowState(self.features, self.spec)
        for source in (self, other):
            for pane, counts in source.panes.items():
                if pane in merged.panes:
                    merged.panes[pane] = merged.panes[pane] + counts
                else:
                    merged.panes[pane] = counts.copy()
        marks = [w for w in (self.watermark, other.watermark) if w is not None]
        merged.watermark = min(marks) if marks else None
        for name, mark in (*self.source_marks.items(), *other.source_marks.items()):
            merged.source_marks[name] = max(mark, merged.source_marks.get(name, mark))
        merged.late_events = self.late_events + other.late_events
        merged.rejected_events = self.rejected_events + other.rejected_events
        return merged

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-ready data."""
        return {
            "reference_hash": self.features.profile.content_hash,
            "spec": {"size_ms": self.spec.size_ms, "hop_ms": self.spec.hop_ms,
                     "allowed_lateness_ms": self.spec.allowed_lateness_ms,
                     "max_open_panes": self.spec.max_open_panes, "max_future_ms": self.spec.max_future_ms},
            "watermark": self.watermark,
            "source_marks": dict(sorted(self.source_marks.items())),
            "holding": None if self.holding is None else sorted(self.holding),
            "late_events": self.late_events,
            "rejected_events": self.rejected_events,
            "panes": {str(p): c.tolist() for p, c in sorted(self.panes.items())},
        }

    @classmethod
    def restore(cls, features: FeatureSet, data: Mapping[str, Any]) -> WindowState:
        if data["reference_hash"] != features.profile.content_hash:
            raise InvalidInput(
                f"snapshot was taken against reference {data['reference_hash']}, not {features.profile.content_hash}")
        state = cls(features, WindowSpec(**data["spec"]))
        state.watermark = data["watermark"]
        state.source_marks = {str(k): int(v) for k, v in data.get("source_marks", {}).items()}
        holding = data.get("holding")
        state.holding = None if holding is None else frozenset(map(str, holding))
        state.late_events = int(data["late_events"])
        state.rejected_events = int(data["rejected_events"])
        for pane, counts in data["panes"].items():
            vector = features.upgrade(np.asarray(counts, dtype=np.int64))
            if vector.shape != (features.size,):
                raise InvalidInput(f"snapshot pane {pane} has {vector.size} counts, the plan {features.size}")
            state.panes[int(pane)] = vector
        return state

    def window_bounds(self, start_pane: int) -> tuple[int, int]:
        start = start_pane * self.spec.hop
        return start, start + self.spec.size_ms

    # -- internals -------------------------------------------------------------------------------

    def _candidate(self, marks: Mapping[str, int]) -> int | None:
        """The watermark the marks allow: the smallest mark of the sources that hold it, less the
        allowed lateness; None while a holding source has delivered nothing."""
        waiting = marks.keys() if self.holding is None else self.holding
        if not waiting:
            newest = max(marks.values(), default=None)
            return None if newest is None else newest - self.spec.allowed_lateness_ms
        held = [marks.get(source) for source in waiting]
        if any(mark is None for mark in held):
            return None
        return min(m for m in held if m is not None) - self.spec.allowed_lateness_ms

    def _fully_late(self, panes: NDArray[np.int64]) -> NDArray[np.bool_]:
        if self.watermark is None:
            return np.zeros(len(panes), dtype=bool)
        return panes * self.spec.hop + self.spec.size_ms <= self.watermark

    def _within_pane_bound(self, times: NDArray[np.int64], panes: NDArray[np.int64],
                           keep: NDArray[np.bool_], sources: NDArray[Any] | None) -> NDArray[np.bool_]:
        """False for events that would leave more than ``max_open_panes`` panes open after the batch
        (the newest go first). Panes the batch itself closes do not count: a long in-order batch is
        not refused for its length."""
        if not keep.any():
            return np.ones(len(panes), dtype=bool)
        hop, size = self.spec.hop, self.spec.size_ms
        prospective = self._candidate(_marked(self.source_marks, times, np.flatnonzero(keep), sources))
        watermark = max((w for w in (prospective, self.watermark) if w is not None), default=None)
        if watermark is None:
            watermark = int(times[keep].max()) - self.spec.allowed_lateness_ms
        held = np.fromiter(self.panes, dtype=np.int64, count=len(self.panes))
        surviving_held = int((held * hop + size > watermark).sum())
        candidates = np.unique(panes[keep])
        new = candidates[~np.isin(candidates, held) & (candidates * hop + size > watermark)]
        room = self.spec.pane_limit - surviving_held
        if len(new) <= room:
            return np.ones(len(panes), dtype=bool)
        return ~np.isin(panes, new[max(room, 0):])

    def _accumulate(self, panes: NDArray[np.int64], accepted: NDArray[np.intp],
                    columns: Mapping[str, NDArray[Any]]) -> None:
        if len(accepted) == 0:
            return
        accepted_panes = panes[accepted]
        first, last = int(accepted_panes.min()), int(accepted_panes.max())
        if first == last and len(accepted) == len(panes):
            self._add(first, self.features.count(columns, len(panes)))
            return
        order = accepted[np.argsort(accepted_panes, kind="stable")]
        unique, starts = np.unique(panes[order], return_index=True)
        bounds = np.append(starts, len(order))
        for pane, lo, hi in zip(unique.tolist(), bounds[:-1], bounds[1:], strict=True):
            self._add(pane, self.features.count(columns, len(panes), index=order[lo:hi]))

    def _add(self, pane: int, counts: Counts) -> None:
        if self._running is not None and 0 <= pane - self._running[0] < self.spec.panes_per_window:
            self._running[1][:] += counts
        current = self.panes.get(pane)
        if current is None:
            self.panes[pane] = counts
        else:
            current += counts

    def _late_counts(self, late_panes: NDArray[np.int64]) -> list[LateCount]:
        assert self.watermark is not None
        hop, size, per_window = self.spec.hop, self.spec.size_ms, self.spec.panes_per_window
        counts: dict[int, int] = {}
        unique, per_pane = np.unique(late_panes, return_counts=True)
        for pane, n in zip(unique.tolist(), per_pane.tolist(), strict=True):
            for start_pane in range(pane - per_window + 1, pane + 1):
                if start_pane * hop + size <= self.watermark:
                    counts[start_pane] = counts.get(start_pane, 0) + n
        result = []
        for start_pane in sorted(counts):
            start, end = self.window_bounds(start_pane)
            result.append(LateCount(window_id(self.model, self.model_version, start, end), start, end,
                                    counts[start_pane]))
        return result

    def _advance(self, watermark: int) -> list[ClosedWindow]:
        """Move the watermark forward; emit windows whose end it reached; drop panes no window needs."""
        previous = self.watermark
        self.watermark = watermark
        closed = [self._close(start_pane) for start_pane in self._closing_starts(previous, watermark)]
        hop, size = self.spec.hop, self.spec.size_ms
        for pane in [p for p in self.panes if p * hop + size <= watermark]:
            del self.panes[pane]
        return closed

    def _closing_starts(self, previous: int | None, watermark: int) -> list[int]:
        """Start panes of the windows that hold data and whose end is in ``(previous, watermark]``,
        in order: arithmetic over the merged runs of ``[p - w + 1, p]`` for the open panes ``p``."""
        if not self.panes:
            return []
        hop, size, per_window = self.spec.hop, self.spec.size_ms, self.spec.panes_per_window
        last = (watermark - size) // hop  # the newest window start whose end the watermark reached
        first = None if previous is None else (previous - size) // hop + 1
        starts: list[int] = []
        run_start = run_end = None
        for pane in sorted(self.panes):
            lo, hi = pane - per_window + 1, pane
            if run_end is not None and lo <= run_end + 1:
                run_end = hi
                continue
            if run_start is not None and run_end is not None:
                starts.extend(range(max(run_start, first if first is not None else run_start), min(run_end, last) + 1))
            run_start, run_end = lo, hi
        if run_start is not None and run_end is not None:
            starts.extend(range(max(run_start, first if first is not None else run_start), min(run_end, last) + 1))
        return starts

    def _close(self, start_pane: int) -> ClosedWindow:
        """The window starting at ``start_pane``: the running sum slides one pane at a time (two vector
        operations) instead of adding ``size / hop`` panes for every window."""
        per_window = self.spec.panes_per_window
        if self._running is None or self._running[0] != start_pane:
            vector = self.features.empty()
            for pane in range(start_pane, start_pane + per_window):
                counts = self.panes.get(pane)
                if counts is not None:
                    vector += counts
            self._running = (start_pane, vector)
        vector = self._running[1]
        window = vector.copy()
        leaving, entering = self.panes.get(start_pane), self.panes.get(start_pane + per_window)
        if leaving is not None:
            vector -= leaving
        if entering is not None:
            vector += entering
        self._running = (start_pane + 1, vector)
        start, end = self.window_bounds(start_pane)
        return ClosedWindow(self.model, self.model_version, start, end,
                            window_id(self.model, self.model_version, start, end),
                            window, self.features.profile.content_hash)
