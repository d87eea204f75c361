"""The batch CLI contract: `driftline reference build` and `driftline evaluate` (exit codes 0/1/2, JSON shape)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from driftline.app.cli import main
from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications
from driftline.connectors.files import write_parquet
from driftline.connectors.profiles import load_profile

FEATURE_KEYS = {"n", "psi", "psi_critical", "ks_statistic", "ks_pvalue", "js_distance", "wasserstein_normed",
                "chi2_pvalue", "l_infinity", "unseen_share", "missing_rate", "severity"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    data = root / "train.parquet"
    write_parquet(credit_applications(np.random.default_rng(1), 20_000), data)
    out = root / "ref.json"
    code = main(["reference", "build", "--data", str(data), "--model", "credit", "--model-version", "3",
                 "--categorical", ",".join(CREDIT_CATEGORICAL), "--score-column", "score",
                 "--decision-column", "decision", "--out", str(out)])
    assert code == 0
    return out


def _evaluate(reference: Path, data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["evaluate", "--reference", str(reference), "--data", str(data), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_profile_has_roles_and_validates(reference: Path) -> None:
    profile = load_profile(reference)
    assert profile.score is not None and profile.score.name == "score"
    assert profile.decision is not None and "approve" in profile.decision.top
    assert profile.features["country"].kind == "categorical"
    assert profile.content_hash.startswith("sha256:")


def test_no_drift_exits_0_with_full_json(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "current.parquet"
    write_parquet(credit_applications(np.random.default_rng(2), 5_000), data)
    code, out, _ = _evaluate(reference, data, capsys, "--json")
    result = json.loads(out)
    assert code == 0
    assert set(result) >= {"features", "dataset"}
    assert result["dataset"]["severity"] == "ok"
    for name, f in result["features"].items():
        assert FEATURE_KEYS <= set(f), name
        assert f["severity"] in {"ok", "warn"}
    assert result["features"]["income"]["chi2_pvalue"] is None
    assert result["features"]["country"]["ks_statistic"] is None


def test_unit_change_exits_1_and_names_the_feature(reference: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "drifted.csv"
    columns = credit_applications(np.random.default_rng(3), 5_000, Incident(income_unit=0.001))
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.table({k: pa.array(v, from_pandas=True) for k, v in columns.items()}), data)
    code, out, _ = _evaluate(reference, data, capsys, "--json")
    result = json.loads(out)
    assert code == 1
    assert result["features"]["income"]["severity"] == "critical"
    assert any(b["metric"] == "psi" for b in result["features"]["income"]["breaches"])


def test_text_table(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "current.parquet"
    write_parquet(credit_applications(np.random.default_rng(4), 2_000), data)
    code, out, _ = _evaluate(reference, data, capsys)
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["feature", "kind", "n"]
    assert "dataset:" in out


@pytest.mark.parametrize("case, message", [
    ("missing_column", "income"),
    ("empty_file", "empty"),
    ("header_only", "no rows"),
    ("wrong_type", "bureau_score"),
    ("no_such_file", "no such file"),
    ("not_a_table", "unsupported file type"),
])
def test_bad_input_exits_2_naming_the_problem(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              case: str, message: str) -> None:
    columns = credit_applications(np.random.default_rng(5), 100)
    data = tmp_path / "bad.parquet"
    if case == "missing_column":
        del columns["income"]
        write_parquet(columns, data)
    elif case == "empty_file":
        data = tmp_path / "bad.csv"
        data.write_text("")
    elif case == "header_only":
        data = tmp_path / "bad.csv"
        data.write_text(",".join(columns) + "\n")
    elif case == "wrong_type":
        columns["bureau_score"] = np.array(["high"] * 100, dtype=object)
        write_parquet(columns, data)
    elif case == "no_such_file":
        data = tmp_path / "absent.parquet"
    elif case == "not_a_table":
        data = tmp_path / "bad.txt"
        data.write_text("hello")
    code, out, err = _evaluate(reference, data, capsys, "--json")
    assert code == 2
    assert out == ""
    assert message in err


def test_bad_reference_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: Path) -> None:
    tampered = json.loads(reference.read_text())
    tampered["features"]["income"]["mean"] = 1.0
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    data = tmp_path / "current.parquet"
    write_parquet(credit_applications(np.random.default_rng(6), 100), data)
    code, _, err = _evaluate(bad, data, capsys)
    assert code == 2 and "content_hash" in err
    bad.write_text('{"format_version": 1}')
    code, _, err = _evaluate(bad, data, capsys)
    assert code == 2 and "schema" in err


def test_reference_build_rejects_unknown_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "train.parquet"
    write_parquet(credit_applications(np.random.default_rng(7), 100), data)
    code = main(["reference", "build", "--data", str(data), "--model", "m", "--model-version", "1",
                 "--score-column", "pd", "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "'pd'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "store: {dsn: 'chdb:store'}\n", "models: []\n"])
def test_replay_with_a_configuration_without_models_exits_2_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    config = tmp_path / "driftline.yaml"
    config.write_text(text)
    events = tmp_path / "events.jsonl"
    events.write_text('{"request_id": "r", "model": "credit", "model_version": "3", "event_time": 1767225600000, '
                      '"features": {"x": 1}, "score": 0.1}\n')
    assert main(["replay", "--config", str(config), str(events)]) == 2
    assert "models: no model is configured" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driftline.yaml", "events.jsonl"]  # no store made


@pytest.mark.parametrize("missing", [0.95, 1.0])
def test_a_mostly_missing_feature_is_critical_and_counted(reference: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], missing: float) -> None:
    # an upstream join silently dropping a feature: too few values for the distribution tests, but the
    # missing rate is judged on the window's rows
    columns = credit_applications(np.random.default_rng(8), 5_000)
    columns["income"][np.random.default_rng(9).random(5_000) < missing] = np.nan
    data = tmp_path / "dropped.parquet"
    write_parquet(columns, data)
    code, out, _ = _evaluate(reference, data, capsys, "--json")
    result = json.loads(out)
    income = result["features"]["income"]
    assert code == 1
    assert income["severity"] == "critical" and income["insufficient_samples"] is True
    assert [b["metric"] for b in income["breaches"]] == ["missing_rate_shift"]
    assert "income" in result["dataset"]["drifted_features"]
    features = [n for n, f in result["features"].items() if f["role"] == "feature"]
    assert result["dataset"]["features_assessed"] == len(features)
    code, out, _ = _evaluate(reference, data, capsys)
    dataset_line = next(line for line in out.splitlines() if line.startswith("dataset:"))
    assert f"1 of {len(features)} features drifted" in dataset_line and dataset_line.endswith("income")


def test_a_declared_valid_range_counts_scores_outside_it_as_invalid(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    train = tmp_path / "train.parquet"
    write_parquet(credit_applications(np.random.default_rng(1), 5_000), train)
    out = tmp_path / "ref.json"
    assert main(["reference", "build", "--data", str(train), "--model", "credit", "--model-version", "3",
                 "--categorical", ",".join(CREDIT_CATEGORICAL), "--score-column", "score",
                 "--decision-column", "decision", "--valid-range", "score=0:1", "--valid-range", "age=18:",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    profile = load_profile(out)
    assert profile.features["score"].valid_range == (0.0, 1.0)  # type: ignore[union-attr]
    assert profile.features["age"].valid_range == (18.0, float("inf"))  # type: ignore[union-attr]
    columns = credit_applications(np.random.default_rng(2), 5_000)
    columns["score"][:10] = 1e29  # 0.2 %: counted, not critical
    data = tmp_path / "current.parquet"
    write_parquet(columns, data)
    code, text, _ = _evaluate(out, data, capsys, "--json")
    score = json.loads(text)["features"]["score"]
    assert code == 0 and score["invalid"] == 10 and score["invalid_share"] == pytest.approx(10 / 5_000)
    assert score["severity"] != "critical"
    columns["score"][:500] = 1.5  # 10 % outside [0, 1]: critical on its own share
    write_parquet(columns, data)
    code, text, _ = _evaluate(out, data, capsys, "--json")
    score = json.loads(text)["features"]["score"]
    assert code == 1 and score["invalid"] == 500
    assert [b["metric"] for b in score["breaches"] if b["severity"] == "critical"] == ["invalid_share"]


@pytest.mark.parametrize("spec", ["score", "score=0-1", "=0:1", "score=a:1", "score=1:0", "nowhere=0:1"])
def test_a_bad_valid_range_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str) -> None:
    train = tmp_path / "train.parquet"
    write_parquet(credit_applications(np.random.default_rng(1), 200), train)
    code = main(["reference", "build", "--data", str(train), "--model", "credit", "--model-version", "3",
                 "--categorical", ",".join(CREDIT_CATEGORICAL), "--score-column", "score",
                 "--decision-column", "decision", "--valid-range", spec, "--out", str(tmp_path / "ref.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert spec.partition("=")[0] in err or spec in err
