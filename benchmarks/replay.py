"""Replay throughput end to end on the embedded store (issue 3): JSON lines → windows in chDB.

The demo's traffic (3 models, 24 hours; the fraud model's requests and responses as separate events)
is replayed through decode → join → engine → decide → persist into a fresh chDB store, and compared
with the rate at which the same files can merely be parsed (``json.loads`` per line, nothing kept),
measured in the same run: the floor any Python JSON pipeline pays.

    python -m benchmarks.replay [--events-per-hour 6000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from driftline.app.demo import prepare
from driftline.app.replay import replay
from driftline.app.runtime import settle_process
from driftline.config import load_config


def parse_only(files: list[Path]) -> int:
    lines = 0
    for path in files:
        with path.open("rb") as handle:
            for line in handle:
                try:
                    json.loads(line)
                except ValueError:
                    pass
                lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-hour", type=int, default=6_000, help="per model")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path, files = prepare(Path(tmp) / "bench", args.events_per_hour)
        lines = sum(1 for path in files for _ in path.open("rb"))
        settle_process()  # as `driftline replay` does
        parse, full = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            parse_only(files)
            parse.append(time.perf_counter() - started)
            config = load_config(config_path, environ={"DRIFTLINE__STORE__DSN": f"chdb:store-{repeat}"})
            started = time.perf_counter()
            outcome = replay(config, files)
            full.append(time.perf_counter() - started)
        t = outcome.totals
        parse_s, full_s = statistics.median(parse), statistics.median(full)
        print(f"replay benchmark: {lines:,} lines ({t.events:,} events incl. bad, {t.accepted:,} in windows), "
              f"{t.windows} windows, {t.alerts} alert events; median of {args.repeats}")
        print(f"  json.loads only (same files)    {parse_s:7.2f} s  {lines / parse_s:>10,.0f} lines/s")
        print(f"  driftline replay, end to end    {full_s:7.2f} s  {lines / full_s:>10,.0f} lines/s  "
              f"{t.accepted / full_s:>10,.0f} events in windows/s")
        print(f"  ratio replay ÷ parse-only       {parse_s / full_s:7.2f}")


if __name__ == "__main__":
    main()
