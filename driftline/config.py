"""The configuration: one YAML file, validated by pydantic, overridable from the environment.

Loaded once at the entry point (:func:`load_config`) into one frozen object that is passed down.
``os.environ`` is read here and nowhere else. A bad value fails at start with a message that names
the field (``models.0.policy.min_samples: Input should be greater than or equal to 1``).

Environment overrides: ``DRIFTLINE__<SECTION>__<FIELD>=value`` sets ``section.field`` (keys are
lower-cased; list items by index, e.g. ``DRIFTLINE__MODELS__0__POLICY__MIN_SAMPLES=200``). Values
are parsed as YAML scalars, so ``true``, ``12`` and ``5m`` mean what they say.

Durations are milliseconds or strings with a unit: ``250ms``, ``90s``, ``5m``, ``1h``, ``7d``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from driftline.engine.window_spec import WindowSpec
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
Severity = Literal["ok", "warn", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Strict):
    dsn: str = Field("chdb:driftline-store", pattern=r"^(chdb:|https?://)")
    """``chdb:path`` (embedded, on disk; relative to the configuration file), ``chdb:///absolute/path``,
    or ``http(s)://user:password@host:8123`` for a ClickHouse server."""
    database: str = Field("driftline", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    ttl_days: int = Field(400, ge=1)
    """Retention of windows, alerts and rollback requests."""
    audit_ttl_days: int = Field(3650, ge=1)
    """Retention of the audit log (ten years by default: model-risk reviews look far back)."""


class WindowConfig(_Strict):
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


class JoinConfig(_Strict):
    max_wait: DurationMs = 300_000
    """How long (event time) a request waits for its response, and the reverse, before it is unmatched."""
    max_pending: int = Field(1_000_000, ge=1)
    """Bound on requests and responses waiting for their other half; beyond it the oldest are unmatched."""


class ThresholdConfig(_Strict):
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


class ChangeWatchConfig(_Strict):
    """The score change watch between window closes (driftline.engine.changewatch: ADWIN, batch-native)."""

    enabled: bool = True
    significance_level: float = Field(0.002, gt=0, lt=1)
    """ADWIN's δ (river's ``delta``): smaller is fewer false alarms and later detections."""
    rollback: bool = False
    """Whether a detection also asks for a rollback (through the same guards as a window's: kill switch,
    cooldown, daily cap, circuit breaker, dry-run). Off: a detection is an early warning only."""


class PolicyConfig(_Strict):
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


class ModelConfig(_Strict):
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


class RollbackConfig(_Strict):
    dry_run: bool = True
    kill_switch: bool = False
    breaker_models: int = Field(3, ge=1)
    breaker_window: DurationMs = 3_600_000


INFERENCE_FORMATS = ("oip-json", "oip-protobuf", "kserve-cloudevents")
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "avro_schema": ("avro",), "oip_message": ("oip-protobuf",),
    **{name: INFERENCE_FORMATS for name in ("model", "model_version", "feature_names", "score_output",
                                            "decision_output")},
}
"""The topic fields that apply to some formats only."""


class TopicConfig(_Strict):
    topic: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    format: Literal["json", "avro", "avro-confluent", "oip-json", "oip-protobuf", "kserve-cloudevents"] = "json"
    avro_schema: Literal["scoring_event.avsc", "scoring_request.avsc", "scoring_response.avsc"] = "scoring_event.avsc"
    """For raw ``avro``: which of driftline's schemas the topic carries."""
    model: str | None = None
    """For inference payloads: the model (else the body's ``model_name`` / KServe's service name)."""
    model_version: str | None = None
    """For inference payloads: the version (else the body's ``model_version``)."""
    feature_names: tuple[str, ...] = ()
    """For one [N, F] input tensor (or V1 list rows): the names of its F columns, in order."""
    score_output: str | None = None
    """The output tensor that holds the score (default: the first output)."""
    decision_output: str | None = None
    oip_message: Literal["request", "response"] | None = None
    """For ``oip-protobuf``: whether the topic carries ``ModelInferRequest`` or ``ModelInferResponse``
    messages; by default from the topic's name, as Seldon names them (``….inputs`` / ``….outputs``)."""

    @model_validator(mode="after")
    def _fields_of_its_format(self) -> TopicConfig:
        """A field given a value for a format it does not apply to is a mistake (a format changed, a
        copy-paste); its default stays accepted (a configuration written out whole, every field in it)."""
        for name, formats in sorted(FORMAT_FIELDS.items()):
            if self.format not in formats and getattr(self, name) != type(self).model_fields[name].default:
                raise ValueError(f"topic {self.topic!r}: {name} does not apply to format {self.format!r} "
                                 f"(only to {', '.join(formats)})")
        return self

    @model_validator(mode="after")
    def _oip_message_known(self) -> TopicConfig:
        if self.format == "oip-protobuf" and self.infer_message is None:
            raise ValueError(f"topic {self.topic!r}: set oip_message (request or response); the name does not end "
                             "in .inputs or .outputs")
        return self

    @property
    def infer_message(self) -> Literal["request", "response"] | None:
        """``oip_message``, else what the Seldon topic name says."""
        if self.oip_message is not None:
            return self.oip_message
        suffix = self.topic.rsplit(".", 1)[-1]
        return "request" if suffix == "inputs" else "response" if suffix == "outputs" else None


class NewTopicsConfig(_Strict):
    """How ``kafka.create_topics`` creates the topics driftline writes when they are missing."""

    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(-1, ge=-1)
    """-1: the broker's ``default.replication.factor``."""
    config: dict[str, str] = Field(default_factory=dict)
    """Topic settings, e.g. ``max.message.bytes``, ``retention.ms`` (docs/control-topic.md)."""

    @model_validator(mode="after")
    def _replicated(self) -> NewTopicsConfig:
        if self.replication_factor == 0:
            raise ValueError("replication_factor must be at least 1, or -1 for the broker's default")
        return self


class KafkaConfig(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "driftline"
    group_instance_id: str | None = Field(None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    """Static group membership (``group.instance.id``), e.g. the pod name: a member restarted with the same id
    gets its partitions back at once instead of after the dead one's session times out; a member that
    stops for good holds its partitions until ``session.timeout.ms`` (docs/scaling.md). Unique per process."""
    topics: tuple[TopicConfig, ...] = ()
    dead_letter_topic: str = "driftline.dead-letter"
    control_topic: str = "driftline.control"
    schema_registry_url: str | None = None
    batch_size: int = Field(20_000, ge=1, le=1_000_000)
    """Messages per consume call, decoded and processed together (alerts are published after each)."""
    poll_timeout: DurationMs = 1_000
    checkpoint_interval: DurationMs = 5_000
    """How often the open state is checkpointed to the store and the offsets committed (and at every
    stop). A crash repeats at most this much consumption; 0 checkpoints after every batch."""
    idle_after: DurationMs = 30_000
    """How long a partition read to its end goes on holding the watermark with no new message (wall-clock
    time, the service's clock) before it counts as idle and stops holding: a partition minutes of event
    time ahead of the others (a producer backlog after a broker outage, a slow producer) cannot close
    their windows early, and a partition that has really stopped lets them close after this long. 0: a
    partition stops holding as soon as it is read to its end. Single stage only (docs/scaling.md)."""
    max_message_bytes: int = Field(1_048_576, ge=1)
    """Larger messages go to the dead-letter topic unread."""
    client: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka settings for every client (security.protocol, sasl.*, ssl.*, …); they override the
    consumers' defaults driftline sets (``connectors.kafka.CONSUMER_DEFAULTS``: fetch.queue.backoff.ms 50)."""
    retry_backoff: DurationMs = Field(500, ge=1)
    """First pause after the store or the broker failed a batch; doubled after each failed retry, up to
    ``retry_backoff_max``."""
    retry_backoff_max: DurationMs = Field(30_000, ge=1)
    publish_timeout: DurationMs = Field(30_000, ge=1)
    """How long a batch waits for the broker to acknowledge its control and dead-letter records; past it
    the batch counts as not published and is redone from the last checkpoint once the broker answers."""
    dead_letter_fetch_timeout: DurationMs = Field(5_000, ge=1)
    """How long a batch may spend fetching back, by offset, the messages of its bad events that were
    consumed in an earlier batch (unmatched join halves); past it they are dead-lettered with headers
    only, ``driftline.payload.missing`` saying why."""
    stages: Literal["single", "two"] = "single"
    """``single``: one process per consumer group counts and closes windows. ``two``: every member counts
    partial windows of its partitions and publishes them to ``partials_topic``; a second consumer group
    (``<group_id>.merge``) adds them up and closes windows, so several members of one group give the
    windows one gives (docs/scaling.md). Combined events only, for now."""
    partials_topic: str = Field("driftline.partials", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """With ``stages: two``: the topic of partial windows, keyed by ``model|version``."""
    create_topics: bool = False
    """At start, create the topics driftline writes (dead-letter, control, partials) that are missing, as
    ``new_topics`` says; otherwise a missing topic stops the start with an error naming it. Topics driftline
    consumes are never created."""
    new_topics: NewTopicsConfig = NewTopicsConfig()

    @model_validator(mode="after")
    def _two_stages_without_join(self) -> KafkaConfig:
        if self.stages != "two":
            return self
        halves = [t.topic for t in self.topics if t.format in ("oip-json", "oip-protobuf", "kserve-cloudevents")
                  or (t.format == "avro" and t.avro_schema != "scoring_event.avsc")]
        if halves:
            raise ValueError(f"stages: two counts combined scoring events only (request and response in one "
                             f"record); {', '.join(halves)} carry requests or responses to join, which needs "
                             "stages: single for now")
        return self


class Config(_Strict):
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
