"""Loading the configuration: the YAML file, ``DRIFTLINE__SECTION__FIELD`` overrides from the environment
(the one place ``os.environ`` is read; keys lower-cased, list items by index, values parsed as YAML
scalars), validation with messages that name the field (``models.0.policy.min_samples: Input should be
greater than or equal to 1``), and paths made relative to the file's folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from driftline.config.base import ConfigError
from driftline.config.root import Config


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None, *,
                require_models: bool = True) -> Config:
    """Read the YAML file (or start empty), apply ``DRIFTLINE__…`` overrides, validate.

    A configuration monitors models: one without any is refused (``models: …``), unless
    ``require_models`` is false, for a command that only reads the store (``driftline query``)."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration file: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    apply_overrides(data, os.environ if environ is None else environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}: {problems}") from None
    if require_models and not config.models:
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}: models: no model is configured; "
                          "name at least one, with its reference profiles (models: [{name: credit_scoring, "
                          "references: {\"3\": profiles/credit_scoring-3.json}}])")
    return _resolve_paths(config, Path(path).resolve().parent if path is not None else Path.cwd())


def apply_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Set ``section.field`` from every ``DRIFTLINE__SECTION__FIELD`` variable (see module docstring)."""
    for key, raw in sorted(environ.items()):
        if not key.startswith("DRIFTLINE__"):
            continue
        parts = [p.lower() for p in key[len("DRIFTLINE__"):].split("__") if p]
        if not parts:
            raise ConfigError(f"{key}: names no configuration field")
        try:
            _set_path(data, parts, _scalar(raw))
        except (ValueError, TypeError, IndexError, AttributeError):
            raise ConfigError(f"{key}: does not fit the configuration's shape at {'.'.join(parts)}") from None


_LISTS = {"models", "thresholds", "topics"}


def _scalar(raw: str) -> Any:
    """A YAML scalar (``true``, ``12``, ``5m``), or the text itself when it is not one."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw
    return raw if isinstance(value, (dict, list)) else value


def _set_path(data: Any, parts: list[str], value: Any) -> None:
    target = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(target, list):
            index = int(part)
            if index > len(target):
                raise IndexError(f"list index {index} skips past the {len(target)} items configured")
            if index == len(target):
                target.append({})
            if last:
                target[index] = value
            else:
                target = target[index]
        elif isinstance(target, dict):
            if last:
                target[part] = value
            else:  # the configuration's lists are the models and the thresholds; any other digits are keys
                target = target.setdefault(part, [] if part in _LISTS and parts[i + 1].isdigit() else {})
        else:
            raise TypeError(f"{part} is inside a value, not a section")


def _resolve_paths(config: Config, base: Path) -> Config:
    """Reference profile paths and an embedded store path (``chdb:relative/path``) are relative to the
    configuration file's folder."""
    models = tuple(m.model_copy(update={"references": {v: (p if p.is_absolute() else base / p)
                                                       for v, p in m.references.items()}})
                   for m in config.models)
    dsn = config.store.dsn
    if dsn.startswith("chdb:") and not dsn.startswith("chdb://"):
        dsn = f"chdb://{(base / dsn[len('chdb:'):]).resolve()}"
    return config.model_copy(update={"models": models, "store": config.store.model_copy(update={"dsn": dsn})})
