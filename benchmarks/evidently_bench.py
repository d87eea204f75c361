"""Evidently as the peer for window evaluation, run in its own venv through a subprocess.

Evidently 0.7.23 needs ``pandas < 3`` and drags in plotly and more, so it never enters driftline's
venv: it lives in ``.venv-bench`` at the repo root, created on first use (unless ``--no-evidently``).
The main benchmark writes the same reference and window rows to parquet, and
``benchmarks/evidently_run.py`` times the report there and prints its timing as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.data import Columns

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".venv-bench"
REQUIREMENTS = ("evidently==0.7.23", "pandas<3", "pyarrow")
"""evidently 0.7.23 fails to import with pandas 3 (``infer_dtype_from_object``), hence the pin."""
RUNNER = Path(__file__).resolve().parent / "evidently_run.py"
TIMEOUT_S = 1_800


def venv_python(venv: Path = BENCH_VENV) -> Path:
    return venv / "bin" / "python"


def has_evidently(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import evidently, pandas, pyarrow"], capture_output=True)
    return probe.returncode == 0


def ensure_venv(venv: Path = BENCH_VENV, log: Callable[[str], None] = print) -> Path:
    """The venv's python, creating the venv and installing :data:`REQUIREMENTS` if needed (one-time)."""
    python = venv_python(venv)
    if has_evidently(python):
        return python
    log(f"creating {venv} with {' '.join(REQUIREMENTS)} (one-time; takes a few minutes)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    if not has_evidently(python):
        raise RuntimeError(f"{venv}: evidently still does not import after installing {REQUIREMENTS}")
    return python


def write_parquet(columns: Columns, path: Path) -> Path:
    pq.write_table(pa.table({name: pa.array(values) for name, values in columns.items()}), path)
    return path


def run_evidently(python: Path, reference: Path, current: Path, categorical: tuple[str, ...],
                  repeats: int) -> dict[str, Any]:
    """Evidently's timing on the two parquet files, or ``{"error": ...}`` if the run failed."""
    command = [str(python), str(RUNNER), "--reference", str(reference), "--current", str(current),
               "--categorical", ",".join(categorical), "--repeats", str(repeats)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2_000:]}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable output: {lines[-1][:500]}"}
    return result
