"""The configuration: one YAML file validated by pydantic, DRIFTLINE__SECTION__FIELD overrides, bad values
named by field, paths relative to the file, and the errors of a file that cannot be read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from driftline.config import Config, ConfigError, JsonTopic, apply_overrides, load_config

MODEL = {"name": "credit", "references": {"3": "profiles/credit-3.json"}}


def write(folder: Path, data: Any, name: str = "driftline.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))  # JSON is YAML
    return path


def load(folder: Path, data: Any, environ: dict[str, str] | None = None) -> Config:
    """Sections without models are checked as ``driftline query`` loads them (the models are checked below)."""
    return load_config(write(folder, data), environ=environ or {}, require_models=False)


def error(folder: Path, data: Any, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(folder, data, environ)
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={}, require_models=False)
    assert config.windows.size == 3_600_000 and config.windows.hop is None
    assert config.windows.allowed_lateness == 120_000 and config.windows.max_future == 3_600_000
    assert config.join.max_wait == 300_000 and config.join.max_pending == 1_000_000
    assert config.rollback.dry_run is True and config.rollback.kill_switch is False
    assert config.models == ()
    assert config.store.database == "driftline"
    assert config.store.dsn == f"chdb://{tmp_path.resolve() / 'driftline-store'}"  # relative to where we run
    assert Config() == Config.model_validate({})


@pytest.mark.parametrize("text", ["", "# nothing\n", "{}"])
def test_an_empty_file_means_the_defaults(tmp_path: Path, text: str) -> None:
    config = load(tmp_path, text)
    assert config.windows == Config().windows and config.join == Config().join
    assert config.store.dsn == f"chdb://{tmp_path.resolve() / 'driftline-store'}"


def test_a_full_file_loads(tmp_path: Path) -> None:
    config = load(tmp_path, """
store: {dsn: "chdb:store", database: risk, ttl_days: 30}
windows: {size: 1h, hop: 15m, allowed_lateness: 2m, max_open_panes: 100, max_future: null}
join: {max_wait: 1m, max_pending: 5000}
rollback: {dry_run: false, breaker_models: 2, breaker_window: 30m}
models:
  - name: credit
    references: {"3": profiles/credit-3.json, "4": /abs/credit-4.json}
    policy:
      min_samples: 200
      thresholds: [{metric: psi, warn: 0.1, critical: 0.25}, {metric: ks_pvalue, warn: 0.05, direction: below}]
      rollback_on: {feature: critical}
      cooldown: 2h
""")
    assert config.windows.hop == 900_000 and config.windows.max_future is None
    assert config.join.max_wait == 60_000
    assert config.rollback.dry_run is False and config.rollback.breaker_window == 1_800_000
    model = config.models[0]
    assert model.policy.min_samples == 200 and model.policy.cooldown == 7_200_000
    assert model.policy.thresholds is not None and model.policy.thresholds[1].direction == "below"
    assert model.policy.rollback_on == {"feature": "critical"}
    assert model.references["4"] == Path("/abs/credit-4.json")


EXAMPLE = Path(__file__).resolve().parents[2] / "driftline.example.yaml"


def test_the_documented_example_is_valid_and_its_overrides_work() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.models[0].name == "credit_scoring"
    assert config.models[0].references["3"] == EXAMPLE.parent / "profiles/credit_scoring-3.json"
    assert config.store.dsn == f"chdb://{EXAMPLE.parent / 'driftline-store'}"
    overridden = load_config(EXAMPLE, environ={"DRIFTLINE__STORE__DSN": "http://driftline:secret@clickhouse:8123",
                                               "DRIFTLINE__ROLLBACK__DRY_RUN": "false",
                                               "DRIFTLINE__MODELS__0__POLICY__MIN_SAMPLES": "1000"})
    assert overridden.store.dsn == "http://driftline:secret@clickhouse:8123"
    assert overridden.rollback.dry_run is False and overridden.models[0].policy.min_samples == 1000


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(pydantic.ValidationError):
        config.store = None  # type: ignore[assignment,misc]
    with pytest.raises(pydantic.ValidationError):
        config.windows.size = 5  # type: ignore[misc]


@pytest.mark.parametrize("data", ["", "# nothing\n", "{}", {"models": []}, {"store": {"dsn": "chdb:store"}}])
def test_a_configuration_without_models_is_refused_naming_models(tmp_path: Path, data: Any) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"invalid configuration in {path}: models: no model is configured")
    with pytest.raises(ConfigError, match="models: no model is configured"):
        load_config(None, environ={})
    # models from the environment count; and a command that only reads the store does not need any
    assert load_config(path, environ={"DRIFTLINE__MODELS__0__NAME": "credit",
                                      "DRIFTLINE__MODELS__0__REFERENCES__3": "c3.json"}).models[0].name == "credit"
    assert load_config(path, environ={}, require_models=False).models == ()


# -- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "millis"), [
    ("250ms", 250), ("90s", 90_000), ("5m", 300_000), ("1h", 3_600_000), ("7d", 604_800_000),
    (" 5m ", 300_000), ("5 m", 300_000), ("0s", 0), (1_500, 1_500), (0, 0), (60_000.0, 60_000),
])
def test_durations(tmp_path: Path, value: Any, millis: int) -> None:
    assert load(tmp_path, {"join": {"max_wait": value}}).join.max_wait == millis


@pytest.mark.parametrize("value", ["5 minutes", "1.5h", "-5m", "5M", "5", "60000", "", "h", -1, 1.5, [5], {"m": 5}])
def test_bad_durations_name_the_field(tmp_path: Path, value: Any) -> None:
    message = error(tmp_path, {"join": {"max_wait": value}})
    assert "join.max_wait" in message


def test_duration_error_says_how_to_write_one(tmp_path: Path) -> None:
    assert "use e.g. 250ms, 90s, 5m, 1h or 7d" in error(tmp_path, {"windows": {"allowed_lateness": "2 mins"}})


# -- bad values name the field --------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "named"), [
    ({"models": [{**MODEL, "policy": {"min_samples": 0}}]}, "models.0.policy.min_samples"),
    ({"models": [{**MODEL, "policy": {"min_samples": "many"}}]}, "models.0.policy.min_samples"),
    ({"models": [MODEL, {**MODEL, "name": "fraud", "policy": {"drift_share": 1.5}}]}, "models.1.policy.drift_share"),
    ({"models": [{**MODEL, "policy": {"drift_share": 0}}]}, "models.0.policy.drift_share"),
    ({"models": [{**MODEL, "policy": {"pvalue_correction": "fdr"}}]}, "models.0.policy.pvalue_correction"),
    ({"models": [{**MODEL, "policy": {"consecutive": 0}}]}, "models.0.policy.consecutive"),
    ({"models": [{**MODEL, "policy": {"rollback_on": {"banana": "critical"}}}]},
     "models.0.policy.rollback_on.banana.[key]"),
    ({"models": [{**MODEL, "policy": {"rollback_on": {"score": "high"}}}]}, "models.0.policy.rollback_on.score"),
    ({"models": [{**MODEL, "policy": {"thresholds": [{"metric": "psi", "direction": "up"}]}}]},
     "models.0.policy.thresholds.0.direction"),
    ({"models": [{**MODEL, "policy": {"thresholds": [{"warn": 0.1}]}}]}, "models.0.policy.thresholds.0.metric"),
    ({"models": [{**MODEL, "policy": {"cooldown": "soon"}}]}, "models.0.policy.cooldown"),
    ({"models": [{**MODEL, "name": ""}]}, "models.0.name"),
    ({"models": [{"name": "credit"}]}, "models.0.references"),
    ({"models": [{**MODEL, "references": {}}]}, "models.0"),
    ({"models": [{**MODEL, "refs": {}}]}, "models.0.refs"),
    ({"models": {"credit": MODEL}}, "models"),
    ({"windows": {"size": "1h", "hop": "7m"}}, "windows"),
    ({"windows": {"size": 0}}, "windows"),
    ({"windows": {"max_open_panes": 0}}, "windows.max_open_panes"),
    ({"windows": {"sise": "1h"}}, "windows.sise"),
    ({"join": {"max_pending": 0}}, "join.max_pending"),
    ({"rollback": {"dry_run": "maybe"}}, "rollback.dry_run"),
    ({"rollback": {"breaker_models": 0}}, "rollback.breaker_models"),
    ({"store": {"dsn": "postgres://db:5432"}}, "store.dsn"),
    ({"store": {"dsn": "clickhouse://db:9000"}}, "store.dsn"),
    ({"store": {"dsn": "/var/lib/driftline"}}, "store.dsn"),
    ({"store": {"database": "risk-db"}}, "store.database"),
    ({"store": {"database": "1risk"}}, "store.database"),
    ({"store": {"ttl_days": 0}}, "store.ttl_days"),
    ({"store": {"audit_ttl_days": -1}}, "store.audit_ttl_days"),
    ({"kafak": {"brokers": "x"}}, "kafak"),
    ({"kafka": {"idle_after": "soon"}}, "kafka.idle_after"),
    ({"kafka": {"idle_after": -1}}, "kafka.idle_after"),
    ({"store": "chdb:store"}, "store"),
])
def test_a_bad_value_names_its_field(tmp_path: Path, data: dict[str, Any], named: str) -> None:
    message = error(tmp_path, data)
    assert message.startswith(f"invalid configuration in {tmp_path / 'driftline.yaml'}: ")
    assert f"{named}: " in message, message


def test_hop_that_does_not_divide_size_says_so(tmp_path: Path) -> None:
    message = error(tmp_path, {"windows": {"size": "1h", "hop": "7m"}})
    assert "windows: " in message and "hop (420000 ms) must be positive and divide size (3600000 ms)" in message
    assert load(tmp_path, {"windows": {"size": "1h", "hop": "5m"}}).windows.hop == 300_000


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    message = error(tmp_path, {"join": {"max_wait": "1m", "max_wiat": "2m"}})
    assert "join.max_wiat: Extra inputs are not permitted" in message


def test_duplicate_model_names(tmp_path: Path) -> None:
    message = error(tmp_path, {"models": [MODEL, {**MODEL, "references": {"4": "x.json"}}, {**MODEL, "name": "f"}]})
    assert "model names must be unique; repeated: credit" in message


def test_every_bad_field_is_named_at_once(tmp_path: Path) -> None:
    message = error(tmp_path, {"store": {"ttl_days": 0}, "join": {"max_wait": "x"},
                               "models": [{**MODEL, "policy": {"min_samples": -3}}]})
    for named in ("store.ttl_days", "join.max_wait", "models.0.policy.min_samples"):
        assert named in message


def test_an_unknown_threshold_metric_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, {"models": [{**MODEL, "policy": {"thresholds": [{"metric": "pis", "warn": 0.1}]}}]})
    assert "models.0.policy.thresholds.0.metric" in message


def test_a_numeric_version_key_is_a_version(tmp_path: Path) -> None:
    config = load(tmp_path, "models:\n  - name: credit\n    references:\n      3: profiles/credit-3.json\n")
    assert list(config.models[0].references) == ["3"]


# -- environment overrides ----------------------------------------------------------------------------


def test_environment_overrides_sections_fields_and_list_items(tmp_path: Path) -> None:
    config = load(tmp_path, {"windows": {"size": "1h"}, "models": [MODEL, {**MODEL, "name": "fraud"}]}, {
        "DRIFTLINE__WINDOWS__SIZE": "30m",
        "DRIFTLINE__WINDOWS__HOP": "5m",
        "DRIFTLINE__JOIN__MAX_PENDING": "12",
        "DRIFTLINE__ROLLBACK__DRY_RUN": "false",
        "DRIFTLINE__MODELS__1__POLICY__MIN_SAMPLES": "200",
        "DRIFTLINE__MODELS__0__POLICY__DRIFT_SHARE": "0.25",
        "DRIFTLINE__MODELS__0__REFERENCES__4": "profiles/credit-4.json",
        "DRIFTLINE__STORE__DATABASE": "risk",
        "driftline__store__ttl_days": "1",  # not the prefix: ignored
        "OTHER__STORE__TTL_DAYS": "1",
        "PATH": "/usr/bin",
    })
    assert config.windows.size == 1_800_000 and config.windows.hop == 300_000
    assert config.join.max_pending == 12
    assert config.rollback.dry_run is False
    assert config.models[1].policy.min_samples == 200 and config.models[0].policy.min_samples == 500
    assert config.models[0].policy.drift_share == 0.25
    assert config.models[0].references["4"] == tmp_path / "profiles/credit-4.json"
    assert config.store.database == "risk" and config.store.ttl_days == 400


@pytest.mark.parametrize(("raw", "value"), [
    ("true", True), ("False", False), ("off", False), ("null", None), ("~", None),
])
def test_override_values_are_yaml_scalars(tmp_path: Path, raw: str, value: Any) -> None:
    if value is None:
        assert load(tmp_path, {"windows": {"max_future": "1h"}}, {"DRIFTLINE__WINDOWS__MAX_FUTURE": raw}
                    ).windows.max_future is None
    else:
        assert load(tmp_path, {}, {"DRIFTLINE__ROLLBACK__KILL_SWITCH": raw}).rollback.kill_switch is value


def test_override_keys_are_case_insensitive_and_build_missing_sections(tmp_path: Path) -> None:
    config = load(tmp_path, {"models": [{"references": {"3": "/abs/credit.json"}}]},
                  {"DRIFTLINE__Join__Max_Wait": "90s", "DRIFTLINE__MODELS__0__NAME": "credit",
                   "DRIFTLINE__ROLLBACK__BREAKER_MODELS": "5"})
    assert config.join.max_wait == 90_000 and config.rollback.breaker_models == 5
    assert config.models[0].name == "credit" and config.models[0].references == {"3": Path("/abs/credit.json")}


def test_a_reference_version_can_be_set_from_the_environment(tmp_path: Path) -> None:
    config = load(tmp_path, {}, {"DRIFTLINE__MODELS__0__NAME": "credit",
                                 "DRIFTLINE__MODELS__0__REFERENCES__3": "/abs/credit.json"})
    assert config.models[0].references == {"3": Path("/abs/credit.json")}


def test_a_bad_override_names_the_field(tmp_path: Path) -> None:
    message = error(tmp_path, {"models": [MODEL]}, {"DRIFTLINE__MODELS__0__POLICY__MIN_SAMPLES": "0"})
    assert "models.0.policy.min_samples: Input should be greater than or equal to 1" in message
    assert "windows.bogus" in error(tmp_path, {}, {"DRIFTLINE__WINDOWS__BOGUS": "1"})
    assert "join.max_wait" in error(tmp_path, {}, {"DRIFTLINE__JOIN__MAX_WAIT": "soon"})


def test_overrides_read_the_process_environment_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE__JOIN__MAX_WAIT", "2m")
    assert load_config(write(tmp_path, {"join": {"max_wait": "1m"}, "models": [MODEL]})).join.max_wait == 120_000
    assert load_config(write(tmp_path, {"models": [MODEL]}), environ={}).join.max_wait == 300_000  # an explicit environ wins


def test_apply_overrides_on_plain_data() -> None:
    data: dict[str, Any] = {"models": [{"name": "a"}]}
    apply_overrides(data, {"DRIFTLINE__MODELS__1__NAME": "c", "DRIFTLINE__STORE__TTL_DAYS": "7"})
    assert data == {"models": [{"name": "a"}, {"name": "c"}], "store": {"ttl_days": 7}}


def test_an_override_index_may_not_skip_items() -> None:
    """Index 99999999 would otherwise append a hundred million empty models."""
    with pytest.raises(ConfigError, match="MODELS__99999999"):
        apply_overrides({"models": [{"name": "a"}]}, {"DRIFTLINE__MODELS__99999999__NAME": "c"})


@pytest.mark.parametrize("environ", [
    {"DRIFTLINE__MODELS__NAME": "x"},  # a field name where the list wants an index
    {"DRIFTLINE__STORE__DSN__HOST": "x"},  # a field below a string
    {"DRIFTLINE__MODELS__0__NAME__FIRST": "x"},
    {"DRIFTLINE__": "x"},  # names nothing
    {"DRIFTLINE____": "x"},
])
def test_a_misplaced_override_is_a_config_error_naming_the_variable(tmp_path: Path, environ: dict[str, str]) -> None:
    message = error(tmp_path, {"store": {"dsn": "chdb:store"}, "models": [MODEL]}, environ)
    assert next(iter(environ)) in message


@pytest.mark.parametrize("raw", ["@risk-team", "%risk", "*risk", "{risk", "[risk", "a: b", "- x"])
def test_an_override_that_is_not_a_yaml_scalar_is_taken_as_text(tmp_path: Path, raw: str) -> None:
    config = load(tmp_path, {"models": [MODEL]}, {"DRIFTLINE__MODELS__0__NAME": raw})
    assert config.models[0].name == raw


# -- paths ------------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "conf" / "prod"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(folder, {"store": {"dsn": "chdb:data/store"},
                          "models": [{"name": "credit", "references": {"3": "profiles/c3.json", "4": "/srv/c4.json",
                                                                       "5": "../shared/c5.json"}}]})
    config = load_config(path, environ={})
    refs = config.models[0].references
    assert refs["3"] == folder / "profiles/c3.json"
    assert refs["4"] == Path("/srv/c4.json")
    assert refs["5"].resolve() == (tmp_path / "conf" / "shared" / "c5.json").resolve()
    assert config.store.dsn == f"chdb://{folder.resolve() / 'data' / 'store'}"
    assert config.store.dsn.startswith("chdb:///")


def test_a_relative_config_path_still_gives_an_absolute_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cfg").mkdir()
    write(tmp_path / "cfg", {"store": {"dsn": "chdb:store"}, "models": [MODEL]})
    monkeypatch.chdir(tmp_path)
    config = load_config("cfg/driftline.yaml", environ={})
    assert config.store.dsn == f"chdb://{(tmp_path / 'cfg' / 'store').resolve()}"
    assert config.models[0].references["3"].resolve() == (tmp_path / "cfg" / "profiles/credit-3.json").resolve()


@pytest.mark.parametrize("dsn", ["chdb:///var/lib/driftline", "http://localhost:8123",
                                 "https://user:secret@ch.example.com:8443"])
def test_absolute_and_server_dsns_are_kept(tmp_path: Path, dsn: str) -> None:
    assert load(tmp_path, {"store": {"dsn": dsn}}).store.dsn == dsn


def test_an_overridden_store_path_is_relative_to_the_config_too(tmp_path: Path) -> None:
    config = load(tmp_path, {}, {"DRIFTLINE__STORE__DSN": "chdb:other"})
    assert config.store.dsn == f"chdb://{tmp_path.resolve() / 'other'}"


# -- files that cannot be read ----------------------------------------------------------------------------


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize("text", ["store: {dsn: [unclosed\n", "windows:\n  size: 1h\n   hop: 5m\n", "a: b: c\n",
                                  "\tstore: {}\n"])
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'driftline.yaml'}: not valid YAML")


@pytest.mark.parametrize("text", ["- store\n- windows\n", "just a string\n", "42\n"])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert "the top level must be a mapping of sections" in error(tmp_path, text)


@pytest.mark.parametrize("kind", ["directory", "latin-1 bytes"])
def test_an_unreadable_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "driftline.yaml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes("store: {database: r\xe9sum\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{re.escape(str(path))}: cannot read the configuration file"):
        load_config(path, environ={})


def test_the_group_instance_id_comes_from_the_environment_as_the_pod_name_would(tmp_path: Path) -> None:
    assert load(tmp_path, {}).kafka.group_instance_id is None  # dynamic membership by default
    config = load(tmp_path, {}, {"DRIFTLINE__KAFKA__GROUP_INSTANCE_ID": "driftline-7f9c4-0"})
    assert config.kafka.group_instance_id == "driftline-7f9c4-0"
    assert "kafka.group_instance_id" in error(tmp_path, {"kafka": {"group_instance_id": "pod 0"}})


def test_topic_creation_settings(tmp_path: Path) -> None:
    config = load(tmp_path, {"kafka": {"create_topics": True, "new_topics": {
        "partitions": 6, "replication_factor": 3, "config": {"max.message.bytes": "4194304"}}}})
    assert config.kafka.create_topics and config.kafka.new_topics.partitions == 6
    assert config.kafka.new_topics.config == {"max.message.bytes": "4194304"}
    assert load(tmp_path, {}).kafka.create_topics is False
    assert "kafka.new_topics.partitions" in error(tmp_path, {"kafka": {"new_topics": {"partitions": 0}}})
    assert "replication_factor" in error(tmp_path, {"kafka": {"new_topics": {"replication_factor": 0}}})


@pytest.mark.parametrize(("topic", "field", "only"), [
    ({"format": "json", "avro_schema": "scoring_request.avsc"}, "avro_schema", "avro"),
    ({"format": "avro", "feature_names": ["income"]}, "feature_names", "oip-json, oip-protobuf, kserve-cloudevents"),
    ({"format": "oip-json", "oip_message": "request"}, "oip_message", "oip-protobuf"),
    ({"format": "avro-confluent", "score_output": "proba"}, "score_output", "oip-json"),
])
def test_a_topic_field_of_another_format_is_an_error_naming_it(tmp_path: Path, topic: dict[str, Any], field: str,
                                                              only: str) -> None:
    message = error(tmp_path, {"kafka": {"topics": [{"topic": "scoring", **topic}]}})
    assert f"{field} does not apply to format {topic['format']!r}" in message and only in message
    assert "kafka.topics" in message


def test_a_topic_written_out_whole_with_defaults_is_accepted(tmp_path: Path) -> None:
    whole = {"topic": "scoring", "format": "json", "avro_schema": "scoring_event.avsc", "model": None,
             "model_version": None, "feature_names": [], "score_output": None, "decision_output": None,
             "oip_message": None}  # every field of every format, at its default (as an older release wrote it)
    assert load(tmp_path, {"kafka": {"topics": [whole]}}).kafka.topics[0] == JsonTopic(topic="scoring")


def test_a_topic_is_the_model_of_its_format(tmp_path: Path) -> None:
    config = load(tmp_path, {"kafka": {"topics": [{"topic": "a"}, {"topic": "b", "format": "avro"}]}})
    assert [type(t).__name__ for t in config.kafka.topics] == ["JsonTopic", "AvroTopic"]
    message = error(tmp_path, {"kafka": {"topics": [{"topic": "a", "format": "xml"}]}})
    assert "kafka.topics.0: format must be one of json, avro" in message


def test_the_fields_of_a_topic_format_are_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, {"kafka": {"topics": [
        {"topic": "a", "format": "avro", "avro_schema": "scoring_request.avsc"},
        {"topic": "m.inputs", "format": "oip-protobuf", "oip_message": "request", "feature_names": ["x"],
         "model": "m", "model_version": "1"},
        {"topic": "k", "format": "kserve-cloudevents", "score_output": "proba", "decision_output": "label"}]}})
    assert [t.format for t in config.kafka.topics] == ["avro", "oip-protobuf", "kserve-cloudevents"]
