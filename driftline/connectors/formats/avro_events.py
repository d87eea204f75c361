"""Scoring events from a batch of Avro messages, column by column: the service's fast path.

:func:`avro_events` builds :class:`~driftline.events.Events` straight from
:mod:`driftline.connectors.formats.avro_batch`'s columns and hands back by index the rows that need the
one-at-a-time path (docs/events.md, *Avro in batches*).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.connectors.formats.avro_batch import (ABSENT, BOOLEAN, FLOAT, INTEGER, NULL, STRING, ENUM, Decoded,
                                             Values, batchable, decode_batch, text)
from driftline.events import COMBINED, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, REQUEST, RESPONSE, Events, Source

EXACT_INTEGERS = 2 ** 53
"""Integers a float64 holds exactly; a feature column with larger ones stays one of Python ints."""
_TEXT_FIELDS = ("request_id", "model", "model_version")


@dataclass
class FastRows:
    events: Events
    """The events of the rows taken, in message order."""
    rows: NDArray[np.intp]
    """Which messages they came from."""
    rest: NDArray[np.intp]
    """Messages to decode one at a time (anything unusual, and everything wrong)."""


@dataclass(frozen=True, eq=False)
class ColumnarSchema:
    """A parsed schema :func:`avro_events` can read (compared and hashed by identity)."""

    parsed: Any

    @classmethod
    def of(cls, parsed: Any) -> ColumnarSchema | None:
        return cls(parsed) if columnar(parsed) else None


def columnar(schema: Any) -> bool:
    """Whether :func:`avro_events` can read this schema's messages in batches: a batchable record with
    text ids, an event time in epoch milliseconds (a long, or ``timestamp-millis``), plain score and
    decision if any, and ``features`` (if any) a map; no ``kind`` field. Anything else, one at a time."""
    if not isinstance(schema, dict) or not batchable(schema):
        return False
    types = {field["name"]: field["type"] for field in schema["fields"]}
    if not {"request_id", "model", "model_version", "event_time"} <= types.keys() or "kind" in types:
        return False
    time_type = types["event_time"]
    millis = time_type in ("long", "int") or (isinstance(time_type, dict) and time_type.get("type") in ("long", "int")
                                              and time_type.get("logicalType") in (None, "timestamp-millis"))
    plain = all(not _is_map(types[name]) for name in ("request_id", "model", "model_version", "score", "decision")
                if name in types)
    return millis and plain and ("features" not in types or _is_map(types["features"]))


def _is_map(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "map"


def avro_events(values: Sequence[bytes], schema: Any, at: NDArray[np.void], names: tuple[Source, ...],
                sources: Sequence[str] | None = None) -> FastRows:
    """The scoring events in ``values`` (raw Avro of ``schema``; :func:`columnar` must hold), each at its
    ``at`` position (over ``names``), with its ``sources`` entry (the Kafka partition) if given."""
    everything = np.arange(len(values))
    decoded = decode_batch(values, schema) if len(values) else None
    if decoded is None:
        return FastRows(Events.empty(), everything[:0], everything)
    fields = decoded.fields
    good = ~decoded.failed
    ids = {}
    for name in _TEXT_FIELDS:
        ids[name], ok = _text_column(decoded, _plain(fields[name]), good, intern=name != "request_id")
        good &= ok
    times = _plain(fields["event_time"])
    good &= (times.kind == INTEGER) & (times.integer >= MIN_EVENT_TIME_MS) & (times.integer < MAX_EVENT_TIME_MS)
    score, has_score, ok = _score(fields.get("score"), len(values))
    good &= ok
    decision, has_decision, ok = _decision(decoded, fields.get("decision"), len(values))
    good &= ok
    features_field = fields.get("features")
    has_output = has_score | has_decision
    if isinstance(features_field, dict):
        kind = np.where(has_output, COMBINED, REQUEST).astype(np.int8)
        features, ok = _features(decoded, features_field, good)
        good &= ok
    else:  # a response schema: no features
        kind = np.full(len(values), RESPONSE, dtype=np.int8)
        features = {}
        good &= has_output
    rows = np.flatnonzero(good)
    take = slice(None) if len(rows) == len(values) else rows  # every row taken: no copies
    position = at if len(rows) == len(values) else at[rows]
    source = _pick(sources, rows) if sources is not None else np.zeros(0, dtype=object)
    events = Events(kind=kind[take], request_id=ids["request_id"][take], model=ids["model"][take],
                    model_version=ids["model_version"][take],
                    event_time=times.integer[rows],  # a copy: the column is a view of the whole decoded block
                    score=score[take], decision=decision[take],
                    features={name: column[take] for name, column in features.items()}, position=position,
                    source=source, sources=names)
    return FastRows(events, rows, np.flatnonzero(~good))


def _pick(items: Sequence[str], rows: NDArray[np.intp]) -> NDArray[np.object_]:
    out = np.empty(len(rows), dtype=object)
    out[:] = [items[row] for row in rows.tolist()] if len(rows) < len(items) else items
    return out


def _plain(field: Values | dict[str, Values]) -> Values:
    if isinstance(field, dict):
        raise TypeError("expected a plain field, found a map")
    return field


def _text_column(decoded: Decoded, values: Values, decodable: NDArray[np.bool_],
                 intern: bool) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Non-empty text without NUL characters, and the mask of rows that have it (read only where
    ``decodable``); ``intern``: few distinct values (a model name), kept as shared ``str`` objects."""
    ok = decodable & (values.kind == STRING) & (values.length > 0)
    strings, invalid = text(decoded.buffer, np.where(ok, values.start, 0), np.where(ok, values.length, 0),
                            nul_invalid=True)
    ok &= ~invalid
    return (_interned(strings) if intern and strings.dtype.kind == "U" else strings), ok


def _interned(strings: NDArray[np.str_]) -> NDArray[np.object_]:
    if len(strings) and (strings == strings[0]).all():  # one model (version, decision) in the batch: no sort
        return np.full(len(strings), str(strings[0]), dtype=object)
    distinct, inverse = np.unique(strings, return_inverse=True)
    return distinct.astype(object)[inverse]


def _score(field: Values | dict[str, Values] | None, n: int) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """(score, whether present, whether usable): a finite double, float or int, or null."""
    if field is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    values = _plain(field)
    score = np.where(values.kind == FLOAT, values.number,
                     np.where(values.kind == INTEGER, values.integer.astype(np.float64), np.nan))
    # NaN and ±inf are bad events (decoded one at a time, which names them): as everywhere else
    ok = ((values.kind == FLOAT) & np.isfinite(score)) | (values.kind == NULL) | (
        (values.kind == INTEGER) & (np.abs(values.integer) < EXACT_INTEGERS))
    return score, values.kind != NULL, ok


def _decision(decoded: Decoded, field: Values | dict[str, Values] | None,
              n: int) -> tuple[NDArray[np.object_], NDArray[np.bool_], NDArray[np.bool_]]:
    """(decision, whether present, whether usable): text or null."""
    out = np.full(n, None, dtype=object)
    if field is None:
        return out, np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    values = _plain(field)
    present = values.kind == STRING
    if present.any():
        rows = np.flatnonzero(present)
        strings, invalid = text(decoded.buffer, values.start[rows], values.length[rows])
        out[rows] = _interned(strings) if strings.dtype.kind == "U" else strings
        present[rows[invalid]] = False
        return out, values.kind != NULL, present | (values.kind == NULL)
    return out, values.kind != NULL, values.kind == NULL


def _features(decoded: Decoded, per_key: dict[str, Values],
              good: NDArray[np.bool_]) -> tuple[dict[str, NDArray[Any]], NDArray[np.bool_]]:
    """One column per feature name: float64 (NaN where null or absent) when every value is a number a
    float holds exactly, numpy strings when every row has text, else objects as fastavro gives them;
    and the rows whose features are usable."""
    ok = np.ones(len(good), dtype=bool)
    columns: dict[str, NDArray[Any]] = {}
    for name, values in per_key.items():
        kind = values.kind
        numeric = (kind == FLOAT) | (kind == NULL) | (kind == ABSENT) | (
            (kind == INTEGER) & (np.abs(values.integer) < EXACT_INTEGERS))
        if numeric[good].all():
            columns[name] = np.where(kind == FLOAT, values.number,
                                     np.where(kind == INTEGER, values.integer.astype(np.float64), np.nan))
            continue
        if (kind == STRING).all():  # text in every row: numpy strings, no object per value
            strings, invalid = text(decoded.buffer, values.start, values.length)
            columns[name] = strings
            ok &= ~invalid
            continue
        column = np.full(len(kind), None, dtype=object)
        for wanted, fill in ((FLOAT, values.number), (INTEGER, values.integer), (BOOLEAN, values.integer != 0)):
            rows = np.flatnonzero(kind == wanted)
            column[rows] = fill[rows].astype(object) if len(rows) else column[rows]
        rows = np.flatnonzero(kind == STRING)
        if len(rows):
            strings, invalid = text(decoded.buffer, values.start[rows], values.length[rows])
            column[rows] = strings.astype(object) if strings.dtype.kind == "U" else strings
            ok[rows[invalid]] = False
        rows = np.flatnonzero(kind == ENUM)
        if len(rows):
            column[rows] = np.asarray(values.symbols, dtype=object)[values.integer[rows]]
        ok &= np.isin(kind, (FLOAT, INTEGER, BOOLEAN, STRING, ENUM, NULL, ABSENT))  # bytes: not a feature value
        columns[name] = column
    return columns, ok
