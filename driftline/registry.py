"""The model registry: every configured (model, version) with its reference profile, policies and
window spec, built once from a :class:`~driftline.protocols.ProfileSource` (files today). The single
place monitors, deciders and feature sets are made, so the single-stage pipeline and both stages of the
two-stage service judge the same windows by the same rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline.config import Config, ConfigError, ModelConfig
from driftline.connectors.profiles import load_profile
from driftline.engine.assess import AssessmentPolicy, Threshold
from driftline.engine.features import FeatureSet
from driftline.engine.monitor import ModelMonitor
from driftline.engine.policy import AlertPolicy, Decider, DeciderState, RollbackPolicy
from driftline.engine.profile import ReferenceProfile
from driftline.keys import ModelKey
from driftline.protocols import ProfileSource


class ProfileFiles:
    """Reference profiles from the files ``models.<name>.references`` names."""

    def profile(self, model: ModelConfig, version: str) -> ReferenceProfile:
        return load_profile(model.references[version])


class KnownProfiles:
    """Profiles already in hand (loaded before the store opened, or made by a test), else from files."""

    def __init__(self, profiles: Mapping[tuple[str, str], ReferenceProfile]) -> None:
        self.profiles = profiles

    def profile(self, model: ModelConfig, version: str) -> ReferenceProfile:
        known = self.profiles.get((model.name, version))
        return known if known is not None else load_profile(model.references[version])


class ModelRegistry:
    def __init__(self, config: Config, source: ProfileSource | None = None) -> None:
        source = source if source is not None else ProfileFiles()
        self.config = config
        self.spec = config.windows.spec()
        """The one window spec of every model (``windows``: size, hop, lateness, bounds)."""
        self.models: dict[str, ModelConfig] = {model.name: model for model in config.models}
        self.profiles: dict[tuple[str, str], ReferenceProfile] = {}
        """(model, version) → its reference profile (keys are :class:`~driftline.keys.ModelKey`)."""
        for model in config.models:
            for version in model.references:
                profile = source.profile(model, version)
                if (profile.model, profile.model_version) != (model.name, version):
                    raise ConfigError(f"models.{model.name}.references.{version}: {model.references[version]} "
                                      f"profiles {profile.model} {profile.model_version}, not {model.name} {version}")
                self.profiles[ModelKey(model.name, version)] = profile

    def features(self, key: tuple[str, str]) -> FeatureSet:
        return FeatureSet(self.profiles[ModelKey(*key)])

    def monitor(self, key: tuple[str, str], watch_score: bool = True) -> ModelMonitor:
        """A fresh monitor of one model version; ``watch_score=False`` leaves the score change watch off
        whatever the policy says (stage 2, which sees counts only)."""
        model = self.models[key[0]]
        watch = model.policy.change_watch
        return ModelMonitor(self.profiles[ModelKey(*key)], self.spec, assessment_policy(model),
                            watch_score=watch_score and watch.enabled,
                            watch_significance_level=watch.significance_level)

    def deciders(self) -> dict[str, Decider]:
        """One decider per model, sharing one state: the circuit breaker is fleet-wide."""
        state = DeciderState()
        return {model.name: Decider(*decision_policies(self.config, model), state=state)
                for model in self.config.models}


def deciders_snapshot(deciders: Mapping[str, Decider]) -> dict[str, Any] | None:
    """The deciders' one shared state (for a checkpoint); None without a model."""
    decider = next(iter(deciders.values()), None)
    return decider.state.to_dict() if decider is not None else None


def restore_deciders(deciders: Mapping[str, Decider], data: Mapping[str, Any] | None) -> None:
    """The shared state of :func:`deciders_snapshot` back into every decider."""
    if data is None:
        return
    state = DeciderState.from_dict(data)
    for decider in deciders.values():  # one fleet-wide state, shared
        decider.state = state


def assessment_policy(model: ModelConfig) -> AssessmentPolicy:
    p = model.policy
    kwargs: dict[str, Any] = {"min_samples": p.min_samples, "drift_share": p.drift_share,
                              "pvalue_correction": p.pvalue_correction}
    if p.thresholds is not None:
        kwargs["thresholds"] = tuple(Threshold(**t.model_dump()) for t in p.thresholds)
    return AssessmentPolicy(**kwargs)


def decision_policies(config: Config, model: ModelConfig) -> tuple[AlertPolicy, RollbackPolicy]:
    p, fleet = model.policy, config.rollback
    return (AlertPolicy(consecutive=p.consecutive, resolve_after=p.resolve_after),
            RollbackPolicy(triggers=dict(p.rollback_on), cooldown_ms=p.cooldown, daily_cap=p.daily_cap,
                           breaker_models=fleet.breaker_models, breaker_window_ms=fleet.breaker_window,
                           dry_run=fleet.dry_run, kill_switch=fleet.kill_switch,
                           on_change_detection=p.change_watch.rollback))
