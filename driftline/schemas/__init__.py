"""Wire contracts: JSON schemas, Avro schemas and ClickHouse DDL, loaded from this folder."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


def schema_text(name: str) -> str:
    """The text of one contract file in this package, e.g. ``reference_profile.schema.json``."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@cache
def json_schema(name: str) -> dict[str, Any]:
    return json.loads(schema_text(name))  # type: ignore[no-any-return]
