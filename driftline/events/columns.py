"""The columnar batch of canonical events (:class:`Events`), the :class:`BadEvent` of an input that could
not be used, and their plain-data form for checkpoints."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.events.positions import Position, Source, no_positions, stored_positions

COMBINED, REQUEST, RESPONSE = 0, 1, 2
KIND_NAMES = {"combined": COMBINED, "request": REQUEST, "response": RESPONSE}


@dataclass(frozen=True)
class BadEvent:
    """An input that could not be used, and why. Nothing is dropped without one."""

    origin: str
    """Where it came from, for people: ``events.jsonl line 12``, ``events.avro record 5``, ``scoring[3]@42``."""
    stage: str
    """``decode``, ``validate``, ``join`` or ``engine``."""
    error_class: str
    reason: str
    payload: bytes | None = None
    payload_size: int | None = None
    """The size of the whole input when ``payload`` holds only its start (a file source caps it)."""
    at: Position | None = None
    """The same, structured, when it is one event's or message's (not a whole file, not a file's end)."""

    @classmethod
    def of(cls, at: Position, stage: str, error_class: str, reason: str, payload: bytes | None = None) -> BadEvent:
        return cls(str(at), stage, error_class, reason, payload, at=at)

    def describe(self) -> str:
        return f"{self.origin}: {self.stage}: {self.reason}"


@dataclass
class Events:
    """A columnar batch of canonical events (one numpy array per field, one per feature).

    Arrays may be shared between batches (:meth:`take` of every row returns the batch itself): replace
    a column, never write into one."""

    kind: NDArray[np.int8]
    request_id: NDArray[Any]
    """Text: ``str`` objects, or a numpy string array."""
    model: NDArray[np.object_]
    model_version: NDArray[np.object_]
    event_time: NDArray[np.int64]
    score: NDArray[np.float64]
    decision: NDArray[np.object_]
    features: dict[str, NDArray[Any]] = field(default_factory=dict)
    """Feature values as sent: objects (None where absent or null), or float64 (NaN where absent or
    null) for a column of numbers only, or numpy strings for a column of text only; typed against the
    profile later."""
    position: NDArray[np.void] = field(default_factory=no_positions)
    """Where each event came from (:data:`POSITION`), for the error report of a later stage."""
    source: NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))
    """The stream each event's watermark is kept by (the Kafka partition, ``topic[p]``), or empty."""
    sources: tuple[Source, ...] = ()
    """What ``position["source"]`` indexes."""

    def __len__(self) -> int:
        return len(self.kind)

    @classmethod
    def empty(cls) -> Events:
        text = np.zeros(0, object)
        return cls(np.zeros(0, np.int8), text, text, text, np.zeros(0, np.int64), np.zeros(0, np.float64), text, {},
                   no_positions())

    def where(self, rows: NDArray[Any] | None = None) -> list[Position]:
        """The positions of ``rows`` (integers or a mask; every row by default), their sources named."""
        picked = self.position if rows is None else self.position[rows]
        return [Position(self.sources[s], p, o, r) for s, p, o, r in picked.tolist()]

    def bad(self, rows: NDArray[Any] | None, stage: str, error_class: str, reason: str) -> list[BadEvent]:
        """A bad event for each of ``rows`` (every row by default), all for one reason."""
        return [BadEvent.of(at, stage, error_class, reason) for at in self.where(rows)]

    def take(self, index: NDArray[Any]) -> Events:
        """The rows at ``index`` (integers), in that order."""
        if _every_row(index, len(self)):
            return self
        return Events(self.kind[index], self.request_id[index], self.model[index], self.model_version[index],
                      self.event_time[index], self.score[index], self.decision[index],
                      {k: v[index] for k, v in self.features.items()}, self.position[index],
                      self.source[index] if len(self.source) else self.source, self.sources)

    @classmethod
    def concat(cls, parts: Sequence[Events]) -> Events:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        names = list(dict.fromkeys(k for p in parts for k in p.features))
        features = {name: np.concatenate([p.features.get(name, np.full(len(p), None, dtype=object)) for p in parts])
                    for name in names}
        known = all(len(p.source) == len(p) for p in parts)
        sources, position = _joined_positions(parts)
        columns = {f: np.concatenate([getattr(p, f) for p in parts])
                   for f in ("kind", "request_id", "model", "model_version", "event_time", "score", "decision")}
        return cls(**columns, features=features, position=position,
                   source=np.concatenate([p.source for p in parts]) if known else np.zeros(0, dtype=object),
                   sources=sources)


def _joined_positions(parts: Sequence[Events]) -> tuple[tuple[Source, ...], NDArray[np.void]]:
    """The parts' positions in one array, over one table of sources (the parts' tables, merged)."""
    table = tuple(dict.fromkeys(s for p in parts for s in p.sources))
    if all(p.sources == table for p in parts):
        return table, np.concatenate([p.position for p in parts])
    renumbered = []
    for part in parts:
        position = part.position.copy()
        if len(position):
            position["source"] = np.asarray([table.index(s) for s in part.sources], dtype=np.int32)[position["source"]]
        renumbered.append(position)
    return table, np.concatenate(renumbered)


def _every_row(index: NDArray[Any], n: int) -> bool:
    return (len(index) == n and index.dtype.kind in "iu"
            and (n == 0 or (int(index[0]) == 0 and int(index[-1]) == n - 1 and bool((np.diff(index) == 1).all()))))


def refuse_future(events: Events, now_ms: int, limit_ms: int) -> tuple[Events, list[BadEvent]]:
    """The events stamped at most ``limit_ms`` after ``now_ms``, and the others as ``FutureEvent`` bad
    events (``windows.max_future``: one skewed producer clock must not move a watermark far ahead)."""
    ahead = events.event_time > now_ms + limit_ms
    if not ahead.any():
        return events, []
    bad = events.bad(ahead, "engine", "FutureEvent", f"event time more than {limit_ms // 1000}s ahead of {now_ms} "
                     "(epoch ms)")
    return events.take(np.flatnonzero(~ahead)), bad


def events_to_dict(events: Events) -> dict[str, Any]:
    """Plain JSON-ready data (for a checkpoint); NaN scores become null."""
    return {
        "kind": events.kind.tolist(), "request_id": events.request_id.tolist(), "model": events.model.tolist(),
        "model_version": events.model_version.tolist(), "event_time": events.event_time.tolist(),
        "score": [None if v != v else v for v in events.score.tolist()], "decision": events.decision.tolist(),
        "features": {name: _plain_values(values) for name, values in events.features.items()},
        "position": [list(p) for p in events.position.tolist()], "source": events.source.tolist(),
        "sources": [[s.name, s.unit] for s in events.sources],
    }


def _plain_values(values: NDArray[Any]) -> list[Any]:
    if values.dtype.kind == "f":  # a float column's NaN is a null
        return [None if v != v else v for v in values.tolist()]
    return values.tolist()


def events_from_dict(data: Mapping[str, Any]) -> Events:
    return Events(
        kind=np.asarray(data["kind"], dtype=np.int8), request_id=object_array(data["request_id"]),
        model=object_array(data["model"]), model_version=object_array(data["model_version"]),
        event_time=np.asarray(data["event_time"], dtype=np.int64),
        score=np.asarray([math.nan if v is None else v for v in data["score"]], dtype=np.float64),
        decision=object_array(data["decision"]),
        features={name: object_array(values) for name, values in data["features"].items()},
        source=object_array(data.get("source", [])), **stored_positions(data),
    )


def object_array(values: Iterable[Any]) -> NDArray[np.object_]:
    items = list(values)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
