"""The inputs of ``driftline replay`` that must not go unaccounted for: files refused before anything starts
(exit 2), every bad input in the run's dead-letter file, and ``query``'s ``--param`` placeholders. Pure: no
store is opened (the end-to-end runs are in tests/integration/test_replay_store.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.app.cli import main, query_parameters
from driftline.config import Config
from driftline.connectors.dead_letters import RAW_CAP, DeadLetterFile, dead_letter_path, dead_letter_record
from driftline.connectors.sources import check_input, read_events
from driftline.errors import InvalidInput
from driftline.events import BadEvent, Position, Source

LINE = {"request_id": "r-1", "model": "credit", "model_version": "3", "event_time": 1_767_225_600_000,
        "features": {"x": 1.0}, "score": 0.1}


# -- files refused before the run -------------------------------------------------------------------------


def _case(tmp_path: Path, case: str) -> Path:
    if case == "no such file":
        return tmp_path / "absent.jsonl"
    if case == "a directory":
        (tmp_path / "d.jsonl").mkdir()
        return tmp_path / "d.jsonl"
    if case == "unsupported type":
        (tmp_path / "e.csv").write_text("a,b\n1,2\n")
        return tmp_path / "e.csv"
    if case in ("empty jsonl", "empty parquet file", "empty avro file"):
        path = tmp_path / {"empty jsonl": "e.jsonl", "empty parquet file": "e.parquet",
                           "empty avro file": "e.avro"}[case]
        path.write_bytes(b"")
        return path
    if case == "parquet without rows":
        path = tmp_path / "e.parquet"
        pq.write_table(pa.table({"request_id": pa.array([], pa.string())}), path)
        return path
    if case == "not parquet":
        path = tmp_path / "e.parquet"
        path.write_text("this is not parquet\n")
        return path
    if case == "avro without records":
        path = tmp_path / "e.avro"
        with path.open("wb") as out:
            fastavro.writer(out, {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}, [])
        return path
    if case == "not avro":
        path = tmp_path / "e.avro"
        path.write_text("this is not an avro container file\n" * 10)
        return path
    raise AssertionError(case)


REFUSED = {
    "no such file": "no such file",
    "a directory": "is a directory",
    "unsupported type": "unsupported file type",
    "empty jsonl": "the file is empty",
    "empty parquet file": "the file is empty",
    "empty avro file": "the file is empty",
    "parquet without rows": "a Parquet file without rows",
    "not parquet": "not a readable Parquet file",
    "avro without records": "an Avro container file without records",
    "not avro": "not a readable Avro container file",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_file_that_cannot_be_read_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    path = _case(tmp_path, case)
    with pytest.raises(InvalidInput, match=f"^{path}: {REFUSED[case]}"):
        check_input(path)


@pytest.mark.parametrize("case", ["no such file", "empty parquet file", "parquet without rows", "not avro"])
def test_replay_exits_2_for_an_unreadable_input_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "driftline.yaml"
    config.write_text(json.dumps({"models": [{"name": "credit", "references": {"3": "credit-3.json"}}]}))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(LINE) + "\n")
    bad = _case(tmp_path, case)
    assert main(["replay", "--config", str(config), str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"driftline: error: {bad}: {REFUSED[case]}")
    assert sorted(p.name for p in (tmp_path / "conf").iterdir()) == ["driftline.yaml"]  # no store, no profile read


@pytest.mark.parametrize("profile", ["missing", "not json"])
def test_replay_exits_2_for_an_unusable_profile_before_the_store_is_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], profile: str) -> None:
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "driftline.yaml"
    config.write_text(json.dumps({"models": [{"name": "credit", "references": {"3": "credit-3.json"}}]}))
    if profile == "not json":
        (tmp_path / "conf" / "credit-3.json").write_text("{not json")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(LINE) + "\n")
    assert main(["replay", "--config", str(config), str(good)]) == 2
    assert "credit-3.json" in capsys.readouterr().err
    assert {p.name for p in (tmp_path / "conf").iterdir()} <= {"driftline.yaml", "credit-3.json"}  # no store


def test_readable_files_pass(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps(LINE) + "\n")
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"request_id": ["r"]}), parquet)
    for path in (jsonl, parquet):
        check_input(path)


# -- the dead-letter file -----------------------------------------------------------------------------------


def test_every_bad_line_keeps_its_file_line_reason_and_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    long_line = json.dumps({**LINE, "request_id": 17, "features": {"pad": "x" * 10_000}}).encode()
    lines = [json.dumps(LINE).encode(), b'{"request_id": "r", "score": NaN}', b"", long_line,
             b'{"request_id": "r\xff"}', json.dumps({**LINE, "request_id": None}).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    bad = [b for _, chunk in read_events(path) for b in chunk]
    letters = DeadLetterFile(tmp_path / "store-dir" / "dead-letters" / "replay-1.jsonl", [path])
    assert letters.written is None
    letters.write([])
    assert not letters.path.exists()  # a run without bad inputs leaves no file
    letters.write(bad[:2])
    letters.write(bad[2:])
    letters.close()
    assert letters.written == letters.path and letters.count == 4
    records = [json.loads(line) for line in letters.path.read_text().splitlines()]
    assert [(r["file"], r["line"], r["stage"]) for r in records] == [
        (str(path), 2, "decode"), (str(path), 4, "validate"), (str(path), 5, "decode"), (str(path), 6, "validate")]
    nan, long, not_utf8, missing = records
    assert nan["reason"].startswith("field 'score': NaN is not a JSON number") and nan["error"] == "JSONDecodeError"
    assert nan["raw"] == '{"request_id": "r", "score": NaN}' and nan["raw_bytes"] == 33
    assert nan["raw_truncated"] is False
    assert long["reason"] == "request_id must be a string, got int 17"
    assert long["raw"] == long_line[:RAW_CAP].decode() and long["raw_bytes"] == len(long_line)
    assert long["raw_truncated"] is True
    assert not_utf8["raw"] is None and base64.b64decode(not_utf8["raw_base64"]) == b'{"request_id": "r\xff"}'
    assert missing["reason"] == "missing request_id" and missing["origin"] == f"{path} line 6"


@pytest.mark.parametrize(("at", "where"), [
    (Position(Source("/d/e.avro", "record"), -1, 12), {"file": "/d/e.avro", "record": 12}),
    (Position(Source("/d/my events.parquet", "row"), -1, 3), {"file": "/d/my events.parquet", "row": 3}),
    (Position(Source("/d/e.avro", "after record"), -1, 7), {"file": "/d/e.avro", "after_record": 7}),
    ("/d/e.jsonl", {"file": "/d/e.jsonl"}),
    (Position(Source("scoring"), 3, 42), {"file": None}),
])
def test_the_position_of_every_kind_of_input(at: Position | str, where: dict[str, Any]) -> None:
    unmatched = ("join", "Unmatched", "request without a response")
    bad = BadEvent(at, *unmatched) if isinstance(at, str) else BadEvent.of(at, *unmatched)
    record = dead_letter_record(bad, frozenset({"/d/e.jsonl"}))
    assert {k: record[k] for k in where} == where
    assert record["raw"] is None and record["reason"] == "request without a response"


def test_a_line_cut_inside_a_character_keeps_its_text() -> None:
    raw = ("é" * 3_000).encode()  # 6,000 bytes: the cap falls between the two bytes of an é
    record = dead_letter_record(BadEvent("e.jsonl line 1", "validate", "SchemaMismatch", "x", raw[:RAW_CAP],
                                         len(raw)))
    assert record["raw"] == "é" * (RAW_CAP // 2) and record["raw_bytes"] == 6_000 and record["raw_truncated"]


def test_the_default_place_is_beside_the_store_or_the_configuration(tmp_path: Path) -> None:
    embedded = Config.model_validate({"store": {"dsn": "chdb:///srv/driftline/store"}})
    path = dead_letter_path(embedded, tmp_path)
    assert path.parent == Path("/srv/driftline/dead-letters") and path.name.startswith("replay-")
    assert path.suffix == ".jsonl" and path != dead_letter_path(embedded, tmp_path)  # one file per run
    server = Config.model_validate({"store": {"dsn": "http://ch:8123"}})
    assert dead_letter_path(server, tmp_path).parent == tmp_path / "dead-letters"


# -- query --param ------------------------------------------------------------------------------------------


def test_query_parameters_fill_every_placeholder() -> None:
    sql = "SELECT * FROM driftline.alerts WHERE alert_id = {alert_id:String} AND n > { n : UInt32 }"
    assert query_parameters(sql, ["alert_id=ab=cd", "n=5"]) == {"alert_id": "ab=cd", "n": "5"}
    assert query_parameters("SELECT '{\"a\": 1}'", []) == {}  # JSON in a literal is not a placeholder


@pytest.mark.parametrize(("pairs", "message"), [
    ([], "placeholders without a value: alert_id; give each with --param alert_id=VALUE"),
    (["alert_id"], "expected NAME=VALUE"),
    (["alert_id=1", "other=2"], "--param other: the query has no {other:Type} placeholder"),
])
def test_query_parameters_errors_exit_2(pairs: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT 1 WHERE {alert_id:String} != ''"
    with pytest.raises(InvalidInput, match=message.replace("{", r"\{").replace("}", r"\}")):
        query_parameters(sql, pairs)
    assert main(["query", sql, *[a for p in pairs for a in ("--param", p)]]) == 2  # before any store is opened
    assert message in capsys.readouterr().err
