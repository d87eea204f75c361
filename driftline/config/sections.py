"""The store, windows and join sections of the configuration."""

from __future__ import annotations

from pydantic import Field, model_validator

from driftline.config.base import DurationMs, Strict
from driftline.engine.window_spec import WindowSpec


class StoreConfig(Strict):
    dsn: str = Field("chdb:driftline-store", pattern=r"^(chdb:|https?://)")
    """``chdb:path`` (embedded, on disk; relative to the configuration file), ``chdb:///absolute/path``,
    or ``http(s)://user:password@host:8123`` for a ClickHouse server."""
    database: str = Field("driftline", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    ttl_days: int = Field(400, ge=1)
    """Retention of windows, alerts and rollback requests."""
    audit_ttl_days: int = Field(3650, ge=1)
    """Retention of the audit log (ten years by default: model-risk reviews look far back)."""


class WindowConfig(Strict):
    size: DurationMs = 3_600_000
    hop: DurationMs | None = None
    allowed_lateness: DurationMs = 120_000
    max_open_panes: int = Field(1_000, ge=1)
    max_future: DurationMs | None = 3_600_000

    @model_validator(mode="after")
    def _hop_divides_size(self) -> WindowConfig:
        if self.size <= 0:
            raise ValueError("size must be positive")
        if self.hop is not None and (self.hop <= 0 or self.size % self.hop):
            raise ValueError(f"hop ({self.hop} ms) must be positive and divide size ({self.size} ms)")
        hop = self.hop or self.size
        needed = self.size // hop + -(-self.allowed_lateness // hop) + 1
        if self.max_open_panes < needed:
            raise ValueError(f"max_open_panes ({self.max_open_panes}) must be at least {needed}: the panes of one "
                             "window plus those within the allowed lateness, or an in-order stream stalls")
        return self

    def spec(self) -> WindowSpec:
        """The engine's window specification: the one place it is made, for one stage and two."""
        return WindowSpec(size_ms=self.size, hop_ms=self.hop, allowed_lateness_ms=self.allowed_lateness,
                          max_open_panes=self.max_open_panes, max_future_ms=self.max_future)


class JoinConfig(Strict):
    max_wait: DurationMs = 300_000
    """How long (event time) a request waits for its response, and the reverse, before it is unmatched."""
    max_pending: int = Field(1_000_000, ge=1)
    """Bound on requests and responses waiting for their other half; beyond it the oldest are unmatched."""
