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
    """A reference profile that is malformed, fails its schema, or whose hash does not match.

    Names what it can: the file (added by the connector that read it), the model and version it
    profiles, the feature (``/srv/p/credit-3.json: reference profile credit 3: feature 'income': …``)."""

    def __init__(self, reason: str, *, path: str | None = None, model: str | None = None,
                 model_version: str | None = None, feature: str | None = None) -> None:
        self.reason = reason
        self.path = path
        self.model = model
        self.model_version = model_version
        self.feature = feature
        where = [f"{path}:"] if path else []
        if model is not None or model_version is not None:
            where.append(f"reference profile {model or '?'} {model_version or '?'}:")
        if feature is not None:
            where.append(f"feature {feature!r}:")
        super().__init__(" ".join([*where, reason]))

    def at(self, path: str, model: str | None = None, model_version: str | None = None) -> ProfileError:
        """The same error, naming the file it was read from (and the model and version, if not yet named)."""
        return ProfileError(self.reason, path=self.path or path, model=self.model or model,
                            model_version=self.model_version or model_version, feature=self.feature)
