"""The whole configuration: its sections, and what must hold across them."""

from __future__ import annotations

from pydantic import model_validator

from driftline.config.base import Strict
from driftline.config.kafka import KafkaConfig
from driftline.config.models import ModelConfig, RollbackConfig
from driftline.config.sections import JoinConfig, StoreConfig, WindowConfig


class Config(Strict):
    store: StoreConfig = StoreConfig()
    kafka: KafkaConfig = KafkaConfig()
    windows: WindowConfig = WindowConfig()
    join: JoinConfig = JoinConfig()
    rollback: RollbackConfig = RollbackConfig()
    models: tuple[ModelConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_models(self) -> Config:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        return self
