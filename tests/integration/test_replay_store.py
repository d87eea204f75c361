"""The main job end to end on the embedded default: files of scoring events (JSONL, Avro container,
Parquet) through decode → join → engine → decide → persist into ClickHouse on chDB.

Proves: the schema is created from empty and re-applied idempotently; two replays of the same input give
identical rows; replaying the same input twice into one store leaves exactly one copy; the three formats
give the same windows; bad inputs are reported with line/record numbers and the rest lands; the CLI's
replay/query contract; the demo finds its three incidents and nothing fires without them.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.app.cli import main
from driftline.app.demo import INVESTIGATIONS, MODELS, run_demo
from driftline.app.replay import replay
from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications
from driftline.connectors.clickhouse import ClickHouseStore
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.engine.window import window_id
from driftline.errors import InvalidInput

from .conftest import (
    CREDIT, DAY_START_MS, FRAUD, HOUR_MS, TABLES, Replayed, count, iso, load, opened, replayed, scoring_events,
    _records, snapshot, write_avro, write_config, write_jsonl, write_parquet,
)

pytestmark = pytest.mark.integration

Profiles = dict[tuple[str, str], Path]
ALL_TABLES = {"schema_version", "windows", "late_events", "alerts", "rollback_requests", "audit_log", "checkpoints",
              "version_changes", "undeliverable_dead_letters", "change_detections"}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Eight hours of credit (combined) and fraud (split) events with incidents, every third time in ISO;
    and the credit events alone, for the format comparison."""
    root = tmp_path_factory.mktemp("traffic")
    events = scoring_events()
    credit = [r for r in events if r["model"] == CREDIT[0]]
    return {"events": events, "mixed": write_jsonl(events, root / "mixed.jsonl", iso_every=3),
            "credit": credit, "root": root}


# -- schema ---------------------------------------------------------------------------------------------


def test_schema_is_created_from_empty_and_reapplied_idempotently(tmp_path: Path, profiles: Profiles) -> None:
    path = tmp_path / "fresh" / "store"
    assert not path.exists()
    store = ClickHouseStore(f"chdb://{path}")
    try:
        assert store.apply_schema() == 2
        assert path.exists()
        assert {r[0] for r in store.query("SHOW TABLES FROM driftline")[1]} == ALL_TABLES
        assert store.apply_schema() == 2
        assert store.apply_schema() == 2
        assert count(store, "schema_version", final=False) == 2  # re-applying inserts no second version row
        engines = dict(store.query("SELECT name, engine FROM system.tables WHERE database = 'driftline'")[1])
        assert engines == {"schema_version": "ReplacingMergeTree", "windows": "ReplacingMergeTree",
                           "late_events": "ReplacingMergeTree", "alerts": "ReplacingMergeTree",
                           "rollback_requests": "ReplacingMergeTree", "audit_log": "ReplacingMergeTree",
                           "checkpoints": "ReplacingMergeTree", "version_changes": "ReplacingMergeTree",
                           "undeliverable_dead_letters": "ReplacingMergeTree", "change_detections": "ReplacingMergeTree"}
        config = load(write_config(tmp_path / "cfg", profiles, dsn=f"chdb://{path}"))
        events = write_jsonl(scoring_events(hours=2, per_hour=300, fraud=False), tmp_path / "e.jsonl")
        replay(config, [events], store=store)
        windows = count(store, "windows", final=False)
        assert windows > 0
    finally:
        store.close()
        gc.collect()
    reopened = ClickHouseStore(f"chdb://{path}")  # a restart: the schema is confirmed, the data kept
    try:
        assert reopened.apply_schema() == 2
        assert count(reopened, "schema_version", final=False) == 2
        assert count(reopened, "windows", final=False) == windows
    finally:
        reopened.close()
        gc.collect()


def test_schema_in_another_database_with_its_retention(tmp_path: Path) -> None:
    store = ClickHouseStore(f"chdb://{tmp_path / 'store'}", database="risk_prod", ttl_days=30, audit_ttl_days=90)
    try:
        assert store.apply_schema() == 2 and store.apply_schema() == 2
        assert {r[0] for r in store.query("SHOW TABLES FROM risk_prod")[1]} == ALL_TABLES
        ddl = dict(store.query("SELECT name, create_table_query FROM system.tables WHERE database = 'risk_prod'")[1])
        assert "toIntervalDay(30)" in ddl["windows"] and "toIntervalDay(90)" in ddl["audit_log"]
        assert "driftline" not in {r[0] for r in store.query("SHOW DATABASES")[1]}
    finally:
        store.close()


# -- determinism and idempotency ------------------------------------------------------------------------


def test_two_replays_of_the_same_input_give_identical_rows(tmp_path: Path, profiles: Profiles,
                                                           traffic: dict[str, Any]) -> None:
    first = replayed(load(write_config(tmp_path / "a", profiles)), [traffic["mixed"]], chunk_size=2_000)
    second = replayed(load(write_config(tmp_path / "b", profiles)), [traffic["mixed"]], chunk_size=2_000)
    assert (tmp_path / "a" / "store").is_dir() and (tmp_path / "b" / "store").is_dir()  # two stores
    for table in (*TABLES, "audit_log"):
        assert first.rows[table] == second.rows[table], table
    assert first.outcome.totals == second.outcome.totals
    assert first.outcome.bad == second.outcome.bad
    # and the comparison meant something: every table has rows
    t = first.outcome.totals
    assert first.counts["windows"][0] > 0 and first.counts["late_events"][0] > 0
    assert first.counts["alerts"][0] == t.alerts > 0 and first.counts["rollback_requests"][0] == t.rollbacks > 0
    assert t.events == len(traffic["events"]) and t.unmatched_requests > 0 and t.late > 0


def test_replaying_the_same_input_twice_leaves_one_copy(tmp_path: Path, profiles: Profiles,
                                                        traffic: dict[str, Any]) -> None:
    once = replayed(load(write_config(tmp_path / "once", profiles)), [traffic["mixed"]], chunk_size=3_000)
    config = load(write_config(tmp_path / "twice", profiles))
    twice = replayed(config, [traffic["mixed"]], times=2, chunk_size=3_000)
    for table, (final, plain) in once.counts.items():
        assert final == plain, table
        # FINAL: one logical copy; plain count(): the second pass's inserts were deduplicated by their tokens
        assert twice.counts[table] == (final, plain), table
    assert twice.rows == once.rows
    # a third pass after a restart (a new client on the same path) changes nothing either
    with opened(config) as store:
        replay(config, [traffic["mixed"]], store=store, chunk_size=3_000)
        rows, counts = snapshot(store)
    assert counts == once.counts and rows == once.rows


def test_the_three_formats_give_the_same_windows(tmp_path: Path, profiles: Profiles,
                                                 traffic: dict[str, Any]) -> None:
    credit = traffic["credit"]
    files = {
        "jsonl (epoch ms)": write_jsonl(credit, tmp_path / "credit.jsonl"),
        "jsonl (ISO-8601)": write_jsonl(credit, tmp_path / "credit-iso.ndjson", iso_every=1),
        "avro container": write_avro(credit, tmp_path / "credit.avro", sync_interval=8_000),
        "parquet (flat, timestamp)": write_parquet(credit, tmp_path / "credit.parquet"),
        "parquet (struct, epoch ms)": write_parquet(credit, tmp_path / "credit-struct.pq", layout="struct"),
    }
    results: dict[str, Replayed] = {}
    for i, (name, path) in enumerate(files.items()):
        results[name] = replayed(load(write_config(tmp_path / f"store{i}", profiles)), [path], chunk_size=1_000)
    baseline = results["jsonl (epoch ms)"]
    assert baseline.outcome.totals.accepted == len(credit) - baseline.outcome.totals.late
    assert baseline.outcome.bad == [] and baseline.counts["alerts"][0] > 0
    for name, result in results.items():
        assert result.outcome.bad == [], name
        assert result.outcome.totals == baseline.outcome.totals, name
        for table in TABLES:
            assert result.rows[table] == baseline.rows[table], (name, table)


def test_parquet_requests_and_responses_join_like_jsonl(tmp_path: Path, profiles: Profiles) -> None:
    fraud = [r for r in scoring_events(hours=3, per_hour=300) if r["model"] == FRAUD[0]]
    jsonl = replayed(load(write_config(tmp_path / "j", profiles)), [write_jsonl(fraud, tmp_path / "f.jsonl")])
    parquet = replayed(load(write_config(tmp_path / "p", profiles)),
                       [write_parquet(fraud, tmp_path / "f.parquet", layout="struct")])
    assert parquet.outcome.totals.unmatched_responses == jsonl.outcome.totals.unmatched_responses == 0
    assert parquet.outcome.totals.accepted == jsonl.outcome.totals.accepted
    assert parquet.rows["windows"] == jsonl.rows["windows"]


@pytest.mark.parametrize("order", ["requests first", "responses first"])
def test_requests_and_responses_in_separate_files_join_as_when_interleaved(tmp_path: Path, profiles: Profiles,
                                                                          order: str) -> None:
    """Each file has its own join clock and is read to its end before the next, as a Kafka partition: the
    requests of three hours wait for the file of their responses (with one clock, all of them expired)."""
    fraud = sorted((r for r in scoring_events(hours=3, per_hour=300) if r["model"] == FRAUD[0]),
                   key=lambda r: r["event_time"])  # in order: no late events, whatever the batches
    requests = [r for r in fraud if "score" not in r]
    responses = [r for r in fraud if "score" in r]
    lost = len(requests) - len(responses)  # (the traffic loses a response now and then)
    assert len(requests) == 900 and lost > 0
    interleaved = replayed(load(write_config(tmp_path / "one", profiles)), [write_jsonl(fraud, tmp_path / "f.jsonl")],
                           chunk_size=500)
    files = [write_jsonl(requests, tmp_path / "requests.jsonl"), write_jsonl(responses, tmp_path / "responses.jsonl")]
    split = replayed(load(write_config(tmp_path / "two", profiles)),
                     files if order == "requests first" else files[::-1], chunk_size=500)
    t = interleaved.outcome.totals
    assert (t.unmatched_requests, t.unmatched_responses, t.accepted) == (lost, 0, 900 - lost)
    assert split.outcome.totals == t
    for table in TABLES:
        assert split.rows[table] == interleaved.rows[table], table


# -- bad inputs ---------------------------------------------------------------------------------------------


def _line(**changes: Any) -> dict[str, Any]:
    r = {"request_id": "bad-0", "model": CREDIT[0], "model_version": CREDIT[1], "event_time": DAY_START_MS + 1_000,
         "features": {"income": 40_000.0, "age": 30.0, "country": "DE"}, "score": 0.1, "decision": "approve"}
    r.update(changes)
    return r


BAD_LINES: list[tuple[bytes, str, str, str]] = [
    # raw line, stage, error class, what the reason says
    (json.dumps(_line())[:70].encode(), "decode", "JSONDecodeError", ""),  # truncated by a broken pipe
    (b'{"request_id": "x", "model": ', "decode", "JSONDecodeError", ""),
    (b'{"request_id": "bad-1", "model": "credit_scoring"\xff\xfe}', "decode", "JSONDecodeError", "UTF-8"),
    (json.dumps(_line(score="high")).encode(), "validate", "SchemaMismatch", "score must be a number or null"),
    (json.dumps(_line(event_time=(DAY_START_MS + 1_000) // 1000)).encode(), "validate", "SchemaMismatch",
     "(epoch seconds? send milliseconds)"),
    (json.dumps(_line(event_time="2026-01-01T01:00:00")).encode(), "validate", "SchemaMismatch", "no time zone"),
    (json.dumps(_line(features=[1, 2])).encode(), "validate", "SchemaMismatch", "features must be an object"),
    (json.dumps(_line(request_id=None)).encode(), "validate", "SchemaMismatch", "missing request_id"),
    (json.dumps(_line(model_version=3.5)).encode(), "validate", "SchemaMismatch", "model_version must be a string"),
    (json.dumps(_line(decision={"d": 1})).encode(), "validate", "SchemaMismatch", "decision must be a string"),
    (b"[1, 2, 3]", "validate", "SchemaMismatch", "expected a JSON object, got list"),
    (b'"just a string"', "validate", "SchemaMismatch", "expected a JSON object, got str"),
    (json.dumps(_line(request_id="bad-2", features={"income": "lots", "age": 30.0})).encode(), "validate",
     "SchemaMismatch", "feature 'income' must be a number, got 'lots'"),
    (json.dumps(_line(request_id="bad-3", model="churn", model_version="1")).encode(), "engine", "UnknownModel",
     "no reference profile configured for model churn version 1"),
    (json.dumps(_line(request_id="bad-4", model_version="99")).encode(), "engine", "UnknownModel",
     "no reference profile configured for model credit_scoring version 99"),
]


def test_bad_inputs_are_reported_and_the_rest_lands(tmp_path: Path, profiles: Profiles,
                                                    traffic: dict[str, Any]) -> None:
    clean_events = [r for r in traffic["credit"] if r["event_time"] < DAY_START_MS + 4 * HOUR_MS]
    clean_path = write_jsonl(clean_events, tmp_path / "clean.jsonl")
    clean = replayed(load(write_config(tmp_path / "clean", profiles)), [clean_path])

    dirty = tmp_path / "dirty.jsonl"
    lines = clean_path.read_bytes().splitlines()
    expected: dict[int, tuple[str, str, str]] = {}
    out: list[bytes] = []
    step = len(lines) // (len(BAD_LINES) + 1)
    for i, line in enumerate(lines):
        out.append(line)
        if i % step == step - 1 and i // step < len(BAD_LINES):
            raw, stage, error_class, reason = BAD_LINES[i // step]
            out.append(raw)
            expected[len(out)] = (stage, error_class, reason)
            if i // step == 3:
                out.append(b"   ")  # a blank line is no event, and no error
    dirty.write_bytes(b"\n".join(out) + b"\n")

    result = replayed(load(write_config(tmp_path / "dirty", profiles)), [dirty])
    t = result.outcome.totals
    found = {b.origin: b for b in result.outcome.bad}
    # every bad input is in the dead-letter file beside the store, with its line, reason and raw line
    letters = result.outcome.dead_letters
    assert letters is not None and letters.parent == tmp_path / "dirty" / "dead-letters"
    records = [json.loads(line) for line in letters.read_text().splitlines()]
    assert len(records) == result.outcome.dead_letter_count == sum(t.bad.values()) == len(result.outcome.bad)
    by_line = {r["line"]: r for r in records}
    for number, (stage, error_class, reason) in expected.items():
        record = by_line[number]
        assert (record["file"], record["stage"], record["error"]) == (str(dirty), stage, error_class), record
        assert reason in record["reason"], record
        if record["raw"] is None and "raw_base64" not in record:  # refused after decoding (engine, typing against
            assert stage != "decode", record  # the profile): the line number says where it is
            continue
        raw = record["raw"].encode() if record["raw"] is not None else base64.b64decode(record["raw_base64"])
        assert raw == out[number - 1] and record["raw_bytes"] == len(raw), record  # invalid UTF-8 in base64
    for number, (stage, error_class, reason) in expected.items():
        bad = found.pop(f"{dirty} line {number}")
        assert (bad.stage, bad.error_class) == (stage, error_class), (number, bad)
        assert reason in bad.reason, (number, bad)
        if stage == "decode":
            assert bad.payload is not None and bad.payload.rstrip(b"\n") == out[number - 1]
    assert found == {}, "nothing else is reported"
    assert t.bad == Counter({"decode": 3, "validate": 10, "engine": 2})
    assert t.events == len(clean_events) + len(BAD_LINES)  # every input counted, once
    # the rest lands: exactly the windows, alerts and rollback requests of the clean file
    assert t.accepted == clean.outcome.totals.accepted
    for table in TABLES:
        assert result.rows[table] == clean.rows[table], table


@pytest.mark.parametrize("damage", ["truncated", "sync marker", "not avro"])
def test_a_corrupt_avro_file_is_read_up_to_the_damage(tmp_path: Path, profiles: Profiles,
                                                      traffic: dict[str, Any], damage: str) -> None:
    events = traffic["credit"][:1_200]
    path = write_avro(events, tmp_path / "events.avro", sync_interval=4_000)
    data = path.read_bytes()
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    elif damage == "sync marker":
        header_end = data.index(b"avro.codec")  # the 16-byte sync marker follows the header's metadata map
        marker = data[len(data) - 16:]
        second = data.index(marker, data.index(marker, header_end) + 16)
        data = data[:second] + bytes(16) + data[second + 16:]
    else:
        data = b"this is not an avro container file\n" * 10
    path.write_bytes(data)
    config = load(write_config(tmp_path / "cfg", profiles))
    if damage == "not avro":  # a file that is no container at all cannot be read: refused before the run
        with pytest.raises(InvalidInput, match=f"{re.escape(str(path))}: not a readable Avro container file"):
            replay(config, [write_jsonl(events[:10], tmp_path / "ok.jsonl"), path])
        assert not (tmp_path / "cfg" / "store").exists()
        return
    with opened(config) as store:
        outcome = replay(config, [path, write_jsonl(events[:10], tmp_path / "ok.jsonl")], store=store)
    decode = [b for b in outcome.bad if b.stage == "decode"]
    assert len(decode) == 1 and outcome.totals.bad["decode"] == 1
    match = re.fullmatch(rf"{re.escape(str(path))} after record (\d+)", decode[0].origin)
    assert match is not None, decode[0].origin
    read = int(match.group(1))
    assert 0 < read < len(events)  # the records before the damage are used
    assert [b for b in outcome.bad if b.stage != "decode"] == []
    assert outcome.totals.events == read + 1 + 10
    assert outcome.totals.accepted + outcome.totals.late == read + 10  # and the next file still lands


def test_a_corrupt_parquet_file_is_reported_not_a_crash(tmp_path: Path, profiles: Profiles,
                                                        traffic: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    path = write_parquet(traffic["credit"][:600], tmp_path / "events.parquet")
    page = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[page + 24: page + 224] = bytes(200)  # zero the compressed bytes of the first data page
    path.write_bytes(bytes(data))
    ok = write_jsonl(traffic["credit"][:10], tmp_path / "ok.jsonl")
    config = load(write_config(tmp_path / "cfg", profiles))
    with opened(config) as store:
        outcome = replay(config, [path, ok], store=store)
    decode = [b for b in outcome.bad if b.stage == "decode"]
    assert len(decode) == 1 and decode[0].origin.startswith(str(path))
    assert outcome.totals.accepted + outcome.totals.late >= 10  # the next file still lands


HOSTILE = {
    "kind is a list": b'{"request_id": "h", "model": "credit_scoring", "model_version": "3", '
                      b'"event_time": 1767225601000, "kind": ["combined"], "features": {"age": 30}, "score": 0.1}',
    "a score too large for a float": b'{"request_id": "h", "model": "credit_scoring", "model_version": "3", '
                                     b'"event_time": 1767225601000, "features": {"age": 30}, "score": 1'
                                     + b"0" * 400 + b"}",
    "a number of 5000 digits": b'{"request_id": "h", "model": "credit_scoring", "model_version": "3", '
                               b'"event_time": 1767225601000, "features": {"age": ' + b"9" * 5000 + b'}, "score": 0.1}',
    "a feature too large for a float": b'{"request_id": "h", "model": "credit_scoring", "model_version": "3", '
                                       b'"event_time": 1767225601000, "features": {"income": 1' + b"0" * 400
                                       + b'}, "score": 0.1, "decision": "approve"}',
}


@pytest.mark.parametrize("name", [
    "kind is a list",
    "a score too large for a float",
    "a number of 5000 digits",
    "a feature too large for a float",
])
def test_a_hostile_line_is_reported_not_a_crash(tmp_path: Path, profiles: Profiles, name: str) -> None:
    good = [json.dumps({**_line(request_id=f"g{i}"), "event_time": DAY_START_MS + i}).encode() for i in range(2)]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join([good[0], HOSTILE[name], good[1]]) + b"\n")
    config = load(write_config(tmp_path / "cfg", profiles))
    with opened(config) as store:  # closed even when replay raises, so the next test can open its own path
        outcome = replay(config, [path], store=store)
    assert [b.origin for b in outcome.bad] == [f"{path} line 2"]
    assert outcome.totals.accepted == 2


# -- the CLI ------------------------------------------------------------------------------------------------


def test_cli_replay_and_query(tmp_path: Path, profiles: Profiles, traffic: dict[str, Any],
                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "conf", profiles, dsn="chdb:data/store")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the store is relative to the config file, not to where we run
    missing = tmp_path / "missing.jsonl"
    assert main(["replay", "--config", str(config), "--json", str(traffic["mixed"]), str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"driftline: error: {missing}: no such file\n"
    assert not (tmp_path / "conf" / "data").exists()  # refused before anything was made

    assert main(["replay", "--config", str(config), "--json", str(traffic["mixed"])]) == 1  # critical alerts
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert set(summary) == {"events", "accepted", "windows", "late_events", "alerts", "rollback_requests", "bad",
                            "unmatched_requests", "unmatched_responses", "duplicates", "version_changes", "critical",
                            "dead_letters", "bad_examples"}
    assert summary["version_changes"] == 0
    assert summary["critical"] is True
    assert summary["events"] == len(traffic["events"])
    assert summary["bad"] == {"join": summary["unmatched_requests"]}
    assert summary["windows"] > 0 and summary["alerts"] > 0 and summary["rollback_requests"] > 0
    unmatched = [e for e in summary["bad_examples"] if e["stage"] == "join"]
    assert unmatched and all(re.fullmatch(rf"{re.escape(str(traffic['mixed']))} line \d+", e["origin"])
                             and e["reason"].startswith("request without a response within 60s") for e in unmatched)
    # every one of them, not only the examples, in the dead-letter file beside the store
    letters = Path(summary["dead_letters"]["path"])
    assert letters.parent == tmp_path / "conf" / "data" / "dead-letters"
    records = [json.loads(line) for line in letters.read_text().splitlines()]
    assert len(records) == summary["dead_letters"]["count"] == summary["unmatched_requests"]
    assert all(r["file"] == str(traffic["mixed"]) and r["line"] >= 1 and r["stage"] == "join" for r in records)
    assert {e["origin"] for e in summary["bad_examples"]} <= {r["origin"] for r in records}
    assert (tmp_path / "conf" / "data" / "store").is_dir() and not (elsewhere / "data").exists()
    gc.collect()

    sql = ("SELECT model, countDistinct(window_id) AS windows, max(window_rows) AS biggest FROM driftline.windows "
           "FINAL WHERE baseline = 'reference' GROUP BY model ORDER BY model")
    assert main(["query", "--config", str(config), "--json", sql]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["model"] for r in rows] == [CREDIT[0], FRAUD[0]]
    assert sum(r["windows"] for r in rows) == summary["windows"]
    gc.collect()

    assert main(["query", "--config", str(config), sql]) == 0
    table = capsys.readouterr().out
    assert "model" in table.splitlines()[0] and "windows" in table.splitlines()[0]
    assert CREDIT[0] in table and FRAUD[0] in table
    gc.collect()

    alerts_sql = ("SELECT model, subject, kind, severity, window_start FROM driftline.alerts FINAL "
                  "ORDER BY window_start, model, subject")
    assert main(["query", "--config", str(config), "--json", alerts_sql]) == 0
    alerts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(alerts) == summary["alerts"]
    assert {"model": CREDIT[0], "subject": "income", "kind": "firing", "severity": "critical"}.items() <= \
        next(a for a in alerts if a["subject"] == "income").items()
    assert any(a["model"] == FRAUD[0] and a["subject"] == "merchant_category" for a in alerts)
    assert all(a["window_start"].startswith("2026-01-01") for a in alerts)  # datetimes print as text
    gc.collect()

    # ids print as the text they are (not b'…'), in JSON and in the table, and paste back into a query
    ids_sql = ("SELECT alert_id, window_id FROM driftline.alerts FINAL WHERE kind = 'firing' AND subject = 'income' "
               "ORDER BY window_start LIMIT 1")
    assert main(["query", "--config", str(config), "--json", ids_sql]) == 0
    [ids] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert re.fullmatch("[0-9a-f]{32}", ids["alert_id"]) and re.fullmatch("[0-9a-f]{32}", ids["window_id"])
    assert main(["query", "--config", str(config), ids_sql]) == 0
    table = capsys.readouterr().out
    assert ids["alert_id"] in table and ids["window_id"] in table and "b'" not in table
    gc.collect()
    around = docs_query("the windows around an alert")  # docs/store.md's query, as written there
    assert "{alert_id:String}" in around
    assert main(["query", "--config", str(config), "--json", around, "--param", f"alert_id={ids['alert_id']}"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and {r["severity"] for r in rows} <= {"warn", "critical"}
    assert any(r["feature"] == "income" and r["severity"] == "critical" for r in rows)
    gc.collect()
    assert main(["query", "--config", str(config), around]) == 2  # without --param: named, before the store
    assert "--param alert_id=VALUE" in capsys.readouterr().err

    assert main(["query", "--config", str(config), "SELECT * FROM driftline.no_such_table"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("driftline: error: query failed")


def docs_query(title: str) -> str:
    """One of docs/store.md's investigation queries, by the comment that opens it."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "store.md").read_text()
    block = text.split("## Investigation queries", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    for query in block.strip().split("\n\n"):
        if query.startswith(f"-- {title}"):
            return query.rstrip().rstrip(";")
    raise AssertionError(f"docs/store.md has no query {title!r}")


def test_cli_replay_text_report(tmp_path: Path, profiles: Profiles, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "few.jsonl"
    lines = [json.dumps({**_line(request_id=f"r{i}"), "event_time": iso(DAY_START_MS + i * 1_000)}) for i in range(5)]
    lines.insert(2, '{"request_id": "r-broken", "mod')
    path.write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path / "conf", profiles)
    assert main(["replay", "--config", str(config), str(path)]) == 0  # nothing critical
    captured = capsys.readouterr()
    assert captured.out.startswith("6 events: 5 in windows, 1 windows closed, 0 alert events, "
                                   "0 rollback requests, 1 not usable, 0 late")
    assert f"{path} line 3: decode: " in captured.err
    letters = re.search(r"all 1 inputs not usable, with their line and reason: (\S+)$", captured.out, re.M)
    assert letters is not None, captured.out
    [record] = [json.loads(line) for line in Path(letters.group(1)).read_text().splitlines()]
    assert (record["file"], record["line"], record["raw"]) == (str(path), 3, '{"request_id": "r-broken", "mod')
    assert f"{path}: 6 events" in captured.err  # the progress line


def test_cli_query_defaults_to_the_embedded_store_here(tmp_path: Path, profiles: Profiles,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("DRIFTLINE__")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, profiles, dsn="chdb:driftline-store")
    events = write_jsonl(scoring_events(hours=2, per_hour=300, fraud=False), tmp_path / "e.jsonl")
    assert main(["replay", "--config", str(config), "--json", str(events)]) == 0
    windows = json.loads(capsys.readouterr().out)["windows"]
    gc.collect()
    assert main(["query", "--json", "SELECT countDistinct(window_id) AS n FROM driftline.windows FINAL"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": windows}


def _bad_config(tmp_path: Path, profiles: Profiles, case: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    if case == "file value":
        path = write_config(tmp_path, profiles, min_samples=0)
    elif case == "environment value":
        monkeypatch.setenv("DRIFTLINE__JOIN__MAX_WAIT", "soon")
        path = write_config(tmp_path, profiles)
    elif case == "unknown key":
        path = write_config(tmp_path, profiles, extra={"windows": {"sise": "1h"}})
    elif case == "bad dsn":
        path = write_config(tmp_path, profiles, dsn="postgres://db/risk")
    elif case == "missing file":
        path = tmp_path / "nope.yaml"
    else:
        raise AssertionError(case)
    return path


CONFIG_ERRORS = {
    "file value": "models.0.policy.min_samples: Input should be greater than or equal to 1",
    "environment value": "join.max_wait: Value error, 'soon' is not a duration",
    "unknown key": "windows.sise: Extra inputs are not permitted",
    "bad dsn": "store.dsn: String should match pattern",
    "missing file": "no such configuration file",
}


@pytest.mark.parametrize("command", ["replay", "query"])
@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_cli_config_errors_exit_2_naming_the_field(tmp_path: Path, profiles: Profiles, case: str, command: str,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _bad_config(tmp_path, profiles, case, monkeypatch)
    events = write_jsonl(scoring_events(hours=1, per_hour=10, fraud=False), tmp_path / "e.jsonl")
    argv = ["replay", "--config", str(path), str(events)] if command == "replay" else \
        ["query", "--config", str(path), "SELECT 1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("driftline: error: ")
    assert CONFIG_ERRORS[case] in captured.err
    assert str(path) in captured.err
    assert not (tmp_path / "store").exists()  # nothing was started


@pytest.mark.parametrize(("case", "named"), [
    ("missing reference profile", "no such reference profile"),
    ("profile of another model", "profiles credit_scoring 3, not fraud_detection 7"),
    ("too few panes", "windows: Value error, max_open_panes"),
])
def test_cli_replay_refuses_a_config_whose_models_cannot_run(tmp_path: Path, profiles: Profiles, case: str,
                                                             named: str, capsys: pytest.CaptureFixture[str]) -> None:
    swapped = dict(profiles)
    extra: dict[str, Any] = {}
    if case == "missing reference profile":
        swapped[FRAUD] = tmp_path / "gone.json"
    elif case == "profile of another model":
        swapped[FRAUD] = profiles[CREDIT]
    else:
        extra = {"windows": {"size": "1h", "hop": "5m", "max_open_panes": 6}}
    config = write_config(tmp_path / "conf", swapped, extra=extra)
    events = write_jsonl(scoring_events(hours=1, per_hour=10, fraud=False), tmp_path / "e.jsonl")
    assert main(["replay", "--config", str(config), str(events)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("driftline: error: ") and named in captured.err


# -- the demo ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("demo")
    with_incidents = run_demo(root / "incidents", events_per_hour=1_500, quiet=True)
    gc.collect()
    without = run_demo(root / "calm", events_per_hour=1_500, incidents=False, quiet=True)
    gc.collect()
    return {"root": root, "incidents": with_incidents, "calm": without}


def _query(config: Path, sql: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["query", "--config", str(config), "--json", sql]) == 0
    gc.collect()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_the_demo_detects_its_three_incidents(demo: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    outcome = demo["incidents"]
    firing = [a for a in outcome.alerts if a.kind == "firing"]
    subjects = {(a.window.model, a.subject) for a in firing}
    assert {("credit_scoring", "income"), ("fraud_detection", "merchant_category"),
            ("transaction_risk", "score")} <= subjects
    incident_hours = {m.name: m.incident_hours for m in MODELS}
    for alert in firing:  # nothing fires outside an incident
        hour = (alert.window.start_ms - DAY_START_MS) // HOUR_MS
        assert hour in incident_hours[alert.window.model], (alert.window.model, alert.subject, hour)
    by_subject = {(a.window.model, a.subject): a for a in firing}
    income = {b.metric: b.severity for b in by_subject[("credit_scoring", "income")].breaches}
    assert income.get("psi") == "critical"
    unseen = {b.metric: b.severity for b in by_subject[("fraud_detection", "merchant_category")].breaches}
    assert unseen.get("unseen_share") == "critical"
    score = by_subject[("transaction_risk", "score")]
    assert score.role == "score" and score.severity == "critical"
    assert outcome.rollbacks and {r.status for r in outcome.rollbacks} <= {"dry_run", "suppressed"}
    t = outcome.totals
    assert t.windows == 72 and t.bad["decode"] > 0 and t.unmatched_requests > 0
    assert all(re.search(r"hour-\d\d\.jsonl line \d+$", b.origin) for b in outcome.bad)
    assert outcome.critical  # driftline replay would exit 1; the demo itself exits 0 (docs: README)
    assert outcome.dead_letters is not None and outcome.dead_letters.parent == demo["root"] / "incidents" / "dead-letters"
    assert outcome.dead_letter_count == sum(t.bad.values()) == len(outcome.dead_letters.read_text().splitlines())

    config = demo["root"] / "incidents" / "driftline.yaml"
    stored = _query(config, "SELECT kind, count() AS n FROM driftline.alerts FINAL GROUP BY kind ORDER BY kind",
                    capsys)
    assert sum(r["n"] for r in stored) == t.alerts
    assert sum(r["n"] for r in _query(config, "SELECT count() AS n FROM driftline.rollback_requests FINAL",
                                      capsys)) == t.rollbacks
    # the investigations the demo prints all run, and point at the incidents
    top, trend, around = (_query(config, sql, capsys) for _, sql in INVESTIGATIONS)
    assert {(r["model"], r["feature"]) for r in top[:3]} & {("credit_scoring", "income")}
    assert len(trend) == 24 and {r["severity"] for r in trend[8:13]} == {"critical"}
    assert around and {r["severity"] for r in around} <= {"warn", "critical"}


def test_the_demo_without_incidents_fires_nothing(demo: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    outcome = demo["calm"]
    assert outcome.totals.alerts == 0 and outcome.alerts == [] and outcome.rollbacks == []
    assert outcome.totals.windows == 72 and outcome.totals.accepted > 0.99 * demo["incidents"].totals.accepted
    config = demo["root"] / "calm" / "driftline.yaml"
    assert _query(config, "SELECT count() AS n FROM driftline.alerts FINAL", capsys) == [{"n": 0}]
    assert _query(config, "SELECT countDistinct(window_id) AS n FROM driftline.windows FINAL", capsys) == [{"n": 72}]


# -- a silent version switch ---------------------------------------------------------------------------------


def test_a_silent_version_switch_is_stored_audited_and_compared(tmp_path: Path, profiles: Profiles) -> None:
    """credit_scoring version 3 for three hours, then version 4 (trained to score higher, so each version
    matches its own reference): the switch is a version_changes row, an audit entry, and version 4's first
    windows have previous_version rows against version 3's last window; replaying again changes nothing."""
    rng = np.random.default_rng(44)
    shift = Incident(score_shift=1.2)
    v4 = build_profile(credit_applications(rng, 20_000, shift), model=CREDIT[0], model_version="4",
                       categorical=CREDIT_CATEGORICAL, score_column="score", decision_column="decision")
    save_profile(v4, tmp_path / "credit-4.json")
    path = write_config(tmp_path / "cfg", profiles)
    data = json.loads(path.read_text())
    data["models"][0]["references"]["4"] = str(tmp_path / "credit-4.json")
    path.write_text(json.dumps(data))
    config = load(path)
    timed = []
    for hour in range(7):
        version, incident = (CREDIT, Incident()) if hour < 3 else ((CREDIT[0], "4"), shift)
        timed += _records(version, credit_applications(rng, 600, incident), hour, rng, split=False)
    timed.sort(key=lambda item: item[0])
    events = write_jsonl([r for _, r in timed], tmp_path / "switch.jsonl")
    hour = lambda h: DAY_START_MS + h * HOUR_MS  # noqa: E731
    with opened(config) as store:
        outcome = replay(config, [events], store=store, chunk_size=1_000)
        again = replay(config, [events], store=store, chunk_size=2_500)  # other batches: the same rows
        changes = store.query("SELECT kind, model, from_version, to_version, window_id, "
                              "toUnixTimestamp64Milli(window_start), change_id FROM driftline.version_changes FINAL "
                              "ORDER BY window_end")[1]
        plain = count(store, "version_changes", final=False)
        audit = store.query("SELECT action, model_version, subject_id, details FROM driftline.audit_log FINAL "
                            "WHERE action LIKE 'version.%' ORDER BY event_time, action")[1]
        compared = store.query(
            "SELECT feature, window_id, baseline_version, baseline_window_id, severity, length(histogram_expected), "
            "length(bin_edges) FROM driftline.windows FINAL WHERE baseline = 'previous_version' "
            "ORDER BY window_start, feature")[1]
        alerts = store.query("SELECT kind, subject, baseline FROM driftline.alerts FINAL "
                             "WHERE baseline = 'previous_version' ORDER BY window_start, subject, kind")[1]
        reference = store.query("SELECT count() FROM driftline.windows FINAL WHERE baseline_version != ''"
                                " AND baseline != 'previous_version'")[1][0][0]
    assert outcome.totals.version_changes == again.totals.version_changes == 2
    first_v4 = window_id(CREDIT[0], "4", hour(3), hour(4))
    assert [tuple(_text(v) for v in row[:5]) + (row[5],) for row in changes] == [
        ("appeared", CREDIT[0], "3", "4", first_v4, hour(3)),
        ("disappeared", CREDIT[0], "3", "4", window_id(CREDIT[0], "4", hour(4), hour(5)), hour(4))]
    assert plain == 2  # the second replay's inserts were deduplicated
    ids = {_text(row[6]) for row in changes}
    assert [(a, v) for a, v, _, _ in audit[:2]] == [("version.appeared", "4"), ("version.compared", "4")]
    assert {_text(s) for a, _, s, _ in audit if a.startswith("version.") and a != "version.compared"} == ids
    assert json.loads(audit[0][3])["from_version"] == "3"
    # version 4's first two windows (policy.consecutive), every column, against version 3's last closed window
    v3_last = window_id(CREDIT[0], "3", hour(1), hour(2))  # (its hour-2 window closes only at the end of input)
    by_window = Counter(_text(w) for _, w, *_ in compared)
    assert by_window == {first_v4: 12, window_id(CREDIT[0], "4", hour(4), hour(5)): 12}
    assert {(b, _text(bw)) for _, _, b, bw, *_ in compared} == {("3", v3_last)}
    score = [row for row in compared if row[0] == "score"]
    assert [row[4] for row in score] == ["critical", "critical"]
    assert all(row[5] == row[6] + 1 for row in score)  # on version 4's cells (+ the missing cell)
    assert ("firing", "score", "previous_version") in alerts and ("resolved", "score", "previous_version") in alerts
    assert reference == 0
    assert not [r for r in outcome.rollbacks if r.subject == "score"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- corrupt values and dropped features (issue 9) -----------------------------------------------------

def _credit_profile_with_score_range(root: Path, profiles: Profiles) -> Profiles:
    """The credit reference again, with the score's valid range [0, 1] declared."""
    import numpy as np

    from driftline.connectors.profiles import save_profile
    from driftline.engine.profile import build_profile
    from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications

    rng = np.random.default_rng(20260101)
    profile = build_profile(credit_applications(rng, 20_000, Incident()), model=CREDIT[0], model_version=CREDIT[1],
                            categorical=CREDIT_CATEGORICAL, score_column="score", decision_column="decision",
                            valid_ranges={"score": (0.0, 1.0)})
    root.mkdir(parents=True, exist_ok=True)
    path = root / "credit-with-range.json"
    save_profile(profile, path)
    return {**profiles, CREDIT: path}


@pytest.mark.parametrize("fmt", ["jsonl", "avro"])
def test_two_corrupt_scores_request_no_rollback(tmp_path: Path, profiles: Profiles, fmt: str) -> None:
    # 4,500 normal credit events an hour, one score of 1e29 in each of hours 1 and 2 (and in Avro, which
    # can carry them, three ±inf scores in hour 1): no critical, no rollback; the 1e29 scores are counted
    # invalid (the profile says scores lie in [0, 1]), the ±inf ones are bad events naming the score
    events = [r for r in scoring_events(hours=4, per_hour=4_500, incidents=False, fraud=False)]
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for r in events:
        by_hour.setdefault((r["event_time"] - DAY_START_MS) // HOUR_MS, []).append(r)
    by_hour[1][100]["score"] = 1e29
    by_hour[2][200]["score"] = 1e29
    infinite = [by_hour[1][i] for i in (300, 301, 302)] if fmt == "avro" else []
    for r, value in zip(infinite, (float("inf"), float("-inf"), float("inf")), strict=False):
        r["score"] = value
    path = (write_avro if fmt == "avro" else write_jsonl)(events, tmp_path / f"events.{fmt}")
    config = load(write_config(tmp_path / "cfg", _credit_profile_with_score_range(tmp_path / "ref", profiles),
                               extra={"rollback": {"dry_run": False}}))
    with opened(config) as store:
        outcome = replay(config, [path], store=store)
        _, rows = store.query(
            f"SELECT toUnixTimestamp64Milli(window_start), invalid, invalid_share, wasserstein_normed, severity "
            f"FROM {store.database}.windows FINAL WHERE model = '{CREDIT[0]}' AND feature = 'score' "
            "AND baseline = 'reference' ORDER BY window_start")
    assert [(b.error_class, b.reason) for b in outcome.bad] == [
        ("InvalidScore", f"score must be a finite number or null, got {r['score']}") for r in infinite]
    assert outcome.rollbacks == []
    assert [a for a in outcome.alerts if a.severity == "critical"] == []
    by_start = {int(start) - DAY_START_MS: row for start, *row in rows}
    assert [by_start[h * HOUR_MS][0] for h in range(4)] == [0, 1, 1, 0]
    for invalid, share, distance, severity in by_start.values():
        assert severity != "critical" and distance < 0.1
        assert share == pytest.approx(invalid / 4_500, rel=0.05)


def test_a_dropped_feature_is_critical_on_its_missing_rate(tmp_path: Path, profiles: Profiles) -> None:
    # an upstream join silently drops income from hour 2 on: too few values for the distribution tests,
    # but the missing rate is judged on the window's rows, and the alert fires
    events = scoring_events(hours=4, per_hour=600, incidents=False, fraud=False)
    for r in events:
        if r["event_time"] >= DAY_START_MS + 2 * HOUR_MS:
            del r["features"]["income"]
    config = load(write_config(tmp_path / "cfg", profiles))
    with opened(config) as store:
        outcome = replay(config, [write_jsonl(events, tmp_path / "events.jsonl")], store=store)
        _, rows = store.query(
            f"SELECT missing_rate_shift, insufficient_samples, severity, breaches.metric "
            f"FROM {store.database}.windows FINAL WHERE model = '{CREDIT[0]}' AND feature = 'income' "
            "AND baseline = 'reference' ORDER BY window_start")
    assert [(shift, gated, severity) for shift, gated, severity, _ in rows][2:] == [(1.0, True, "critical")] * 2
    assert all(metrics == ["missing_rate_shift"] for *_, metrics in rows[2:])
    assert [(a.kind, a.severity) for a in outcome.alerts if a.subject == "income"] == [("firing", "critical")]
