"""Canonical scoring events, columnar: what every source decodes into.

Sources hand decoded records (dicts) to an :class:`EventBuilder`, which validates each one, turns the
bad ones into :class:`BadEvent` (with where it came from and why) and builds one columnar
:class:`Events` batch from the rest. The contract: docs/events.md.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

COMBINED, REQUEST, RESPONSE = 0, 1, 2
KIND_NAMES = {"combined": COMBINED, "request": REQUEST, "response": RESPONSE}
_FEATURE_TYPES = frozenset((int, float, str, bool, type(None)))
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01: smaller values are seconds, not milliseconds
MAX_EVENT_TIME_MS = 4_102_444_800_000  # 2100-01-01

POSITION = np.dtype([("source", np.int32), ("partition", np.int32), ("offset", np.int64), ("row", np.int32)])
"""Where each event came from, structured: its source (an index into :attr:`Events.sources`), its Kafka
partition (-1: a file), the message's offset (a file: its line, record or row number), and its row in
a message that held several records (-1: the message was one record)."""


@dataclass(frozen=True)
class Source:
    """What a position's ``source`` names: a consumed topic, or an input file and what it counts in."""

    name: str
    unit: str = ""
    """A file's: ``line``, ``record`` or ``row``; ``""`` for a Kafka topic."""


@dataclass(frozen=True)
class Position:
    """One event's or message's position (see :data:`POSITION`), its source named."""

    source: Source
    partition: int
    offset: int
    row: int = -1

    def __str__(self) -> str:
        """``scoring[3]@42`` (``#1``: the second record of the message), ``events.jsonl line 12``."""
        if self.source.unit:
            return f"{self.source.name} {self.source.unit} {self.offset}"
        return f"{self.source.name}[{self.partition}]@{self.offset}" + (f"#{self.row}" if self.row >= 0 else "")

    @property
    def message(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the Kafka message; None for a file."""
        return None if self.source.unit else (self.source.name, self.partition, self.offset)


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


def no_positions(n: int = 0) -> NDArray[np.void]:
    return np.zeros(n, dtype=POSITION)


def positions(source: int | NDArray[Any], partition: int | NDArray[Any], offset: int | NDArray[Any],
              row: int | NDArray[Any] = -1, n: int | None = None) -> NDArray[np.void]:
    """A :data:`POSITION` array from its columns (scalars are repeated)."""
    size = n if n is not None else max(np.size(c) for c in (source, partition, offset, row))
    out = np.empty(size, dtype=POSITION)
    out["source"], out["partition"], out["offset"], out["row"] = source, partition, offset, row
    return out


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
        kind=np.asarray(data["kind"], dtype=np.int8), request_id=_object_array(data["request_id"]),
        model=_object_array(data["model"]), model_version=_object_array(data["model_version"]),
        event_time=np.asarray(data["event_time"], dtype=np.int64),
        score=np.asarray([math.nan if v is None else v for v in data["score"]], dtype=np.float64),
        decision=_object_array(data["decision"]),
        features={name: _object_array(values) for name, values in data["features"].items()},
        source=_object_array(data.get("source", [])), **_stored_positions(data),
    )


_KAFKA_ORIGIN = re.compile(r"^(?P<topic>.+)\[(?P<partition>\d+)\]@(?P<offset>\d+)(?:#(?P<row>\d+))?$")


def _stored_positions(data: Mapping[str, Any]) -> dict[str, Any]:
    """The positions of a checkpoint's events. A checkpoint of a release before structured positions
    holds their text (``topic[p]@offset#row``): read once, here."""
    if "sources" in data:
        sources = tuple(Source(name, unit) for name, unit in data["sources"])
        position = np.array([tuple(p) for p in data["position"]], dtype=POSITION) if data["position"] \
            else no_positions()
        return {"position": position, "sources": sources}
    names: dict[Source, int] = {}
    rows = []
    for text in data["position"]:
        found = _KAFKA_ORIGIN.match(text)
        source = Source(found["topic"]) if found else Source(text, "at")
        index = names.setdefault(source, len(names))
        rows.append((index, int(found["partition"]), int(found["offset"]), int(found["row"] or -1)) if found
                    else (index, -1, 0, -1))
    return {"position": np.array(rows, dtype=POSITION) if rows else no_positions(), "sources": tuple(names)}


class EventBuilder:
    """Validates decoded records one by one and builds a columnar batch of the good ones. A record's position
    is a (source, partition, offset, row) tuple over ``sources``, or for a file (one source) its number."""

    def __init__(self, sources: Source | tuple[Source, ...]) -> None:
        self.sources = sources if isinstance(sources, tuple) else (sources,)
        self.bad: list[BadEvent] = []
        self._rows: list[tuple[int, str, str, str, int, float, Any, Mapping[str, Any] | None, Spot]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, record: Any, at: Spot | int, payload: bytes | None = None) -> bool:
        """Validate one record; keep it, or record why not. Returns whether it was kept."""
        spot = at if isinstance(at, tuple) else (0, -1, at, -1)
        try:
            self._rows.append((*_validate(record), spot))
            return True
        except InvalidEvent as exc:
            self.bad.append(BadEvent.of(self.position(spot), "validate", exc.error_class, str(exc), payload))
            return False

    def reject(self, at: Spot | int, stage: str, error: BaseException | str, payload: bytes | None = None) -> None:
        """A message or record that could not be decoded."""
        spot = at if isinstance(at, tuple) else (0, -1, at, -1)
        self.bad.append(BadEvent.of(self.position(spot), stage, _error_class(error), str(error), payload))

    def reject_rest(self, number: int, stage: str, error: BaseException | str) -> None:
        """A file unreadable after its record ``number`` (``events.avro after record 5``)."""
        source = self.sources[0]
        at = Position(Source(source.name, f"after {source.unit}"), -1, number)
        self.bad.append(BadEvent.of(at, stage, _error_class(error), str(error)))

    def position(self, spot: Spot) -> Position:
        return Position(self.sources[spot[0]], *spot[1:])

    def build(self) -> Events:
        rows, self._rows = self._rows, []
        n = len(rows)
        if n == 0:
            return Events.empty()
        return Events(
            kind=np.fromiter((r[0] for r in rows), dtype=np.int8, count=n),
            request_id=_object_array([r[1] for r in rows]),
            model=_object_array([r[2] for r in rows]),
            model_version=_object_array([r[3] for r in rows]),
            event_time=np.fromiter((r[4] for r in rows), dtype=np.int64, count=n),
            score=np.fromiter((r[5] for r in rows), dtype=np.float64, count=n),
            decision=_object_array([r[6] for r in rows]),
            features=_feature_columns([r[7] for r in rows]),
            position=np.array([r[8] for r in rows], dtype=POSITION), sources=self.sources,
        )


Spot = tuple[int, int, int, int]
"""One :data:`POSITION` as a tuple: (source, partition, offset, row)."""


def _error_class(error: BaseException | str) -> str:
    return getattr(error, "error_class", None) or (type(error).__name__ if isinstance(error, BaseException)
                                                     else "DecodeError")


def _feature_columns(maps: list[Mapping[str, Any] | None]) -> dict[str, NDArray[np.object_]]:
    """Rows of feature maps → one object array per feature (None where a row lacks it)."""
    first = next((m for m in maps if m is not None), None)
    if first is None:
        return {}
    names = list(first)
    if names and all(m is not None and len(m) == len(names) for m in maps):
        getter = operator.itemgetter(*names)
        try:  # the common case: every row has the same features; one pass, then a transpose
            rows = [getter(m) for m in maps]
        except KeyError:
            pass
        else:
            columns = zip(*rows) if len(names) > 1 else [rows]
            return {name: _object_array(column) for name, column in zip(names, columns, strict=True)}
    names = list(dict.fromkeys(k for m in maps if m is not None for k in m))
    return {name: _object_array([m.get(name) if m is not None else None for m in maps]) for name in names}


class InvalidEvent(ValueError):
    def __init__(self, reason: str, error_class: str = "ValidationError") -> None:
        super().__init__(reason)
        self.error_class = error_class


def _object_array(values: Iterable[Any]) -> NDArray[np.object_]:
    items = list(values)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _validate(record: Any) -> tuple[int, str, str, str, int, float, Any, Mapping[str, Any] | None]:
    # (``type(x) is …`` first: the common case, without the cost of isinstance against ABCs and unions)
    if type(record) is not dict and not isinstance(record, Mapping):
        raise InvalidEvent(f"expected a JSON object, got {type(record).__name__}", "SchemaMismatch")
    request_id = _text(record, "request_id", numbers=False)  # the join key: 17 and "17" must not meet
    model = _text(record, "model")
    version = _text(record, "model_version")
    event_time = parse_event_time(record.get("event_time"))
    features = record.get("features")
    if features is not None:
        if type(features) is not dict and not isinstance(features, Mapping):
            raise InvalidEvent(f"features must be an object of name → value, got {type(features).__name__}",
                               "SchemaMismatch")
        if not _FEATURE_TYPES.issuperset(map(type, features.values())):  # fast path: exact types
            for name, value in features.items():
                if value is not None and not isinstance(value, (int, float, str, bool)):
                    raise InvalidEvent(f"feature {name!r} must be a number, string or null, "
                                       f"got {type(value).__name__}", "SchemaMismatch")
    has_output = record.get("score") is not None or record.get("decision") is not None
    score = record.get("score")
    if score is not None and type(score) is not float and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise InvalidEvent(f"score must be a number or null, got {score!r}", "SchemaMismatch")
    try:
        score_value = math.nan if score is None else float(score)
    except OverflowError:
        raise InvalidEvent(f"score {score} is too large for a float", "SchemaMismatch") from None
    if score is not None and not math.isfinite(score_value):  # Avro and Parquet can carry them; JSON cannot
        raise InvalidEvent(f"score must be a finite number or null, got {score_value}", "InvalidScore")
    decision = record.get("decision")
    if decision is not None and not isinstance(decision, (str, int, bool)):
        raise InvalidEvent(f"decision must be a string (or a number or boolean label) or null, "
                           f"got {type(decision).__name__}", "SchemaMismatch")
    declared = record.get("kind")
    if declared is not None:
        if not isinstance(declared, str) or declared not in KIND_NAMES:
            raise InvalidEvent(f"kind must be one of {', '.join(KIND_NAMES)}, got {declared!r}")
        kind = KIND_NAMES[declared]
    elif features is not None:  # null outputs count as absent: send kind "combined" when a score can be null
        kind = COMBINED if has_output else REQUEST
    elif has_output:
        kind = RESPONSE
    else:
        raise InvalidEvent("neither features (a request) nor score/decision (a response)")
    if kind in (COMBINED, REQUEST) and features is None:
        raise InvalidEvent(f"a {declared} event needs features")
    return kind, request_id, model, version, event_time, score_value, \
        None if decision is None else str(decision), features


def _text(record: Mapping[str, Any], name: str, numbers: bool = True) -> str:
    """A text field; with ``numbers``, a whole number is accepted as its digits (``model_version: 3``)."""
    value = record.get(name)
    if type(value) is str and value and "\x00" not in value:
        return value
    if value is None or value == "":
        raise InvalidEvent(f"missing {name}", "SchemaMismatch")
    if isinstance(value, bool) or not isinstance(value, (str, int) if numbers else str):
        raise InvalidEvent(f"{name} must be a string, got {type(value).__name__} {_short(value)}", "SchemaMismatch")
    text = str(value)
    if "\x00" in text:
        raise InvalidEvent(f"{name} contains a NUL character", "SchemaMismatch")
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_NON_FINITE = re.compile(r"-?(?:NaN|Infinity|inf(?:inity)?|nan)", re.IGNORECASE)
_KEY_BEFORE = re.compile(r'"((?:[^"\\]|\\.){1,200})"\s*:\s*(\[[^\[\]{}]*)?$')
_IN_FEATURES = re.compile(r'"features"\s*:\s*\{[^{}]*$')


def json_error_reason(exc: ValueError) -> str:
    """The reason of a JSON parser error. JSON has no NaN or Infinity, and the parser only gives a
    column for them; this names the field that holds one (``field 'score': Infinity is not a JSON
    number ...``)."""
    doc, pos = getattr(exc, "doc", None), getattr(exc, "pos", None)
    if not isinstance(doc, str) or not isinstance(pos, int):
        return str(exc)
    start = pos - 1 if 0 < pos <= len(doc) and doc[pos - 1] == "-" else pos
    token = _NON_FINITE.match(doc, start)
    if token is None:
        return str(exc)
    prefix = doc[max(0, start - 4_096):start]
    key = _KEY_BEFORE.search(prefix)
    if key is None:
        where = "a value"
    else:
        kind = "feature" if _IN_FEATURES.search(prefix[:key.start()]) else "field"
        where = f"{kind} {key.group(1)!r}" + (" (in its array)" if key.group(2) is not None else "")
    return (f"{where}: {token.group()} is not a JSON number (JSON has no NaN or Infinity; send null for a "
            f"missing value) at line {getattr(exc, 'lineno', '?')} column {getattr(exc, 'colno', pos + 1) - (pos - start)}")


def parse_event_time(value: Any) -> int:
    """Epoch milliseconds from epoch milliseconds or an ISO-8601 string with a time zone.

    >>> parse_event_time("2026-01-01T00:00:00Z"), parse_event_time(1767225600000)
    (1767225600000, 1767225600000)
    """
    if type(value) is int and MIN_EVENT_TIME_MS <= value < MAX_EVENT_TIME_MS:
        return value
    if value is None:
        raise InvalidEvent("missing event_time", "SchemaMismatch")
    if isinstance(value, bool):
        raise InvalidEvent(f"event_time must be epoch milliseconds or ISO-8601, got {value!r}", "SchemaMismatch")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidEvent("event_time has no time zone", "SchemaMismatch")
        millis = round(value.timestamp() * 1000)
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise InvalidEvent(f"event_time must be whole epoch milliseconds, got {value!r}", "SchemaMismatch")
        millis = int(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"event_time {value!r} is not ISO-8601", "SchemaMismatch") from None
        if parsed.tzinfo is None:
            raise InvalidEvent(f"event_time {value!r} has no time zone (add Z or +00:00)", "SchemaMismatch")
        millis = round(parsed.timestamp() * 1000)
    else:
        raise InvalidEvent(f"event_time must be epoch milliseconds or ISO-8601, got {type(value).__name__}",
                           "SchemaMismatch")
    if not MIN_EVENT_TIME_MS <= millis < MAX_EVENT_TIME_MS:
        hint = " (epoch seconds? send milliseconds)" if 946_684_800 <= millis < 4_102_444_800 else ""
        raise InvalidEvent(f"event_time {millis} is outside 2000–2100 in epoch milliseconds{hint}", "SchemaMismatch")
    return millis
