"""Model version switches: which version of a model carries its traffic, and when that changes.

One :class:`VersionWatch` per model, fed the versions' event times (:meth:`VersionWatch.seen`) and
their closed windows (:meth:`VersionWatch.observe`), never a clock, answers with :class:`VersionChange`
records (``appeared``, ``disappeared``). The rules: docs/engine.md, *Version switches*.

>>> import numpy as np
>>> from driftline.engine.window_spec import ClosedWindow
>>> def window(version, hour):
...     start = hour * 3_600_000
...     return ClosedWindow("m", version, start, start + 3_600_000, f"{version}-{hour}", np.array([10]), "")
>>> watch = VersionWatch("m", hop_ms=3_600_000, gone_after=2)
>>> for hour, version in [(0, "1"), (1, "1"), (2, "2"), (3, "2"), (4, "2")]:
...     watch.seen(version, [hour * 3_600_000, hour * 3_600_000 + 3_599_999])
...     for change in watch.observe(window(version, hour)).changes:
...         print(change.kind, change.from_version, "->", change.to_version, "at hour", hour)
appeared 1 -> 2 at hour 2
disappeared 1 -> 2 at hour 3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from driftline.engine.ids import digest
from driftline.engine.window_spec import ClosedWindow
from driftline.errors import InvalidInput

ChangeKind = Literal["appeared", "disappeared"]


@dataclass(frozen=True)
class VersionChange:
    change_id: str
    """Deterministic: a hash of model, kind, versions and window id (deduplicate on it)."""
    kind: ChangeKind
    model: str
    from_version: str
    """``appeared``: the version that carried the traffic; ``disappeared``: the version gone."""
    to_version: str
    """``appeared``: the version that appeared; ``disappeared``: the version carrying the traffic now."""
    window_id: str
    """The window that showed the change: the first window of ``to_version``, or the window of
    ``to_version`` that completed ``from_version``'s run of windows without events."""
    window_start_ms: int
    window_end_ms: int
    reference_hash: str
    """Of ``to_version``'s reference profile."""
    last_seen_ms: int
    """The newest event time of ``from_version`` before the end of the window that showed the change."""

    @property
    def event_time_ms(self) -> int:
        return self.window_end_ms


@dataclass
class _Version:
    first_ms: int
    """Oldest event time seen."""
    older_ms: int | None = None
    """Newest event time of the panes no longer kept (older than every window still to be judged)."""
    last_end: int | None = None
    """End of its newest closed window."""
    gone_at: int | None = None
    """While gone: the end of the last window that could hold its newest event when it was declared gone."""
    panes: dict[int, int] = field(default_factory=dict)
    """Pane start (epoch ms, on the model's hop grid) → newest event time in it, for the recent panes."""

    def newest_before(self, end_ms: int) -> int | None:
        """Newest event time before ``end_ms`` (None: none seen)."""
        recent = [newest for pane, newest in self.panes.items() if pane < end_ms]
        return max(recent) if recent else self.older_ms

    def last_seen(self, end_ms: int) -> int:
        """Newest event time before ``end_ms``, or the oldest seen when none is before it."""
        newest = self.newest_before(end_ms)
        return self.first_ms if newest is None else newest


@dataclass(frozen=True)
class Observation:
    changes: list[VersionChange] = field(default_factory=list)
    compare_with: str | None = None
    """Compare the observed window with the last closed window of this version (its predecessor)."""
    ended: list[str] = field(default_factory=list)
    """Versions whose comparison period with their predecessor ends here."""


class VersionWatch:
    """Version presence of one model (see module docstring)."""

    def __init__(self, model: str, hop_ms: int, gone_after: int = 2, compare_windows: int = 1) -> None:
        if hop_ms <= 0:
            raise InvalidInput(f"model {model}: version watch hop_ms must be positive, got {hop_ms}")
        if gone_after < 1:
            raise InvalidInput(f"model {model}: version_gone_after must be at least 1 window, got {gone_after}")
        if compare_windows < 0:
            raise InvalidInput(f"model {model}: version_baseline_windows must be >= 0, got {compare_windows}")
        self.model = model
        self.hop_ms = hop_ms
        self.gone_after = gone_after
        self.compare_windows = compare_windows
        self.size_ms = hop_ms
        """Window size (for the last window that can hold an event); set by :meth:`observe` from the windows."""
        self.versions: dict[str, _Version] = {}
        self.comparing: dict[str, tuple[str, int]] = {}
        """Version that appeared → (its predecessor, windows compared so far)."""

    def seen(self, version: str, event_time_ms: NDArray[np.int64] | Sequence[int]) -> None:
        """``version`` had accepted events at these event times (a batch's, in any order)."""
        times = np.asarray(event_time_ms, dtype=np.int64)
        if not len(times):
            return
        panes = times // self.hop_ms * self.hop_ms
        order = np.lexsort((times, panes))
        panes, times = panes[order], times[order]
        last = np.flatnonzero(np.append(panes[1:] != panes[:-1], True))  # each pane's newest event
        state = self.versions.get(version)
        if state is None:
            state = self.versions[version] = _Version(int(times[0]))
        state.first_ms = min(state.first_ms, int(times[0]))
        for pane, newest in zip(panes[last].tolist(), times[last].tolist(), strict=True):
            state.panes[pane] = max(state.panes.get(pane, newest), newest)

    def observe(self, window: ClosedWindow) -> Observation:
        """One closed window of one of the model's versions: the changes it shows, and what to compare it with."""
        if window.model != self.model:
            raise InvalidInput(f"version watch of model {self.model} was handed a window of {window.model}")
        self.size_ms = window.end_ms - window.start_ms
        version = window.model_version
        state = self.versions.get(version)
        if state is None:  # (a window restored from a partial, with no batch seen here)
            state = self.versions[version] = _Version(window.start_ms, window.start_ms)
        changes: list[VersionChange] = []
        ended: list[str] = []
        first = state.last_end is None
        back = state.gone_at is not None and window.end_ms > state.gone_at
        if first or back:
            predecessor = self._carrier(version, window)
            if predecessor is not None:
                changes.append(self._change("appeared", predecessor, version, window))
                if self.compare_windows:
                    self.comparing[version] = (predecessor, 0)
            if back:
                state.gone_at = None
        compare_with = None
        if version in self.comparing:
            predecessor, compared = self.comparing[version]
            if compared < self.compare_windows:
                compare_with = predecessor
                self.comparing[version] = (predecessor, compared + 1)
            else:
                del self.comparing[version]
                ended.append(version)
        state.last_end = window.end_ms if state.last_end is None else max(state.last_end, window.end_ms)
        for other, other_state in sorted(self.versions.items()):
            if other == version or other_state.gone_at is not None:
                continue
            last = self._last_possible_end(other_state, window.end_ms)
            if last is not None and window.end_ms - last >= self.gone_after * self.hop_ms:
                changes.append(self._change("disappeared", other, version, window))
                other_state.gone_at = last
                if self.comparing.pop(other, None) is not None:
                    ended.append(other)
        self._forget(window.end_ms)
        return Observation(changes, compare_with, ended)

    def _carrier(self, version: str, window: ClosedWindow) -> str | None:
        """The version that carried traffic before the window began and is not gone (the one seen most
        recently before the window's end)."""
        carriers = [(s.last_seen(window.end_ms), v) for v, s in self.versions.items()
                    if v != version and s.gone_at is None and s.first_ms < window.start_ms]
        return max(carriers)[1] if carriers else None

    def _last_possible_end(self, state: _Version, before_ms: int) -> int | None:
        """End of the newest window that can hold the version's newest event before ``before_ms`` (its
        newest closed window, when no event of it was seen: a window restored from a checkpoint)."""
        newest = state.newest_before(before_ms)
        if newest is None:
            return state.last_end
        return (newest // self.hop_ms) * self.hop_ms + self.size_ms

    def _forget(self, end_ms: int) -> None:
        """Fold the panes older than any window still to be judged into ``older_ms`` (bounded state):
        windows are judged near the newest end, within a window size and the gap that counts."""
        horizon = end_ms - self.size_ms - (self.gone_after + 2) * self.hop_ms
        for state in self.versions.values():
            old = [pane for pane in state.panes if pane < horizon]
            if old:
                newest = max(state.panes.pop(pane) for pane in old)
                state.older_ms = newest if state.older_ms is None else max(state.older_ms, newest)

    def _change(self, kind: ChangeKind, from_version: str, to_version: str, window: ClosedWindow) -> VersionChange:
        change_id = digest("version_change", self.model, kind, from_version, to_version, window.window_id)
        return VersionChange(change_id, kind, self.model, from_version, to_version, window.window_id,
                             window.start_ms, window.end_ms, window.reference_hash,
                             self.versions[from_version].last_seen(window.end_ms))

    def reset(self) -> None:
        self.versions = {}
        self.comparing = {}

    def snapshot(self) -> dict[str, Any]:
        return {"size_ms": self.size_ms,
                "versions": {v: [s.first_ms, s.older_ms, s.last_end, s.gone_at, sorted(s.panes.items())]
                             for v, s in sorted(self.versions.items())},
                "comparing": {v: [p, n] for v, (p, n) in sorted(self.comparing.items())}}

    def restore(self, data: Mapping[str, Any]) -> None:
        self.size_ms = int(data["size_ms"])
        self.versions = {str(v): _restored(state) for v, state in data["versions"].items()}
        self.comparing = {str(v): (str(p), int(n)) for v, (p, n) in data["comparing"].items()}


def _restored(data: Sequence[Any]) -> _Version:
    """A version's state from :meth:`VersionWatch.snapshot` (a snapshot from before panes were kept has
    four items, the second its newest event time)."""
    first, older, last_end, gone_at = (None if x is None else int(x) for x in data[:4])
    panes = {int(pane): int(newest) for pane, newest in data[4]} if len(data) > 4 else {}
    return _Version(int(first or 0), older, last_end, gone_at, panes)

