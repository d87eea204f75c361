"""The ``driftline`` command. Its batch commands are a stable contract that other tools and CI gates call.

Exit codes: 0 nothing critical, 1 something critical, 2 bad input (the message names the problem).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

from driftline import __version__
from driftline.errors import DriftlineError, InvalidInput

EXIT_OK, EXIT_CRITICAL, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.run(args))
    except (DriftlineError, OSError) as exc:  # bad input, or a file that cannot be read or written
        print(f"driftline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description="Drift and training-serving skew monitoring "
                                     "for ML risk models.")
    parser.add_argument("--version", action="version", version=f"driftline {__version__}")
    commands = parser.add_subparsers(title="commands")

    reference = commands.add_parser("reference", help="reference profiles").add_subparsers(title="reference commands")
    build = reference.add_parser("build", help="profile training data into a reference profile (JSON)")
    build.add_argument("--data", required=True, help="training data, .parquet or .csv")
    build.add_argument("--model", required=True)
    build.add_argument("--model-version", required=True)
    build.add_argument("--categorical", default="", help="comma-separated columns to treat as categories")
    build.add_argument("--score-column", default=None)
    build.add_argument("--decision-column", default=None)
    build.add_argument("--positive-decisions", default=None,
                       help="comma-separated decision values meaning approval (default: approve, accept, 1, ...)")
    build.add_argument("--exclude", default="", help="comma-separated columns not to monitor (ids, timestamps)")
    build.add_argument("--bins", type=int, default=10)
    build.add_argument("--grid-points", type=int, default=200)
    build.add_argument("--top-k", type=int, default=50)
    build.add_argument("--valid-range", action="append", default=[], metavar="COLUMN=LOW:HIGH",
                       help="a numeric column's valid values (repeatable; e.g. score=0:1; an empty end is no bound): "
                            "values outside it are counted invalid, never in the distribution")
    build.add_argument("--out", required=True, help="where to write the profile JSON")
    build.set_defaults(run=_reference_build)

    evaluate = commands.add_parser("evaluate", help="compare a data file with a reference profile")
    evaluate.add_argument("--reference", required=True, help="reference profile JSON")
    evaluate.add_argument("--data", required=True, help="current data, .parquet or .csv")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")
    evaluate.add_argument("--min-samples", type=int, default=None,
                          help="non-missing rows a feature needs to be judged (default 500)")
    evaluate.add_argument("--drift-share", type=float, default=None,
                          help="share of drifted features that makes the dataset drifted (default 0.5)")
    evaluate.set_defaults(run=_evaluate)

    replay = commands.add_parser("replay", help="run files of scoring events through the service pipeline")
    replay.add_argument("--config", required=True, help="driftline.yaml")
    replay.add_argument("files", nargs="+", help=".jsonl, .avro (container) or .parquet files of scoring events")
    replay.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    replay.add_argument("--dead-letters", default=None, metavar="FILE",
                        help="where to write every bad input, one JSON object a line (default: "
                             "dead-letters/replay-<time>-<id>.jsonl beside the embedded store, or beside the "
                             "configuration for a ClickHouse server)")
    replay.set_defaults(run=_replay)

    run = commands.add_parser("run", help="the Kafka service: consume, evaluate, persist, alert (SIGTERM stops cleanly)")
    run.add_argument("--config", required=True, help="driftline.yaml with a kafka section")
    run.set_defaults(run=_run)

    query = commands.add_parser("query", help="run SQL against the store and print the result")
    query.add_argument("sql")
    query.add_argument("--config", default=None, help="driftline.yaml (default: the embedded store here)")
    query.add_argument("--json", action="store_true", help="one JSON object per row")
    query.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a value for a {NAME:Type} placeholder in the SQL (repeatable), bound by ClickHouse")
    query.set_defaults(run=_query)

    demo = commands.add_parser("demo", help="three models, a day of traffic, three incidents, end to end")
    demo.add_argument("--workdir", default="driftline-demo", help="where to keep profiles, traffic and the store")
    demo.add_argument("--events-per-hour", type=int, default=3_000, help="per model")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-incidents", action="store_true", help="the same traffic without incidents")
    demo.set_defaults(run=_demo)
    return parser


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _valid_ranges(specs: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``COLUMN=LOW:HIGH`` options → column → (low, high); an empty end is unbounded."""
    ranges = {}
    for spec in specs:
        name, _, bounds = spec.partition("=")
        low, colon, high = bounds.partition(":")
        try:
            if not name or not colon:
                raise ValueError
            ranges[name] = (float(low) if low.strip() else -math.inf, float(high) if high.strip() else math.inf)
        except ValueError:
            raise InvalidInput(f"--valid-range {spec!r}: expected COLUMN=LOW:HIGH, e.g. score=0:1") from None
    return ranges


def _reference_build(args: argparse.Namespace) -> int:
    from driftline.connectors.files import read_columns
    from driftline.connectors.profiles import save_profile
    from driftline.engine.profile import DEFAULT_POSITIVE_DECISIONS, build_profile

    categorical = set(_names(args.categorical))
    if args.decision_column:
        categorical.add(args.decision_column)
    columns = read_columns(args.data, categorical=frozenset(categorical))
    excluded = _names(args.exclude)
    for name in [*categorical, *excluded, args.score_column, args.decision_column]:
        if name is not None and name not in columns:
            raise InvalidInput(f"{args.data}: has no column {name!r} (columns: {', '.join(columns)})")
    monitored = {name: values for name, values in columns.items() if name not in excluded}
    positives = _names(args.positive_decisions) if args.positive_decisions else DEFAULT_POSITIVE_DECISIONS
    profile = build_profile(
        monitored, model=args.model, model_version=args.model_version, categorical=categorical,
        score_column=args.score_column, decision_column=args.decision_column,
        positive_decisions=[p.lower() for p in positives], bins=args.bins, grid_points=args.grid_points,
        top_k=args.top_k, valid_ranges=_valid_ranges(args.valid_range),
    )
    save_profile(profile, args.out)
    kinds = [f.kind for f in profile.features.values()]
    print(f"wrote {args.out}: {profile.model} {profile.model_version}, {profile.rows} rows, "
          f"{kinds.count('numeric')} numeric and {kinds.count('categorical')} categorical columns, "
          f"{profile.content_hash}")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from driftline.engine.assess import AssessmentPolicy

    result = evaluate_file(args.reference, args.data, AssessmentPolicy(
        **{k: v for k, v in (("min_samples", args.min_samples), ("drift_share", args.drift_share)) if v is not None}))
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        from driftline.app.reporting import evaluation_table

        print(evaluation_table(result))
    return EXIT_CRITICAL if result["dataset"]["worst_severity"] == "critical" else EXIT_OK


def evaluate_file(reference: str, data: str, policy: Any = None) -> dict[str, Any]:
    """The ``evaluate`` command as a function: the JSON result of a data file against a profile."""
    from driftline.connectors.files import read_columns
    from driftline.connectors.profiles import load_profile
    from driftline.engine.features import FeatureSet
    from driftline.engine.monitor import evaluate_counts
    from driftline.errors import SchemaMismatch
    from driftline.app.reporting import evaluation_dict

    profile = load_profile(reference)
    categorical = frozenset(n for n, f in profile.features.items() if f.kind == "categorical")
    columns = read_columns(data, categorical=categorical)
    absent = [name for name in profile.features if name not in columns]
    if absent:
        raise SchemaMismatch(", ".join(absent), f"columns monitored by reference {profile.model} "
                             f"{profile.model_version}", f"a file without them ({data})")
    for name, feature in profile.features.items():
        if feature.kind == "numeric" and columns[name].dtype.kind != "f":
            raise SchemaMismatch(name, "numbers (numeric in the reference)", f"text values in {data}")
    rows = len(next(iter(columns.values())))
    features = FeatureSet(profile)
    _, assessment = evaluate_counts(features, features.count(columns, rows), policy)
    return evaluation_dict(profile, assessment, rows)


def _demo(args: argparse.Namespace) -> int:
    from driftline.app.demo import run_demo
    from driftline.app.runtime import settle_process

    settle_process()
    run_demo(args.workdir, args.events_per_hour, args.seed, incidents=not args.no_incidents)
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    """Exit 2 before anything is written for a configuration or an input file that cannot be used (missing,
    empty, not of its type); else 1 if an alert fired or escalated at critical severity, else 0."""
    from pathlib import Path

    from driftline.config import load_config
    from driftline.connectors.dead_letters import dead_letter_path
    from driftline.app.replay import replay
    from driftline.app.runtime import settle_process

    config = load_config(args.config)
    settle_process()
    letters = args.dead_letters or dead_letter_path(config, Path(args.config).resolve().parent)
    outcome = replay(config, args.files, on_step=None if args.json else _progress, dead_letters=letters)
    t = outcome.totals
    code = EXIT_CRITICAL if outcome.critical else EXIT_OK
    dead = str(outcome.dead_letters) if outcome.dead_letters is not None else None
    summary = {"events": t.events, "accepted": t.accepted, "windows": t.windows, "late_events": t.late,
               "alerts": t.alerts, "rollback_requests": t.rollbacks, "bad": dict(t.bad),
               "unmatched_requests": t.unmatched_requests, "unmatched_responses": t.unmatched_responses,
               "duplicates": t.duplicates, "version_changes": t.version_changes, "critical": outcome.critical,
               "dead_letters": {"path": dead, "count": outcome.dead_letter_count},
               "bad_examples": [{"origin": b.origin, "stage": b.stage, "error": b.error_class, "reason": b.reason}
                                for b in outcome.bad[:100]]}
    if args.json:
        print(json.dumps(summary))
        return code
    print(f"{t.events:,} events: {t.accepted:,} in windows, {t.windows} windows closed, {t.alerts} alert events, "
          f"{t.rollbacks} rollback requests, {sum(t.bad.values())} not usable, {t.late} late")
    for bad in outcome.bad[:20]:
        print(f"  {bad.describe()}", file=sys.stderr)
    if sum(t.bad.values()) > 20:
        print(f"  … and {sum(t.bad.values()) - 20} more", file=sys.stderr)
    if dead is not None:
        print(f"all {outcome.dead_letter_count:,} inputs not usable, with their line and reason: {dead}")
    if outcome.critical:
        print("critical: an alert fired at critical severity (exit 1); driftline query lists them "
              "(SELECT * FROM driftline.alerts FINAL)")
    return code


def _run(args: argparse.Namespace) -> int:
    from driftline.config import load_config
    from driftline.app.run import describe, run_service

    config = load_config(args.config)
    if not config.kafka.topics:
        raise InvalidInput(f"{args.config}: kafka.topics is empty; name at least one topic to consume")
    run_service(config, on_batch=lambda report: print(json.dumps(describe(report)), file=sys.stderr))
    return EXIT_OK


def _progress(path: Any, step: Any, totals: Any) -> None:
    print(f"{path}: {totals.events:,} events, {totals.windows} windows, {totals.alerts} alerts", file=sys.stderr)


def _query(args: argparse.Namespace) -> int:
    from driftline.config import load_config
    from driftline.app.replay import open_store
    from driftline.app.reporting import text_table

    parameters = query_parameters(args.sql, args.param)
    store = open_store(load_config(args.config, require_models=False))  # the store is all it reads
    names, rows = store.query(args.sql, parameters or None, text_ids=True)
    if args.json:
        for row in rows:
            print(json.dumps(dict(zip(names, row, strict=True)), default=str))
    else:
        print(text_table(names, rows))
    return EXIT_OK


_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:[^{}]+\}")


def query_parameters(sql: str, pairs: Sequence[str]) -> dict[str, str]:
    """``--param name=value`` pairs for the SQL's ``{name:Type}`` placeholders; every placeholder needs one,
    and every pair a placeholder."""
    parameters: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise InvalidInput(f"--param {pair!r}: expected NAME=VALUE, e.g. --param alert_id=3f9c…")
        parameters[name.strip()] = value
    wanted = dict.fromkeys(_PLACEHOLDER.findall(sql))
    missing = [n for n in wanted if n not in parameters]
    if missing:
        raise InvalidInput(f"the query has placeholders without a value: {', '.join(missing)}; give each with "
                           f"--param {missing[0]}=VALUE")
    unused = [n for n in parameters if n not in wanted]
    if unused:
        raise InvalidInput(f"--param {', '.join(unused)}: the query has no {{{unused[0]}:Type}} placeholder")
    return parameters


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
