"""Time Evidently's ``Report([DataDriftPreset()])`` on parquet files; prints one JSON object on stdout.

Runs inside the separate ``.venv-bench`` (evidently 0.7.23, pandas < 3), never in driftline's venv,
and imports nothing from driftline. Uses Evidently's new API: ``Dataset.from_pandas`` with an
explicit ``DataDefinition``, ``evidently.Report``, ``evidently.presets.DataDriftPreset`` at its
defaults (``include_tests=False``). The timed region is Dataset construction for the reference and
the current data plus ``Report.run``; reading the parquet files and importing Evidently are not timed.

    .venv-bench/bin/python benchmarks/evidently_run.py --reference ref.parquet --current cur.parquet \\
        --categorical country,channel --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from typing import Any


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="parquet file of the reference rows")
    parser.add_argument("--current", required=True, help="parquet file of the current window's rows")
    parser.add_argument("--categorical", required=True, help="comma-separated categorical columns")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def drifted_columns(snapshot: Any) -> list[str]:
    """Columns whose ``ValueDrift`` metric crossed its threshold (p-value methods: below it)."""
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            method, value, threshold = str(config.get("method", "")), metric["value"], config["threshold"]
            crossed = value < threshold if "p_value" in method.lower() else value >= threshold
            if crossed:
                drifted.append(str(config["column"]))
    return drifted


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    import evidently  # type: ignore[import-not-found, import-untyped, unused-ignore]
    import pandas as pd  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from evidently import DataDefinition, Dataset, Report  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from evidently.presets import DataDriftPreset  # type: ignore[import-not-found, import-untyped, unused-ignore]

    reference = pd.read_parquet(args.reference)
    current = pd.read_parquet(args.current)
    categorical = [c for c in args.categorical.split(",") if c]
    numerical = [c for c in reference.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)

    runs: list[float] = []
    snapshot = None
    for _ in range(args.repeats):
        gc.collect()
        start = time.perf_counter()
        reference_data = Dataset.from_pandas(reference, data_definition=definition)
        current_data = Dataset.from_pandas(current, data_definition=definition)
        snapshot = Report([DataDriftPreset()]).run(current_data, reference_data)
        runs.append(time.perf_counter() - start)
    result = {
        "evidently": evidently.__version__,
        "pandas": pd.__version__,
        "reference_rows": len(reference),
        "current_rows": len(current),
        "numerical_columns": len(numerical),
        "categorical_columns": len(categorical),
        "runs_s": runs,
        "median_s": statistics.median(runs),
        "drifted": drifted_columns(snapshot) if snapshot is not None else [],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
