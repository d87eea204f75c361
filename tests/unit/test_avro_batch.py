"""The compiled batch decoder against fastavro, message by message: on seeded and generated records of
every batchable type, on driftline's scoring schemas, and on corrupt bytes (where a message the batch
decoder does not flag must read exactly as fastavro reads it)."""

from __future__ import annotations

import io
import json
import math
import random
import struct
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.connectors.formats.avro_batch import (ABSENT, BOOLEAN, BYTES, ENUM, FLOAT, INTEGER, NULL, STRING, Decoded,
                                             Values, batchable, decode_batch, text)
from driftline.connectors.formats.codecs import avro_schema

EVERYTHING = fastavro.parse_schema({
    "type": "record", "name": "Everything", "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "t", "type": "boolean"},
        {"name": "n", "type": "null"},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["red", "green", "blue"]}},
        {"name": "u", "type": ["null", "double", "long", "string", "boolean"]},
        {"name": "m", "type": {"type": "map", "values": ["null", "double", "long", "string", "boolean", "float"]}},
        {"name": "me", "type": {"type": "map", "values": "Colour"}},
    ]})


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def read(schema: Any, value: bytes) -> Any:
    buffer = io.BytesIO(value)
    record = fastavro.schemaless_reader(buffer, schema, None, return_record_name=False)
    if buffer.tell() != len(value):
        raise ValueError("bytes left over")
    return record


def python_value(decoded: Decoded, values: Values, row: int) -> Any:
    """What fastavro gives for one decoded value (a timestamp stays epoch ms: compared as such)."""
    kind = int(values.kind[row])
    if kind == NULL:
        return None
    if kind == BOOLEAN:
        return bool(values.integer[row])
    if kind == INTEGER:
        return int(values.integer[row])
    if kind == FLOAT:
        return float(values.number[row])
    if kind == ENUM:
        return values.symbols[int(values.integer[row])]
    raw = decoded.buffer[values.start[row]:values.start[row] + values.length[row]].tobytes()
    return raw.decode("utf-8") if kind == STRING else raw


def comparable(value: Any) -> Any:
    if hasattr(value, "timestamp"):  # fastavro's timestamp-millis
        return round(value.timestamp() * 1000)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


def batch_records(decoded: Decoded, schema: Any, row: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        column = decoded.fields[field["name"]]
        if isinstance(column, dict):
            record[field["name"]] = {key: python_value(decoded, values, row) for key, values in column.items()
                                     if values.kind[row] != ABSENT}
        else:
            record[field["name"]] = python_value(decoded, column, row)
    return record


def assert_same_as_fastavro(schema: Any, values: list[bytes]) -> Decoded:
    decoded = decode_batch(values, schema)
    assert decoded is not None
    for row, value in enumerate(values):
        try:
            expected = read(schema, value)
        except UnicodeDecodeError:  # a string value that is not UTF-8: text() says so when it is read
            if not decoded.failed[row]:
                with pytest.raises(UnicodeDecodeError):
                    batch_records(decoded, schema, row)
            continue
        except Exception:  # noqa: BLE001  fastavro refuses it: the batch must not have accepted it
            assert decoded.failed[row], f"message {row} was accepted, fastavro refuses it"
            continue
        if decoded.failed[row]:  # left to the one-at-a-time path: allowed, never wrong
            continue
        got = batch_records(decoded, schema, row)
        expected = comparable(expected)
        got = comparable(got)
        for name in ("m", "me", "features"):  # a map's key order is not part of its value
            if name in expected:
                assert got[name] == expected[name], (row, name)
        assert got == expected, row
    return decoded


def random_record(rng: random.Random) -> dict[str, Any]:
    def union_value() -> Any:
        return rng.choice([None, rng.uniform(-1e6, 1e6), rng.randint(-2 ** 63, 2 ** 63 - 1),
                           rng.choice(["", "a", "ünïcode", "x" * rng.randint(60, 200), "nul\x00inside"]),
                           rng.random() < 0.5, math.inf, -math.inf])
    keys = ["income", "age", "k" * rng.randint(1, 40), "ключ", ""]
    return {
        "s": rng.choice(["", "plain", "naïve", "z" * rng.randint(0, 300), "ends with nul\x00"]),
        "b": bytes(rng.randrange(256) for _ in range(rng.randint(0, 20))),
        "i": rng.randint(-2 ** 31, 2 ** 31 - 1),
        "l": rng.randint(0, 4_102_444_800_000),
        "f": struct.unpack("<f", struct.pack("<f", rng.uniform(-1e10, 1e10)))[0],
        "d": rng.choice([rng.uniform(-1e300, 1e300), 0.0, -0.0, math.nan, 5e-324]),
        "t": rng.random() < 0.5, "n": None,
        "e": rng.choice(["red", "green", "blue"]),
        "u": union_value(),
        "m": {rng.choice(keys): union_value() for _ in range(rng.randint(0, 8))},
        "me": {rng.choice(keys): rng.choice(["red", "blue"]) for _ in range(rng.randint(0, 3))},
    }


def test_every_batchable_type_reads_as_fastavro_reads_it() -> None:
    rng = random.Random(7)
    values = [encode(EVERYTHING, random_record(rng)) for _ in range(2000)]
    decoded = assert_same_as_fastavro(EVERYTHING, values)
    assert not decoded.failed.any()


def test_driftline_scoring_schemas() -> None:
    rng = random.Random(3)
    for name in ("scoring_event.avsc", "scoring_request.avsc", "scoring_response.avsc"):
        schema = avro_schema(name)
        assert batchable(schema)
        records = []
        for i in range(500):
            record: dict[str, Any] = {"request_id": f"r{i}", "model": "credit", "model_version": "3",
                                      "event_time": 1_767_225_600_000 + i}
            if name != "scoring_response.avsc":
                record["features"] = {"income": rng.choice([None, 1.5, 7, "x", True]), "age": rng.random()}
            if name != "scoring_request.avsc":
                record["score"] = rng.choice([None, rng.random()])
                record["decision"] = rng.choice([None, "approve", "decline"])
            records.append(record)
        decoded = assert_same_as_fastavro(schema, [encode(schema, r) for r in records])
        assert not decoded.failed.any()


def test_negative_block_counts_and_several_blocks() -> None:
    """Writers may split a map into blocks and give a block's byte size (a negative count)."""
    schema = fastavro.parse_schema({"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "long"}}]})

    def varint(n: int) -> bytes:
        out, z = b"", (n << 1) ^ (n >> 63)
        while z >= 0x80:
            out, z = out + bytes([(z & 0x7F) | 0x80]), z >> 7
        return out + bytes([z])

    def entry(key: str, value: int) -> bytes:
        return varint(len(key)) + key.encode() + varint(value)

    body = entry("a", 1) + entry("b", 2)
    value = varint(-2) + varint(len(body)) + body + varint(1) + entry("c", 3) + varint(0)
    decoded = assert_same_as_fastavro(schema, [value, encode(schema, {"m": {"a": 9}})])
    assert not decoded.failed.any()
    assert batch_records(decoded, schema, 0) == {"m": {"a": 1, "b": 2, "c": 3}}


def test_duplicate_map_keys_keep_the_last_as_fastavro_does() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "long"}}]})
    value = bytes([4, 2]) + b"a" + bytes([2, 2]) + b"a" + bytes([4, 0])
    decoded = assert_same_as_fastavro(schema, [value])
    assert batch_records(decoded, schema, 0) == {"m": {"a": 2}}


def test_corrupt_messages_are_flagged_and_never_disturb_the_others() -> None:
    rng = random.Random(11)
    good = [encode(EVERYTHING, random_record(rng)) for _ in range(300)]
    corrupt = []
    for value in good:
        cut = bytearray(value)
        kind = rng.randrange(4)
        if kind == 0 and len(cut) > 1:
            cut = cut[:rng.randrange(len(cut))]  # truncated
        elif kind == 1:
            cut[rng.randrange(len(cut))] = rng.randrange(256)  # a byte changed
        elif kind == 2:
            cut += bytes([rng.randrange(256)])  # a byte left over
        else:
            cut[rng.randrange(len(cut))] = 0xFF  # a long varint, a bad branch
        corrupt.append(bytes(cut))
    mixed = [v for pair in zip(good, corrupt, strict=True) for v in pair]
    decoded = assert_same_as_fastavro(EVERYTHING, mixed)
    assert not decoded.failed[::2].any(), "a corrupt neighbour made a good message fail"
    assert decoded.failed[1::2].sum() > 150  # the rest still read (a changed value) or hold bad UTF-8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=20))
def test_any_bytes_give_records_fastavro_agrees_with_or_a_flag(values: list[bytes]) -> None:
    assert_same_as_fastavro(EVERYTHING, values)


def test_more_distinct_keys_than_the_first_capacity() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "double"}}]})
    values = [encode(schema, {"m": {f"feature_{i}_{j}": float(j) for j in range(50)}}) for i in range(10)]
    decoded = assert_same_as_fastavro(schema, values)
    features = decoded.fields["m"]
    assert isinstance(features, dict) and len(features) == 500


def test_not_batchable() -> None:
    assert not batchable({"type": "record", "name": "A", "fields": [
        {"name": "a", "type": {"type": "array", "items": "long"}}]})
    assert not batchable(fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "I", "fields": [{"name": "x", "type": "long"}]}}]}))
    assert not batchable("string")
    assert batchable(EVERYTHING)


def test_text_handles_ascii_unicode_long_and_nul() -> None:
    strings = [b"abc", "naïve".encode(), b"x" * 100, b"tail\x00", b"", b"mid\x00dle", b"\xff\xfe"]
    buffer = np.frombuffer(b"".join(strings), dtype=np.uint8)
    lengths = np.array([len(s) for s in strings])
    starts = np.cumsum(lengths) - lengths
    for subset in ([0, 4], [0, 1], [0, 2], [0, 3], [0, 5], list(range(7))):
        rows = np.array(subset)
        out, bad = text(buffer, starts[rows], lengths[rows], nul_invalid=True)
        for got, invalid, row in zip(out.tolist(), bad.tolist(), subset, strict=True):
            try:
                expected = strings[row].decode("utf-8")
            except UnicodeDecodeError:
                assert invalid
                continue
            assert got == expected
            assert invalid == ("\x00" in expected)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_batches(n: int) -> None:
    values = [encode(EVERYTHING, random_record(random.Random(n)))] * n
    decoded = decode_batch(values, EVERYTHING)
    assert decoded is not None and len(decoded.failed) == n
