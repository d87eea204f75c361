"""Message decoders: one Kafka message value (bytes) → one scoring record (dict), or a DecodeError.

Formats ``json``, ``avro`` and ``avro-confluent`` (docs/events.md). A decoder never lets an exception
other than :class:`DecodeError` escape: whatever the bytes, the caller gets a record or a reason.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import fastavro
import orjson

from driftline.errors import DriftlineError
from driftline.events import json_error_reason
from driftline.schemas import schema_text

Record = dict[str, Any]
Decoder = Callable[[bytes], Record]
CONFLUENT_MAGIC = 0


class DecodeError(DriftlineError):
    """Bytes that are not a record of the topic's format; ``error_class`` goes into the dead-letter headers."""

    def __init__(self, reason: str, error_class: str = "DecodeError") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


def decode_json(value: bytes) -> Record:
    try:
        record = orjson.loads(value)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, numbers past Python's digit limit
        raise DecodeError(f"not JSON: {json_error_reason(exc)}", type(exc).__name__) from None
    if not isinstance(record, dict):
        raise DecodeError(f"expected a JSON object, got {type(record).__name__}", "SchemaMismatch")
    return record


@functools.cache
def avro_schema(schema_name: str = "scoring_event.avsc") -> Any:
    """One of driftline's scoring schemas, parsed by fastavro."""
    return fastavro.parse_schema(json.loads(schema_text(schema_name)))


def avro_decoder(schema_name: str = "scoring_event.avsc") -> Decoder:
    """Raw Avro binary of one of driftline's scoring schemas."""
    schema = avro_schema(schema_name)

    def decode(value: bytes) -> Record:
        return _read_avro(value, schema)

    return decode


def _read_avro(value: bytes, schema: Any) -> Record:
    buffer = io.BytesIO(value)
    try:
        record = fastavro.schemaless_reader(buffer, schema)
    except EOFError:
        raise DecodeError("truncated Avro record", "TruncatedAvro") from None
    except Exception as exc:  # fastavro raises many types on bad bytes; all mean "not this schema"
        raise DecodeError(f"not Avro of the topic's schema: {type(exc).__name__}: {exc}", "AvroDecodeError") from None
    if buffer.tell() != len(value):
        raise DecodeError(f"{len(value) - buffer.tell()} bytes left after the Avro record", "AvroDecodeError")
    if not isinstance(record, dict):
        raise DecodeError("the Avro value is not a record", "SchemaMismatch")
    return record  # a timestamp-millis event_time is an aware datetime, which validation reads


class RegistryUnavailable(DriftlineError):
    """The schema registry could not be asked (network, 5xx): transient. The batch is not committed and
    is consumed again; nothing is dead-lettered for it."""


class SchemaRegistry:
    """Writer schemas by id from a Confluent-compatible Schema Registry, cached for the process."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._schemas: dict[int, Any] = {}

    def schema(self, schema_id: int) -> Any:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        request = urllib.request.Request(f"{self.url}/schemas/ids/{schema_id}",
                                         headers={"Accept": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (configured URL)
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise DecodeError(f"schema id {schema_id} is unknown to the registry", "UnknownSchemaId") from None
            raise RegistryUnavailable(f"schema registry {self.url} answered {exc.code} for id {schema_id}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryUnavailable(f"schema registry {self.url} unreachable: {exc}") from None
        try:
            schema = fastavro.parse_schema(json.loads(body["schema"]))
        except Exception as exc:  # a schema driftline cannot use (references, bad JSON): every message fails
            raise DecodeError(f"schema id {schema_id} cannot be used: {type(exc).__name__}: {exc}",
                              "UnusableSchema") from None
        self._schemas[schema_id] = schema
        return schema


def confluent_avro_decoder(registry: SchemaRegistry) -> Decoder:
    def decode(value: bytes) -> Record:
        if len(value) < 5 or value[0] != CONFLUENT_MAGIC:
            raise DecodeError("not in the Confluent wire format (magic byte 0 and a 4-byte schema id)",
                              "WireFormatError")
        (schema_id,) = struct.unpack(">I", value[1:5])
        return _read_avro(value[5:], registry.schema(schema_id))

    return decode


def make_decoder(fmt: str, registry: SchemaRegistry | None = None, schema_name: str = "scoring_event.avsc") -> Decoder:
    if fmt == "json":
        return decode_json
    if fmt == "avro":
        return avro_decoder(schema_name)
    if fmt == "avro-confluent":
        if registry is None:
            raise DriftlineError("format avro-confluent needs kafka.schema_registry_url")
        return confluent_avro_decoder(registry)
    raise DriftlineError(f"unknown message format {fmt!r}")
