"""The configuration: one YAML file, validated by pydantic, overridable from the environment
(:mod:`~driftline.config.loading`), loaded once at the entry point into one frozen :class:`Config` that is
passed down. One module per concern: :mod:`~driftline.config.sections` (store, windows, join),
:mod:`~driftline.config.models` (models, policies, rollback guards), :mod:`~driftline.config.kafka`."""

from __future__ import annotations

from driftline.config.base import ConfigError, DurationMs, Severity, Strict
from driftline.config.kafka import (FORMAT_FIELDS, INFERENCE_FORMATS, AvroTopic, ConfluentAvroTopic, InferenceTopic,
                                    JsonTopic, KafkaConfig, NewTopicsConfig, OipProtobufTopic, TopicConfig)
from driftline.config.loading import apply_overrides, load_config
from driftline.config.models import (ChangeWatchConfig, ModelConfig, PolicyConfig, RollbackConfig,
                                     ThresholdConfig)
from driftline.config.root import Config
from driftline.config.sections import JoinConfig, StoreConfig, WindowConfig

__all__ = ["FORMAT_FIELDS", "INFERENCE_FORMATS", "AvroTopic", "ChangeWatchConfig", "ConfluentAvroTopic",
           "InferenceTopic", "JsonTopic", "OipProtobufTopic", "Config", "ConfigError", "DurationMs",
           "JoinConfig", "KafkaConfig", "ModelConfig", "NewTopicsConfig", "PolicyConfig", "RollbackConfig",
           "Severity", "StoreConfig", "Strict", "ThresholdConfig", "TopicConfig", "WindowConfig",
           "apply_overrides", "load_config"]
