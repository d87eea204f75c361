"""Decoded records (dicts) validated one by one into a columnar batch (:class:`EventBuilder`): every bad
field becomes a :class:`~driftline.events.columns.BadEvent` that names it; event times parsed."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.events.columns import COMBINED, KIND_NAMES, REQUEST, RESPONSE, BadEvent, Events, object_array
from driftline.events.positions import POSITION, Position, Source, Spot

_FEATURE_TYPES = frozenset((int, float, str, bool, type(None)))
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01: smaller values are seconds, not milliseconds
MAX_EVENT_TIME_MS = 4_102_444_800_000  # 2100-01-01


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
            request_id=object_array([r[1] for r in rows]),
            model=object_array([r[2] for r in rows]),
            model_version=object_array([r[3] for r in rows]),
            event_time=np.fromiter((r[4] for r in rows), dtype=np.int64, count=n),
            score=np.fromiter((r[5] for r in rows), dtype=np.float64, count=n),
            decision=object_array([r[6] for r in rows]),
            features=_feature_columns([r[7] for r in rows]),
            position=np.array([r[8] for r in rows], dtype=POSITION), sources=self.sources,
        )


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
            return {name: object_array(column) for name, column in zip(names, columns, strict=True)}
    names = list(dict.fromkeys(k for m in maps if m is not None for k in m))
    return {name: object_array([m.get(name) if m is not None else None for m in maps]) for name in names}


class InvalidEvent(ValueError):
    def __init__(self, reason: str, error_class: str = "ValidationError") -> None:
        super().__init__(reason)
        self.error_class = error_class


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
