"""What every configuration section is built from: strict frozen models, durations with units, and the
error a configuration that cannot be used raises."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from driftline.errors import DriftlineError

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


class ConfigError(DriftlineError):
    """A configuration that cannot be used; the message names every bad field."""


def _duration_ms(value: Any) -> Any:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; use e.g. 250ms, 90s, 5m, 1h or 7d")
        return int(match.group(1)) * _UNITS_MS[match.group(2)]
    return value


DurationMs = Annotated[int, BeforeValidator(_duration_ms), Field(ge=0)]
"""Milliseconds, or a string with a unit: ``250ms``, ``90s``, ``5m``, ``1h``, ``7d``."""
Severity = Literal["ok", "warn", "critical"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
