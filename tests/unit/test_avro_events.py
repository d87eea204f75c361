"""The columnar Avro path gives the same events as decoding one message at a time with fastavro and
validating each record with EventBuilder; what it does not take, the one-by-one path handles."""

from __future__ import annotations

import io
import math
import random
from typing import Any

import fastavro
import numpy as np

from driftline.connectors.formats.avro_events import ColumnarSchema, avro_events, columnar
from driftline.connectors.formats.codecs import avro_schema
from driftline.events import EventBuilder, Events, Source, positions

T0 = 1_767_225_600_000


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


TOPIC = (Source("t"),)


def at(partition: int, offsets: Any) -> Any:
    """Positions of messages at ``offsets`` of ``t[partition]``."""
    offsets = np.asarray(list(offsets), dtype=np.int64)
    return positions(0, partition, offsets, n=len(offsets))


def one_by_one(schema: Any, values: list[bytes], where: Any) -> tuple[Events, list[str], list[int]]:
    builder = EventBuilder(TOPIC)
    rows = []
    for row, (value, spot) in enumerate(zip(values, where.tolist(), strict=True)):
        record = fastavro.schemaless_reader(io.BytesIO(value), schema)
        if builder.add(record, spot):
            rows.append(row)
    return builder.build(), [b.origin for b in builder.bad], rows


def plain(values: np.ndarray) -> list[Any]:
    """Values as the engine reads them: a float column's NaN and an object column's None are both null."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values.tolist()]


def assert_same_events(fast: Events, slow: Events) -> None:
    assert len(fast) == len(slow)
    for name in ("kind", "request_id", "model", "model_version", "event_time", "decision"):
        assert plain(getattr(fast, name)) == plain(getattr(slow, name)), name
    assert fast.where() == slow.where()
    assert plain(fast.score) == plain(slow.score)
    for name in set(fast.features) | set(slow.features):
        absent = np.full(len(fast), None, dtype=object)
        assert plain(fast.features.get(name, absent)) == plain(slow.features.get(name, absent)), name


def scoring_record(rng: random.Random, i: int) -> dict[str, Any]:
    """Mostly ordinary events, with every kind of oddity the one-by-one path must judge."""
    record: dict[str, Any] = {
        "request_id": f"r{i}", "model": "credit", "model_version": rng.choice(["1", "2"]),
        "event_time": T0 + i * 1000,
        "features": {"income": rng.choice([rng.uniform(0, 1e5), None, 42, 2 ** 60]),
                     "country": rng.choice(["DE", "FR", "ÅLAND", None, 7, True]),
                     "flag": rng.choice([True, False, None])},
        "score": rng.choice([rng.random(), None]), "decision": rng.choice(["approve", "decline", None]),
    }
    oddity = rng.randrange(12)
    if oddity == 0:
        record["request_id"] = ""
    elif oddity == 1:
        record["model"] = "cre\x00dit"
    elif oddity == 2:
        record["event_time"] = 1_767_225_600  # seconds, not milliseconds
    elif oddity == 3:
        record["request_id"] = f"é{i}"
    elif oddity == 4:
        del record["features"]["income"]
    elif oddity == 5:
        record["features"]["extra"] = "x" * 100
    return record


def test_scoring_events_equal_the_one_by_one_path() -> None:
    schema = avro_schema("scoring_event.avsc")
    assert columnar(schema)
    rng = random.Random(5)
    values = [encode(schema, scoring_record(rng, i)) for i in range(3000)]
    origins = at(0, range(len(values)))
    fast = avro_events(values, schema, origins, TOPIC, ["t[0]"] * len(values))
    slow, bad, slow_rows = one_by_one(schema, values, origins)
    # the rows the fast path left are the ones the one-by-one path rejects, or took after a closer look
    rest_events, rest_bad, rest_rows = one_by_one(schema, [values[i] for i in fast.rest], origins[fast.rest])
    assert sorted(bad) == sorted(rest_bad)
    merged = Events.concat([fast.events, rest_events])
    order = np.argsort(np.concatenate([fast.rows, fast.rest[rest_rows]]), kind="stable")
    assert_same_events(merged.take(order), slow)
    assert len(fast.rows) > 2000  # the ordinary rows went the fast way
    assert plain(fast.events.source) == ["t[0]"] * len(fast.rows)


def test_requests_and_responses() -> None:
    rng = random.Random(9)
    for name in ("scoring_request.avsc", "scoring_response.avsc"):
        schema = avro_schema(name)
        assert columnar(schema)
        records = []
        for i in range(500):
            record = {"request_id": f"r{i}", "model": "credit", "model_version": "1", "event_time": T0 + i}
            if name == "scoring_request.avsc":
                record["features"] = {"income": rng.random()}
            else:
                record["score"] = rng.choice([rng.random(), None])
                record["decision"] = rng.choice(["approve", None])
            records.append(record)
        values = [encode(schema, r) for r in records]
        origins = at(1, range(len(values)))
        fast = avro_events(values, schema, origins, TOPIC)
        slow, bad, _ = one_by_one(schema, values, origins)
        rest_events, rest_bad, rest_rows = one_by_one(schema, [values[i] for i in fast.rest],
                                                      origins[fast.rest])
        assert sorted(bad) == sorted(rest_bad)
        order = np.argsort(np.concatenate([fast.rows, fast.rest[rest_rows]]), kind="stable")
        assert_same_events(Events.concat([fast.events, rest_events]).take(order), slow)


def test_non_finite_scores_are_bad_events_on_both_paths() -> None:
    # the fast path leaves NaN and ±inf scores to the one-by-one path, which rejects them by name
    schema = avro_schema("scoring_event.avsc")
    scores = [0.2, math.inf, 0.3, -math.inf, math.nan, None, 0.4]
    records = [{"request_id": f"r{i}", "model": "credit", "model_version": "1", "event_time": T0 + i,
                "features": {"income": 1.0}, "score": score, "decision": "approve"} for i, score in enumerate(scores)]
    values = [encode(schema, r) for r in records]
    origins = at(0, range(len(values)))
    fast = avro_events(values, schema, origins, TOPIC)
    assert fast.rest.tolist() == [1, 3, 4]
    _, _, slow_rows = one_by_one(schema, values, origins)
    assert slow_rows == [0, 2, 5, 6]
    builder = EventBuilder(TOPIC)
    for i in fast.rest.tolist():
        builder.add(fastavro.schemaless_reader(io.BytesIO(values[i]), schema), origins[i].tolist())
    assert [(b.origin, b.error_class, b.reason) for b in builder.bad] == [
        ("t[0]@1", "InvalidScore", "score must be a finite number or null, got inf"),
        ("t[0]@3", "InvalidScore", "score must be a finite number or null, got -inf"),
        ("t[0]@4", "InvalidScore", "score must be a finite number or null, got nan")]


def test_corrupt_messages_are_left_to_the_one_by_one_path() -> None:
    schema = avro_schema("scoring_event.avsc")
    rng = random.Random(1)
    good = [encode(schema, scoring_record(rng, i)) for i in range(50)]
    values = good + [good[0][:10], b"", b"\xff" * 30, good[1] + b"\x00"]
    fast = avro_events(values, schema, at(0, range(len(values))), TOPIC)
    assert set(fast.rest.tolist()) >= {50, 51, 52, 53}


def test_schema_checks() -> None:
    assert ColumnarSchema.of(avro_schema("scoring_event.avsc")) is not None
    no_ids = fastavro.parse_schema({"type": "record", "name": "X", "fields": [{"name": "x", "type": "long"}]})
    assert ColumnarSchema.of(no_ids) is None


def test_schemas_read_one_at_a_time() -> None:
    """Shapes whose meaning the columnar path would have to guess are left to fastavro + EventBuilder."""
    base = [{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
            {"name": "model_version", "type": "string"}]

    def schema(*fields: dict[str, Any]) -> Any:
        return fastavro.parse_schema({"type": "record", "name": "S", "fields": [*base, *fields]})
    micros = {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}}
    local = {"name": "event_time", "type": {"type": "long", "logicalType": "local-timestamp-millis"}}
    millis = {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}}
    assert not columnar(schema(micros)) and not columnar(schema(local))
    assert columnar(schema(millis)) and columnar(schema({"name": "event_time", "type": "long"}))
    assert not columnar(schema(millis, {"name": "features", "type": "string"}))
    assert not columnar(schema(millis, {"name": "kind", "type": "string"}))
    assert not columnar(schema(millis, {"name": "score", "type": {"type": "map", "values": "double"}}))


def test_numbers_as_categories_read_the_same_from_floats_and_from_objects() -> None:
    """The columnar path hands a numeric column over as float64, the one-by-one path as Python objects:
    as category labels both must print alike (the engine counts labels)."""
    from driftline.engine.bins import category_strings

    values = [3.0, 3.5, 1e20, -0.0, 1e-7, 12345678901234.0, 1e16, -2.0]
    typed, _ = category_strings(np.asarray(values, dtype=np.float64))
    objects, _ = category_strings(np.asarray(values, dtype=object))
    ints, _ = category_strings(np.asarray([3, -2, 0], dtype=object))
    assert typed.tolist() == objects.tolist()
    assert ints.tolist() == ["3", "-2", "0"]
