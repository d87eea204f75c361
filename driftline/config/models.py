"""The models section: each model's reference profiles, its decision policy (thresholds, hysteresis,
rollback triggers, the score change watch), and the fleet-wide rollback guards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from driftline.config.base import DurationMs, Severity, Strict


class ThresholdConfig(Strict):
    metric: Literal[
        "psi", "psi_pvalue", "js_distance", "ks_statistic", "ks_pvalue", "wasserstein_normed", "out_of_range_share",
        "chi2_pvalue", "l_infinity", "unseen_share", "missing_rate", "missing_rate_shift", "approval_rate",
        "approval_rate_shift"]
    warn: float | None = None
    critical: float | None = None
    direction: Literal["above", "below"] = "above"
    absolute: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        if self.warn is None and self.critical is None:
            raise ValueError(f"threshold for {self.metric} sets neither warn nor critical")
        if self.warn is not None and self.critical is not None:
            if self.direction == "above" and self.critical < self.warn:
                raise ValueError(f"{self.metric}: critical ({self.critical}) must be >= warn ({self.warn}) "
                                 "for a metric that breaches above")
            if self.direction == "below" and self.critical > self.warn:
                raise ValueError(f"{self.metric}: critical ({self.critical}) must be <= warn ({self.warn}) "
                                 "for a metric that breaches below")
        return self


class ChangeWatchConfig(Strict):
    """The score change watch between window closes (driftline.engine.changewatch: ADWIN, batch-native)."""

    enabled: bool = True
    significance_level: float = Field(0.002, gt=0, lt=1)
    """ADWIN's δ (river's ``delta``): smaller is fewer false alarms and later detections."""
    rollback: bool = False
    """Whether a detection also asks for a rollback (through the same guards as a window's: kill switch,
    cooldown, daily cap, circuit breaker, dry-run). Off: a detection is an early warning only."""


class PolicyConfig(Strict):
    min_samples: int = Field(500, ge=1)
    drift_share: float = Field(0.5, gt=0, le=1)
    pvalue_correction: Literal["holm", "bonferroni", "none"] = "holm"
    thresholds: tuple[ThresholdConfig, ...] | None = None
    """None: the defaults of ``driftline.engine.assess`` (stated with their sources there)."""
    consecutive: int = Field(2, ge=1)
    resolve_after: int = Field(3, ge=1)
    rollback_on: dict[Literal["feature", "score", "decision", "dataset"], Severity] = Field(
        default_factory=lambda: {"score": "critical", "decision": "critical", "dataset": "critical"})
    cooldown: DurationMs = 6 * 3_600_000
    daily_cap: int = Field(2, ge=0)
    change_watch: ChangeWatchConfig = ChangeWatchConfig()


class ModelConfig(Strict):
    name: str = Field(min_length=1)
    references: dict[Annotated[str, BeforeValidator(str)], Path]
    """Model version → reference profile JSON."""
    policy: PolicyConfig = PolicyConfig()
    version_gone_after: int = Field(2, ge=1)
    """A version with no events for this many consecutive windows, while another version of the model
    carries traffic, has disappeared (a ``version_changes`` row, an audit entry, a control-topic event)."""
    version_baseline_windows: int | None = Field(None, ge=0)
    """How many of a new version's first windows are also compared with the last window of the version it
    replaced (baseline ``previous_version``); None: ``policy.consecutive``, so such a comparison can fire an
    alert; 0: none."""

    @model_validator(mode="after")
    def _has_reference(self) -> ModelConfig:
        if not self.references:
            raise ValueError("needs at least one version → reference profile")
        return self


class RollbackConfig(Strict):
    dry_run: bool = True
    kill_switch: bool = False
    breaker_models: int = Field(3, ge=1)
    breaker_window: DurationMs = 3_600_000
