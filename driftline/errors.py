"""Errors that carry their data.

One root, :class:`DriftlineError`; each subclass keeps the fields a caller needs to act on it
(a dead-letter record, an exit code, a message that names the problem).
"""

from __future__ import annotations


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""


class InvalidInput(DriftlineError):
    """Input data that cannot be used: an empty file, a column of the wrong type, bad values."""

    def __init__(self, reason: str, *, column: str | None = None) -> None:
        self.reason = reason
        self.column = column
        super().__init__(f"column {column!r}: {reason}" if column else reason)


class SchemaMismatch(DriftlineError):
    """Data and reference (or a record and its schema) do not match."""

    def __init__(self, field: str, expected: str, got: str) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"field {field!r}: expected {expected}, got {got}")


class ProfileError(DriftlineError):
    """A reference profile that is malformed, fails its schema, or whose hash does not match."""
