"""driftline engine benchmarks (issue 2): ingest, window evaluation against Evidently, memory.

Run from the repo root::

    .venv/bin/python -m benchmarks.engine            # or: .venv/bin/python benchmarks/engine.py
    .venv/bin/python -m benchmarks.engine --no-evidently --quick

Prints a table and writes every number (all runs, not only medians) to
``benchmarks/results/engine.json``. Every ratio is against a baseline measured in the same run.
See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow
import scipy

from benchmarks import evaluation, evidently_bench, ingest, memory, panes
from benchmarks.data import CATEGORICAL, DECISION, DRIFTED_COLUMNS, Columns, event_times, generate, scaled
from benchmarks.report import render
from benchmarks.timing import one_core, ratio
from driftline.engine.bins import Counts
from driftline.engine.features import FeatureSet
from driftline.engine.window import WindowSpec

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "engine.json"
START_MS = 1_700_000_003_500
"""Not aligned to a window boundary, so some batches straddle two windows (the multi-pane path)."""
EVENTS_PER_SECOND = 1_000.0
WINDOW_SPEC = WindowSpec(size_ms=100_000)
"""Tumbling 100 s windows: 100,000 events each at 1,000 events/s."""
MILD_DRIFT = 1.02
"""Factor on every continuous feature for the mild-drift window: KS p-values land in their slow range."""
TARGET_INGEST_RATIO = 0.5
TARGET_EVIDENTLY_RATIO = 200.0
TARGET_EVIDENTLY_WINDOW = 100_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="current rows: ingest stream and largest window")
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--windows", default="10000,100000,1000000", help="window sizes to evaluate (rows)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of large cases; small windows get more")
    parser.add_argument("--evidently-windows", default="10000,100000", help="window sizes Evidently runs on")
    parser.add_argument("--evidently-repeats", type=int, default=3)
    parser.add_argument("--no-evidently", action="store_true", help="skip Evidently (and creating .venv-bench)")
    parser.add_argument("--seed", type=int, default=20_261_128)
    parser.add_argument("--cpu", type=int, default=None,
                        help="CPU to pin driftline's measurements to (default: the first allowed; -1: no pin)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 200k rows, 2 repeats, Evidently on 10k rows once")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.evidently_windows, args.evidently_repeats = 200_000, 2, "10000", 1
    return args


def sizes(spec: str, limit: int) -> list[int]:
    return [n for n in (int(s) for s in spec.split(",") if s) if n <= limit]


def default_cpu(requested: int | None) -> int | None:
    if requested == -1 or not hasattr(os, "sched_getaffinity"):
        return None
    return requested if requested is not None else min(os.sched_getaffinity(0))


def metadata(args: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], capture_output=True, text=True, cwd=REPO)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "engine_uncommitted_changes": bool(git("status", "--porcelain", "--", "driftline")),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "pyarrow": pyarrow.__version__, "platform": platform.platform(), "cpu_model": cpu_model,
        "cpus": os.cpu_count(), "pinned_cpu": cpu, "load_average_at_end": list(os.getloadavg()),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.engine", *sys.argv[1:]]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evidently_results(args: argparse.Namespace, reference: Columns, current: Columns) -> dict[int, dict[str, Any]]:
    """Evidently's timing per window size (outside the CPU pin: it may use every core)."""
    if args.no_evidently:
        return {}
    try:
        python = evidently_bench.ensure_venv(log=log)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        return {n: {"error": f"could not set up {evidently_bench.BENCH_VENV}: {exc}"}
                for n in sizes(args.evidently_windows, args.rows)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        ref_path = evidently_bench.write_parquet(reference, Path(tmp) / "reference.parquet")
        for n in sizes(args.evidently_windows, args.rows):
            log(f"Evidently on a {n:,}-row window ({args.evidently_repeats} repeats) ...")
            window = {name: values[:n] for name, values in current.items()}
            cur_path = evidently_bench.write_parquet(window, Path(tmp) / f"current_{n}.parquet")
            results[n] = evidently_bench.run_evidently(python, ref_path, cur_path, (*CATEGORICAL, DECISION),
                                                       args.evidently_repeats)
    return results


def evaluate_windows(args: argparse.Namespace, features: FeatureSet, reference: Counts,
                     current: Columns) -> list[dict[str, Any]]:
    """The drifted windows at each size, then a 100k no-drift and a 100k mild-drift window."""
    windows = []
    for n in sizes(args.windows, args.rows):
        log(f"evaluating a {n:,}-row window ...")
        rows = {name: values[:n] for name, values in current.items()}
        windows.append({"label": f"{n:,} (drifted)", **evaluation.measure_window(
            features, reference, rows, evaluation.window_repeats(n, args.repeats))})
    n = min(args.rows, 100_000)
    undrifted = generate(n, seed=args.seed + 3)
    for label, rows in ((f"{n:,} no drift", undrifted),
                        (f"{n:,} mild drift (continuous ×{MILD_DRIFT})", scaled(undrifted, MILD_DRIFT))):
        log(f"evaluating a {label} window ...")
        windows.append({"label": label, **evaluation.measure_window(
            features, reference, rows, evaluation.window_repeats(n, args.repeats))})
    return windows


def run(args: argparse.Namespace) -> dict[str, Any]:
    cpu = default_cpu(args.cpu)
    started, load_at_start = time.perf_counter(), list(os.getloadavg())
    log(f"generating {args.reference_rows:,} reference and {args.rows:,} drifted current rows (seed {args.seed}) ...")
    reference = generate(args.reference_rows, seed=args.seed)
    current = generate(args.rows, seed=args.seed + 1, drifted=True)
    with one_core(cpu):
        log("profile build ...")
        profile_build = evaluation.measure_profile_build(reference, args.repeats)
        profile, features, reference_vector = evaluation.build_reference(reference)
        log("ingest ...")
        stream = ingest.Stream.cut(event_times(args.rows, START_MS, EVENTS_PER_SECOND), current, args.batch_rows)
        ingest_result = ingest.measure_ingest(features, WINDOW_SPEC, stream, args.repeats)
        windows = evaluate_windows(args, features, reference_vector, current)
        log("memory ...")
        memory_result = memory.measure_memory(profile, seed=args.seed + 2)
        log("windowing overhead vs panes per window ...")
        pane_result = panes.measure_pane_scaling(features, current, args.repeats)
    peers = evidently_results(args, reference, current)
    for window in windows:
        peer = peers.get(window["rows"]) if window["label"].endswith("(drifted)") else None
        if peer is not None:
            window["evidently"] = peer
            if "median_s" in peer:
                window["evidently_ratio"] = ratio(peer["median_s"], window["median_s"])
                window["evidently_ratio_incl_profile"] = ratio(
                    peer["median_s"], window["median_s"] + profile_build["median_s"])
    return {
        "meta": {**metadata(args, cpu), "load_average_at_start": load_at_start,
                 "wall_s": time.perf_counter() - started},
        "data": {"reference_rows": args.reference_rows, "current_rows": args.rows,
                 "monitored_columns": len(features.names), "numeric_columns": ingest_result["numeric_columns"],
                 "categorical_columns": ingest_result["categorical_columns"], "feature_set_size": features.size,
                 "drifted_columns": list(DRIFTED_COLUMNS), "seed": args.seed},
        "profile_build": profile_build,
        "ingest": ingest_result,
        "evaluation": windows,
        "memory": memory_result,
        "panes": pane_result,
        "targets": targets(ingest_result, windows),
    }


def targets(ingest_result: dict[str, Any], windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's two targets; Evidently ratios at other window sizes are reported, not judged."""
    peer = next((w.get("evidently_ratio") for w in windows if w["rows"] == TARGET_EVIDENTLY_WINDOW
                 and "evidently_ratio" in w), None)
    found = [
        {"name": "ingest throughput ÷ numpy baseline", "value": ingest_result["ratio_vs_baseline"],
         "required": TARGET_INGEST_RATIO},
        {"name": f"Evidently time ÷ driftline time, {TARGET_EVIDENTLY_WINDOW:,}-row window", "value": peer,
         "required": TARGET_EVIDENTLY_RATIO},
    ]
    for t in found:
        t["met"] = None if t["value"] is None else t["value"] >= t["required"]
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    partial.replace(args.output)
    text = render(results)
    args.output.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nresults written to {args.output} (table: {args.output.with_suffix('.txt').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
