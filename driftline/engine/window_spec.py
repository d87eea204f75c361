"""The vocabulary of event-time windows: their spec, their ids, and what updating them returns.

>>> WindowSpec(size_ms=3_600_000, hop_ms=900_000).panes_per_window
4
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from driftline.engine.bins import Counts
from driftline.engine.ids import digest
from driftline.errors import InvalidInput


@dataclass(frozen=True)
class WindowSpec:
    size_ms: int
    hop_ms: int | None = None
    """None for tumbling windows; otherwise ``size_ms`` must be a multiple of it."""
    allowed_lateness_ms: int = 0
    max_open_panes: int | None = None
    """Bound on panes held open; None: ``max(10_000, min_open_panes)``."""
    max_future_ms: int | None = None
    """Reject events later than ``now_ms + max_future_ms`` when the caller hands ``now_ms`` in."""

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise InvalidInput(f"window size_ms must be positive, got {self.size_ms}")
        if self.hop <= 0 or self.size_ms % self.hop:
            raise InvalidInput(f"window hop_ms must divide size_ms={self.size_ms}, got {self.hop_ms}")
        if self.allowed_lateness_ms < 0:
            raise InvalidInput(f"allowed_lateness_ms must be >= 0, got {self.allowed_lateness_ms}")
        if self.pane_limit < self.min_open_panes:
            raise InvalidInput(f"max_open_panes must be at least {self.min_open_panes}: the panes of one window "
                               f"plus the allowed lateness ((size + lateness) / hop + 1)")

    @property
    def hop(self) -> int:
        return self.size_ms if self.hop_ms is None else self.hop_ms

    @property
    def panes_per_window(self) -> int:
        return self.size_ms // self.hop

    @property
    def pane_limit(self) -> int:
        return self.max_open_panes if self.max_open_panes is not None else max(10_000, self.min_open_panes)

    @property
    def min_open_panes(self) -> int:
        """Panes an in-order stream keeps open at once: one window's and those within the lateness."""
        return self.panes_per_window + -(-self.allowed_lateness_ms // self.hop) + 1

def window_id(model: str, model_version: str, start_ms: int, end_ms: int) -> str:
    """Deterministic id of a window: the first 16 bytes of sha256 over its identity, hex.

    >>> window_id("credit", "3", 0, 60_000)
    'dabd3c91597526cbab50a4df017ccee4'
    """
    return digest(model, model_version, start_ms, end_ms)


@dataclass(frozen=True, eq=False)
class ClosedWindow:
    model: str
    model_version: str
    start_ms: int
    end_ms: int
    window_id: str
    counts: Counts
    """The window's count vector in its :class:`FeatureSet` plan; ``counts[0]`` is the row count."""
    reference_hash: str

    @property
    def rows(self) -> int:
        return int(self.counts[0])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ClosedWindow)
            and (self.window_id, self.start_ms, self.end_ms, self.reference_hash)
            == (other.window_id, other.start_ms, other.end_ms, other.reference_hash)
            and np.array_equal(self.counts, other.counts)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class LateCount:
    window_id: str
    start_ms: int
    end_ms: int
    count: int


@dataclass(frozen=True)
class UpdateResult:
    accepted: int
    closed: list[ClosedWindow]
    late: list[LateCount]
    """Events that arrived after a window containing them had closed, per closed window."""
    rejected: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    """Indices (into the batch) of events rejected as too far in the future or over the pane bound."""
    accepted_rows: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    """Indices (into the batch) of the events added to a pane."""
