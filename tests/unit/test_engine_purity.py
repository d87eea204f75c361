"""The engine is pure: no Kafka, ClickHouse, MLflow, Arrow or HTTP client comes in with it (style.md).

Checked twice: by importing ``driftline.engine`` in a fresh interpreter and reading ``sys.modules``, and
by reading every import statement (lazy ones inside functions included) of ``driftline/engine/*.py``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "driftline" / "engine"

FORBIDDEN_AT_IMPORT = (
    "confluent_kafka", "kafka", "aiokafka", "clickhouse_connect", "chdb", "mlflow", "pyarrow", "pandas",
    "requests", "httpx", "urllib3", "aiohttp", "http.client", "prometheus_client", "fastavro",
    "pydantic", "yaml", "jsonschema",
    "river",  # the score change watch is numpy (river is the benchmark's and the tests' reference)
    "driftline.connectors", "driftline.config", "driftline.pipeline", "driftline.app.cli",
)
ALLOWED_THIRD_PARTY = {"numpy", "scipy"}
ALLOWED_DRIFTLINE = ("driftline.engine", "driftline.errors")


def engine_files() -> list[Path]:
    files = sorted(ENGINE.glob("*.py"))
    assert files and (ENGINE / "__init__.py") in files
    return files


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the engine package
                base = "driftline.engine" if node.level == 1 else "driftline"
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                assert node.module is not None
                names.append(node.module)
    return names


def test_importing_the_engine_pulls_in_no_client() -> None:
    code = ("import json, sys\n"
            "import driftline.engine, driftline.engine.changewatch, driftline.engine.monitor\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    pulled = sorted(m for m in loaded for bad in FORBIDDEN_AT_IMPORT if m == bad or m.startswith(bad + "."))
    assert pulled == [], f"importing driftline.engine loaded {pulled}"


@pytest.mark.parametrize("path", engine_files(), ids=lambda p: p.name)
def test_engine_modules_import_only_numpy_scipy_and_the_engine(path: Path) -> None:
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top == "driftline":
            assert name.startswith(ALLOWED_DRIFTLINE), f"{path.name} imports {name}"
            assert not name.startswith("driftline.connectors"), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"
            assert name not in ("http.client", "urllib.request", "socket"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", engine_files(), ids=lambda p: p.name)
def test_engine_modules_read_no_environment_and_no_clock(path: Path) -> None:
    """Settings come in as arguments and every time is an event time handed in (policy, window docstrings)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            call = f"{node.value.id}.{node.attr}"
            assert call not in ("os.environ", "os.getenv", "time.time", "time.monotonic", "datetime.now",
                                "datetime.utcnow"), f"{path.name}:{node.lineno} uses {call}"


def test_building_a_score_watch_pulls_in_no_river() -> None:
    """The change watch is batch-native numpy (changewatch docstring): river is not needed to run it."""
    code = ("import json, sys\n"
            "from driftline.engine.changewatch import ScoreChangeWatch\n"
            "import numpy as np\n"
            "ScoreChangeWatch().update(np.linspace(0, 1, 1000))\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert not [m for m in json.loads(result.stdout) if m == "river" or m.startswith("river.")]
