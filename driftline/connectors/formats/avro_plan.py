"""Which Avro schemas :mod:`driftline.connectors.formats.avro_batch` decodes, and each field's plan for its loop.

A field's :data:`Plan` (map or not, union or not, the wire type of every branch) is what the compiled
loop is generated from (:func:`field_plans`); :func:`batchable` says whether every field of a record has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Wire types of one union branch (or of a non-union field): the value kinds, with floats by width.
_WIRE = {"null": "null", "boolean": "boolean", "int": "long", "long": "long", "float": "float",
         "double": "double", "string": "string", "bytes": "bytes"}
MAX_BRANCHES = 16

Plan = tuple[bool, bool, tuple[tuple[str, int], ...]]
"""A batchable field: (is a map, is a union, (wire type, enum size) per branch)."""


def batchable(schema: Any) -> bool:
    """Whether :func:`~driftline.connectors.formats.avro_batch.decode_batch` handles this (fastavro-parsed) schema."""
    if not isinstance(schema, dict) or schema.get("type") != "record" or not schema.get("fields"):
        return False
    return all(plan is not None for plan in field_plans(schema))


def field_plans(schema: Mapping[str, Any]) -> list[Plan | None]:
    """Each field's plan; enums defined in an earlier field may be named by a later one."""
    named: dict[str, Any] = {}
    plans = []
    for field in schema["fields"]:
        plans.append(_field_plan(resolved(field["type"], named)))
    return plans


def resolved(schema: Any, named: dict[str, Any]) -> Any:
    """The schema with references to enums seen before replaced by their definitions."""
    if isinstance(schema, list):
        return [resolved(branch, named) for branch in schema]
    if isinstance(schema, str):
        return named.get(schema, schema)
    if isinstance(schema, dict):
        if schema.get("type") == "enum":
            named[schema["name"]] = schema
        elif schema.get("type") == "map":
            return {**schema, "values": resolved(schema["values"], named)}
    return schema


def _field_plan(schema: Any) -> Plan | None:
    is_map = isinstance(schema, dict) and schema.get("type") == "map"
    value = schema["values"] if is_map else schema
    branches = value if isinstance(value, list) else [value]
    if not branches or len(branches) > MAX_BRANCHES:
        return None
    wires = [_wire(branch) for branch in branches]
    if any(w is None for w in wires):
        return None
    return is_map, isinstance(value, list), tuple(wires)  # type: ignore[arg-type]


def _wire(schema: Any) -> tuple[str, int] | None:
    if isinstance(schema, str):
        return (_WIRE[schema], 0) if schema in _WIRE else None
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "enum":
            return "enum", len(schema["symbols"])
        if isinstance(kind, str) and kind in _WIRE:  # {"type": "long", "logicalType": ...}
            return _WIRE[kind], 0
    return None


def enum_symbols(schema: Any) -> tuple[str, ...]:
    value = schema["values"] if isinstance(schema, dict) and schema.get("type") == "map" else schema
    for branch in value if isinstance(value, list) else [value]:
        if isinstance(branch, dict) and branch.get("type") == "enum":
            return tuple(branch["symbols"])
    return ()
