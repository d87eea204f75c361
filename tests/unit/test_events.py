"""Canonical scoring events: EventBuilder validation (every bad field → a BadEvent naming it), kind
inference, event-time parsing, and the columnar Events batch (take/concat with differing features)."""

from __future__ import annotations

import math
import re
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.events import (
    COMBINED, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, REQUEST, RESPONSE, BadEvent, EventBuilder, Events, Source,
    events_from_dict, events_to_dict, parse_event_time,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def record(**changes: Any) -> dict[str, Any]:
    """A valid combined event, with fields changed (a value of ``...`` removes the field)."""
    base: dict[str, Any] = {"request_id": "r-1", "model": "credit", "model_version": "3", "event_time": T0,
                            "features": {"income": 52_000.0, "country": "DE", "age": 41, "employment": None},
                            "score": 0.12, "decision": "approve"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def rejected(value: Any) -> BadEvent:
    builder = EventBuilder(Source("events.jsonl", "line"))
    assert builder.add(value, 7, b"payload") is False
    assert len(builder) == 0
    assert len(builder.bad) == 1
    bad = builder.bad[0]
    assert bad.origin == "events.jsonl line 7"
    assert bad.stage == "validate"
    assert bad.payload == b"payload"
    assert bad.describe().startswith("events.jsonl line 7: validate: ")
    return bad


def kept(value: Any) -> Events:
    builder = EventBuilder(Source("events.jsonl", "line"))
    assert builder.add(value, 1) is True, builder.bad
    assert builder.bad == []
    events = builder.build()
    assert len(events) == 1
    return events


# -- kinds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "kind"), [
    ({}, COMBINED),
    ({"score": ..., "decision": ...}, REQUEST),
    ({"features": ...}, RESPONSE),
    ({"features": ..., "decision": ...}, RESPONSE),
    ({"features": ..., "score": ...}, RESPONSE),
    ({"score": ...}, COMBINED),  # a decision alone is an output too
    ({"features": {}, "score": ..., "decision": ...}, REQUEST),  # no features is still "features"
    ({"kind": "request"}, REQUEST),  # declared kind wins over inference
    ({"kind": "response"}, RESPONSE),
    ({"kind": "combined", "score": ..., "decision": ...}, COMBINED),
])
def test_kind_is_inferred_or_declared(changes: dict[str, Any], kind: int) -> None:
    assert kept(record(**changes)).kind.tolist() == [kind]


def test_request_response_fields_are_columnar() -> None:
    request = kept(record(score=..., decision=...))
    assert np.isnan(request.score[0]) and request.decision[0] is None
    response = kept(record(features=...))
    assert response.features == {} and response.score[0] == 0.12 and response.decision[0] == "approve"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"features": ..., "score": ..., "decision": ...}, "neither features"),
    ({"kind": "combined", "features": ...}, "needs features"),
    ({"kind": "request", "features": ...}, "needs features"),
    ({"kind": "both"}, "kind must be one of combined, request, response"),
])
def test_kind_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason in rejected(record(**changes)).reason


# -- field type errors name the field -------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"request_id": ...}, "request_id"),
    ({"request_id": ""}, "request_id"),
    ({"request_id": None}, "request_id"),
    ({"request_id": ["r"]}, "request_id"),
    ({"request_id": True}, "request_id"),
    ({"request_id": 1.5}, "request_id"),
    ({"request_id": 17}, "request_id"),  # docs/events.md: a string; 17 and "17" would be one join key
    ({"model": ...}, "model"),
    ({"model": {"name": "credit"}}, "model"),
    ({"model": False}, "model"),
    ({"model_version": ...}, "model_version"),
    ({"model_version": 3.0}, "model_version"),
    ({"model_version": [3]}, "model_version"),
    ({"event_time": ...}, "event_time"),
    ({"event_time": None}, "event_time"),
    ({"event_time": True}, "event_time"),
    ({"event_time": [T0]}, "event_time"),
    ({"event_time": {"ms": T0}}, "event_time"),
    ({"event_time": "yesterday"}, "event_time"),
    ({"event_time": float(T0) + 0.5}, "event_time"),
    ({"event_time": float("nan")}, "event_time"),
    ({"event_time": float("inf")}, "event_time"),
    ({"event_time": -1}, "event_time"),
    ({"event_time": 631_152_000_000}, "event_time"),  # 1990: before 2000
    ({"event_time": 7_258_118_400_000}, "event_time"),  # 2200
    ({"event_time": "1990-01-01T00:00:00Z"}, "event_time"),
    ({"features": [1, 2]}, "features"),
    ({"features": "income=1"}, "features"),
    ({"features": 3}, "features"),
    ({"features": {"income": [1, 2]}}, "income"),
    ({"features": {"income": {"value": 1}}}, "income"),
    ({"score": "0.5"}, "score"),
    ({"score": True}, "score"),
    ({"score": [0.5]}, "score"),
    ({"score": {"p": 0.5}}, "score"),
    ({"decision": 0.5}, "decision"),
    ({"decision": ["approve"]}, "decision"),
    ({"decision": {"d": "approve"}}, "decision"),
    ({"kind": "req"}, "kind"),
    ({"kind": 1}, "kind"),
])
def test_every_bad_field_is_a_bad_event_naming_it(changes: dict[str, Any], field: str) -> None:
    bad = rejected(record(**changes))
    assert field in bad.reason
    assert bad.error_class in {"SchemaMismatch", "ValidationError"}


@pytest.mark.parametrize("value", [[record()], "a string", 42, 4.2, None, True, [], ("t",)])
def test_non_object_json_is_rejected(value: Any) -> None:
    bad = rejected(value)
    assert bad.error_class == "SchemaMismatch"
    assert bad.reason.startswith("expected a JSON object, got ")
    assert type(value).__name__ in bad.reason


@pytest.mark.parametrize("changes", [{"kind": ["request"]}, {"kind": {"name": "request"}}, {"kind": 1}])
def test_a_kind_that_is_not_a_name_is_a_bad_event_not_a_crash(changes: dict[str, Any]) -> None:
    assert "kind must be one of" in rejected(record(**changes)).reason


@pytest.mark.parametrize("score", [10 ** 400, -(10 ** 309)])
def test_score_too_large_for_a_float_is_a_bad_event_not_a_crash(score: int) -> None:
    bad = rejected(record(score=score))
    assert "score" in bad.reason and bad.error_class == "SchemaMismatch"


@pytest.mark.parametrize("score", [math.inf, -math.inf, math.nan])
def test_a_non_finite_score_is_a_bad_event_naming_the_score(score: float) -> None:
    # Avro and Parquet can carry NaN and ±inf (JSON cannot): never a missing score, never in a window
    bad = rejected(record(score=score))
    assert bad.error_class == "InvalidScore" and bad.stage == "validate"
    assert bad.reason == f"score must be a finite number or null, got {score}"


def test_accepted_type_coercions() -> None:
    events = kept(record(request_id="17", model_version=3, decision=True,
                         features={"flag": True, "n": 3, "x": float("nan"), "s": "", "missing": None}))
    assert events.request_id.tolist() == ["17"]
    assert events.model_version.tolist() == ["3"]
    assert events.decision.tolist() == ["True"]
    assert events.features["flag"][0] is True and events.features["missing"][0] is None
    assert kept(record(decision=1)).decision.tolist() == ["1"]
    assert kept(record(score=1)).score.tolist() == [1.0]
    assert np.isnan(kept(record(score=None)).score[0])


# -- event time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "millis"), [
    (T0, T0),
    (float(T0), T0),
    (T0 + 123, T0 + 123),
    ("2026-01-01T00:00:00Z", T0),
    ("2026-01-01T00:00:00+00:00", T0),
    ("2026-01-01T02:00:00+02:00", T0),
    ("2025-12-31T19:00:00-05:00", T0),
    ("2026-01-01T00:00:00.250Z", T0 + 250),
    ("2026-01-01 00:00:01Z", T0 + 1_000),
    (datetime(2026, 1, 1, tzinfo=UTC), T0),
    (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), T0),
    (MIN_EVENT_TIME_MS, MIN_EVENT_TIME_MS),
    (MAX_EVENT_TIME_MS - 1, MAX_EVENT_TIME_MS - 1),
])
def test_event_time_iso_and_epoch_millis(value: Any, millis: int) -> None:
    assert parse_event_time(value) == millis
    assert kept(record(event_time=value)).event_time.tolist() == [millis]


@pytest.mark.parametrize("seconds", [T0 // 1000, float(T0 // 1000), 946_684_800, 4_102_444_799])
def test_epoch_seconds_are_rejected_with_a_hint(seconds: int | float) -> None:
    bad = rejected(record(event_time=seconds))
    assert "event_time" in bad.reason and "epoch seconds? send milliseconds" in bad.reason


@pytest.mark.parametrize("value", [-5, 0, 12_345, 10 ** 16])
def test_far_out_of_range_times_have_no_seconds_hint(value: int) -> None:
    bad = rejected(record(event_time=value))
    assert "outside 2000–2100" in bad.reason and "epoch seconds?" not in bad.reason


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00", "2026-01-01", "2026-01-01 12:00",
                                   datetime(2026, 1, 1)])
def test_naive_times_are_rejected(value: Any) -> None:
    bad = rejected(record(event_time=value))
    assert "event_time" in bad.reason and "time zone" in bad.reason


@pytest.mark.parametrize("value", ["1767225600000", "now", "", "2026-13-01T00:00:00Z"])
def test_unparseable_time_strings(value: str) -> None:
    bad = rejected(record(event_time=value))
    assert "event_time" in bad.reason
    assert bad.error_class == "SchemaMismatch"


@given(st.integers(MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS - 1))
@settings(max_examples=50, deadline=None)
def test_iso_and_millis_agree(millis: int) -> None:
    iso = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)).isoformat().replace("+00:00", "Z")
    assert parse_event_time(millis) == millis
    assert parse_event_time(iso) == millis


# -- the builder --------------------------------------------------------------------------------------


def test_builder_keeps_the_good_reports_the_bad_and_resets() -> None:
    builder = EventBuilder(Source("f.jsonl", "line"))
    assert builder.add(record(request_id="a", features={"x": 1.0}), 1)
    assert not builder.add(record(score="high"), 2)
    assert builder.add(record(request_id="b", features={"y": "u"}, score=..., decision=...), 3)
    builder.reject(4, "decode", ValueError("Expecting value"), b"{")
    builder.reject(5, "decode", "truncated")
    assert builder.add(record(request_id="c", features=...), 6)
    events = builder.build()
    assert events.request_id.tolist() == ["a", "b", "c"]
    assert events.kind.tolist() == [COMBINED, REQUEST, RESPONSE]
    assert list(map(str, events.where())) == ["f.jsonl line 1", "f.jsonl line 3", "f.jsonl line 6"]
    assert set(events.features) == {"x", "y"}
    assert events.features["x"].tolist() == [1.0, None, None]
    assert events.features["y"].tolist() == [None, "u", None]
    assert events.event_time.dtype == np.int64 and events.score.dtype == np.float64
    assert [(b.origin, b.stage, b.error_class) for b in builder.bad] == [
        ("f.jsonl line 2", "validate", "SchemaMismatch"), ("f.jsonl line 4", "decode", "ValueError"),
        ("f.jsonl line 5", "decode", "DecodeError")]
    assert "score" in builder.bad[0].reason and builder.bad[1].payload == b"{"
    assert len(builder) == 0 and len(builder.build()) == 0  # build() hands the rows over


def test_builder_keeps_feature_values_as_sent() -> None:
    events = kept(record(features={"n": 3, "f": 2.5, "s": "x", "b": False, "z": None}))
    assert [events.features[k][0] for k in ("n", "f", "s", "b", "z")] == [3, 2.5, "x", False, None]
    assert all(v.dtype == object for v in events.features.values())


# -- columnar batches -----------------------------------------------------------------------------


def batch(source: str, *records: dict[str, Any]) -> Events:
    builder = EventBuilder(Source(source, "line"))
    for i, r in enumerate(records, start=1):
        assert builder.add(r, i), builder.bad
    return builder.build()


def test_concat_fills_absent_features_with_none() -> None:
    a = batch("a", record(request_id="1", features={"x": 1.0, "y": "p"}), record(request_id="2", features={"x": 2.0}))
    b = batch("b", record(request_id="3", features={"z": 9}, score=..., decision=...))
    c = batch("c", record(request_id="4", features=...))
    both = Events.concat([a, Events.empty(), b, c])
    assert len(both) == 4
    assert both.request_id.tolist() == ["1", "2", "3", "4"]
    assert list(both.features) == ["x", "y", "z"]
    assert both.features["x"].tolist() == [1.0, 2.0, None, None]
    assert both.features["y"].tolist() == ["p", None, None, None]
    assert both.features["z"].tolist() == [None, None, 9, None]
    assert both.kind.tolist() == [COMBINED, COMBINED, REQUEST, RESPONSE]
    assert list(map(str, both.where())) == ["a line 1", "a line 2", "b line 1", "c line 1"]
    assert both.score[:2].tolist() == [0.12, 0.12] and np.isnan(both.score[2])
    assert all(len(v) == 4 for v in both.features.values())


def test_concat_of_nothing_and_of_empties_is_empty() -> None:
    assert len(Events.concat([])) == 0
    empty = Events.concat([Events.empty(), Events.empty()])
    assert len(empty) == 0 and empty.features == {} and len(empty.position) == 0


def test_take_selects_rows_of_every_column() -> None:
    events = batch("s", *(record(request_id=str(i), event_time=T0 + i,
                                 features={"x": float(i)} if i % 2 else {"c": "k"}) for i in range(6)))
    part = events.take(np.array([5, 0, 3]))
    assert part.request_id.tolist() == ["5", "0", "3"]
    assert part.event_time.tolist() == [T0 + 5, T0, T0 + 3]
    assert part.features["x"].tolist() == [5.0, None, 3.0]
    assert part.features["c"].tolist() == [None, "k", None]
    assert list(map(str, part.where())) == ["s line 6", "s line 1", "s line 4"]
    masked = events.take(events.event_time >= T0 + 4)
    assert masked.request_id.tolist() == ["4", "5"]
    none = events.take(np.array([], dtype=np.intp))
    assert len(none) == 0 and set(none.features) == {"x", "c"}
    # take copies: changing the part leaves the source alone
    part.kind[:] = REQUEST
    assert events.kind.tolist() == [COMBINED] * 6


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3, unique=True), min_size=1, max_size=5),
       st.integers(0, 3))
@settings(max_examples=50, deadline=None)
def test_concat_then_take_keeps_each_value_with_its_row(feature_sets: list[list[str]], size: int) -> None:
    parts, expected = [], []
    for p, names in enumerate(feature_sets):
        rows = [record(request_id=f"{p}-{i}", features={n: f"{n}{p}{i}" for n in names}) for i in range(size)]
        parts.append(batch(f"p{p}", *rows))
        expected.extend(rows)
    joined = Events.concat(parts)
    assert len(joined) == len(expected)
    for row, source in enumerate(expected):
        for name, values in joined.features.items():
            assert values[row] == source["features"].get(name)
    order = np.arange(len(joined))[::-1]
    reversed_ = joined.take(order)
    assert reversed_.request_id.tolist() == [r["request_id"] for r in expected][::-1]


def test_an_integer_request_id_is_rejected_as_not_a_string() -> None:
    bad = rejected(record(request_id=17))
    assert bad.reason == "request_id must be a string, got int 17" and bad.error_class == "SchemaMismatch"


@pytest.mark.parametrize(("line", "field", "token"), [
    (b'{"request_id": "r", "score": NaN}', "field 'score'", "NaN"),
    (b'{"request_id": "r", "score": Infinity, "decision": "approve"}', "field 'score'", "Infinity"),
    (b'{"features": {"age": 30, "income": -Infinity}, "score": 0.1}', "feature 'income'", "-Infinity"),
    (b'{"event_time": nan}', "field 'event_time'", "nan"),
    (b'{"inputs": [{"name": "x", "data": [1.0, NaN]}]}', "field 'data' (in its array)", "NaN"),
])
def test_nan_and_infinity_in_json_name_their_field(tmp_path: Any, line: bytes, field: str, token: str) -> None:
    from driftline.connectors.formats.codecs import DecodeError, decode_json
    from driftline.connectors.sources import read_events

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n" + line + b"\n")
    [(_, bad)] = list(read_events(path))
    assert [b.origin for b in bad] == [f"{path} line 2"]
    assert bad[0].stage == "decode" and bad[0].error_class == "JSONDecodeError"
    assert bad[0].reason.startswith(f"{field}: {token} is not a JSON number")
    column = line.index(token.encode()) + 1
    assert bad[0].reason.endswith(f"at line 1 column {column}")
    with pytest.raises(DecodeError, match=f"^not JSON: {re.escape(field)}: {token}"):  # the Kafka decoder too
        decode_json(line)


def test_other_json_errors_keep_the_parser_message() -> None:
    from driftline.connectors.formats.codecs import DecodeError, decode_json

    with pytest.raises(DecodeError, match=r"^not JSON: trailing comma is not allowed: line 1 column 12"):
        decode_json(b'{"score": 1,}')


def test_positions_survive_a_checkpoint_and_an_older_one_still_loads() -> None:
    events = Events.concat([batch("a", record(request_id="1"), record(request_id="2")), batch("b", record(request_id="3"))])
    again = events_from_dict(json.loads(json.dumps(events_to_dict(events))))
    assert again.where() == events.where() and again.sources == events.sources
    older = {**events_to_dict(events), "position": ["scoring[2]@17", "scoring[2]@18#1", "other[0]@5"]}
    older.pop("sources")  # (a checkpoint of a release before structured positions holds their text)
    assert [(str(p), p.message) for p in events_from_dict(older).where()] == [
        ("scoring[2]@17", ("scoring", 2, 17)), ("scoring[2]@18#1", ("scoring", 2, 18)), ("other[0]@5", ("other", 0, 5))]
