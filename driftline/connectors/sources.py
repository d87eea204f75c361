"""File sources of scoring events: JSON lines, Avro container files, Parquet.

Each yields columnar :class:`~driftline.events.Events` chunks together with the inputs it could not
use (:class:`~driftline.events.BadEvent`, with the line or record number and the reason). A bad line
never stops the file; a container file whose bytes are corrupt is read up to the damage and the rest
is reported as one bad input.
"""

from __future__ import annotations

import orjson
from dataclasses import replace
from datetime import UTC, datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from driftline.errors import InvalidInput
from driftline.events import BadEvent, EventBuilder, Events, InvalidEvent, Source, json_error_reason

PAYLOAD_CAP = 4_096
"""Bytes of a bad line kept with it (its full size is noted beside)."""
ENVELOPE = ("request_id", "model", "model_version", "event_time", "score", "decision", "kind")
Chunk = tuple[Events, list[BadEvent]]


SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".avro": "avro", ".parquet": "parquet",
            ".pq": "parquet"}


def check_input(path: str | Path) -> None:
    """Refuse a file that cannot be read at all, before anything is replayed: missing, not a file, of an
    unknown type, unreadable, empty, or without a readable header (Avro) or footer (Parquet), or without a
    single record or row. Raises :class:`InvalidInput` naming the file; damage further in is reported as a
    bad input of the run instead (the records before it are used)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if not path.is_file():
        raise InvalidInput(f"{path}: {'is a directory' if path.is_dir() else 'is not a regular file'}, not a file "
                           "of scoring events")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInput(f"{path}: unsupported file type; use .jsonl, .avro or .parquet")
    try:
        with path.open("rb") as handle:
            if not handle.read(1):
                raise InvalidInput(f"{path}: the file is empty")
            if kind == "avro":
                _first_avro_record(path, handle)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if kind == "parquet":
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{path}: not a readable Parquet file: {exc}") from None
        if rows == 0:
            raise InvalidInput(f"{path}: a Parquet file without rows")


def _first_avro_record(path: Path, handle: Any) -> None:
    import fastavro

    handle.seek(0)
    try:
        first = next(iter(fastavro.reader(handle)), None)
    except Exception as exc:  # fastavro raises many types on bytes that are not a container file
        raise InvalidInput(f"{path}: not a readable Avro container file: {exc}") from None
    if first is None:
        raise InvalidInput(f"{path}: an Avro container file without records")


def read_events(path: str | Path, chunk_size: int = 20_000) -> Iterator[Chunk]:
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        reason = "is a directory, not a file" if path.is_dir() else "no such file"
        yield Events.empty(), [BadEvent(str(path), "decode", "FileNotFoundError", reason)]
        return
    if name.endswith((".jsonl", ".ndjson", ".json")):
        yield from _jsonl(path, chunk_size)
    elif name.endswith(".avro"):
        yield from _avro(path, chunk_size)
    elif name.endswith((".parquet", ".pq")):
        yield from _parquet(path, chunk_size)
    else:
        yield Events.empty(), [BadEvent(str(path), "decode", "UnsupportedFormat",
                                        "unsupported file type; use .jsonl, .avro or .parquet")]


def _flush(builder: EventBuilder) -> Chunk:
    events = builder.build()
    bad, builder.bad = builder.bad, []
    return events, bad


def _jsonl(path: Path, chunk_size: int) -> Iterator[Chunk]:
    builder = EventBuilder(Source(str(path), "line"))
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a number past Python's digit limit
                builder.reject(number, "decode", InvalidEvent(json_error_reason(exc), type(exc).__name__),
                               line[:PAYLOAD_CAP])
                kept = False
            else:
                kept = builder.add(record, number, line[:PAYLOAD_CAP])
            if not kept and len(line) > PAYLOAD_CAP:  # the dead-letter file notes what was cut
                builder.bad[-1] = replace(builder.bad[-1], payload_size=len(line.rstrip(b"\r\n")))
            if len(builder) >= chunk_size:
                yield _flush(builder)
    yield _flush(builder)


def _avro(path: Path, chunk_size: int) -> Iterator[Chunk]:
    import fastavro

    builder = EventBuilder(Source(str(path), "record"))
    number = 0
    with path.open("rb") as handle:
        try:
            for number, record in enumerate(fastavro.reader(handle), start=1):
                builder.add(record, number)  # timestamp-millis: an aware datetime
                if len(builder) >= chunk_size:
                    yield _flush(builder)
        except Exception as exc:  # fastavro raises many types on corrupt bytes; all mean "cannot read on"
            builder.reject_rest(number, "decode", exc)
    yield _flush(builder)


def _parquet(path: Path, chunk_size: int) -> Iterator[Chunk]:
    builder = EventBuilder(Source(str(path), "row"))
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        yield Events.empty(), [BadEvent(str(path), "decode", type(exc).__name__, str(exc))]
        return
    names = parquet.schema_arrow.names
    flat = [n for n in names if n not in ENVELOPE and n != "features"]
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_size):
            for record in batch.to_pylist():
                number += 1
                _parquet_record(record, flat)
                builder.add(record, number)
            yield _flush(builder)
    except (pa.ArrowException, OSError) as exc:  # a damaged page: report the rest of the file, keep what was read
        builder.reject_rest(number, "decode", exc)
        yield _flush(builder)


def _parquet_record(record: dict[str, Any], flat: list[str]) -> None:
    if "features" in record:
        features = record["features"]
        if isinstance(features, list):  # a Parquet map arrives as (key, value) pairs
            record["features"] = dict(features)
    else:
        record["features"] = {n: record.pop(n) for n in flat}
    event_time = record.get("event_time")
    if isinstance(event_time, datetime) and event_time.tzinfo is None:
        record["event_time"] = event_time.replace(tzinfo=UTC)  # Parquet timestamps are UTC
