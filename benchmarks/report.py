"""Plain-text rendering of the benchmark results (the JSON holds every number; this is for reading).

>>> print(table(["case", "s"], [["a", "1"], ["bb", "22"]]))
case   s
a      1
bb    22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def rate(value: float | None) -> str:
    if value is None:
        return "—"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def size(value: float) -> str:
    for scale, unit in ((2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}×" if value < 100 else f"{value:,.0f}×"


def spread(case: dict[str, Any]) -> str:
    return f"{seconds(case['min_s'])} – {seconds(case['max_s'])} ({len(case['runs_s'])} runs)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to width; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    meta, data, ingest, memory = results["meta"], results["data"], results["ingest"], results["memory"]
    out = [
        f"driftline engine benchmarks — {meta['timestamp']}, commit {meta['git_commit'][:12]}, "
        f"CPU pinned to {meta['pinned_cpu']}, Python {meta['python']}, numpy {meta['numpy']}, "
        f"load average {meta['load_average_at_start'][0]:.2f} at start, {meta['load_average_at_end'][0]:.2f} at end",
        f"data: reference {data['reference_rows']:,} rows, current {data['current_rows']:,} rows (drifted), "
        f"{data['monitored_columns']} monitored columns ({data['numeric_columns']} numeric incl. score, "
        f"{data['categorical_columns']} categorical incl. decision), plan {data['feature_set_size']:,} cells",
        "",
        f"1. Ingest, one core: {ingest['batches']} batches × {ingest['batch_rows']:,} rows, tumbling "
        f"{ingest['window']['size_ms'] // 1000} s windows ({ingest['window']['closed_windows']} closed); "
        f"histograms identical to the baseline: {'yes' if ingest['histograms_identical'] else 'NO'}",
        table(["case", "median", "range", "rows/s", "row×col/s", "ns/value"], [
            [label, seconds(c["median_s"]), spread(c), rate(c["rows_per_s"]), rate(c["values_per_s"]),
             f"{c['ns_per_value']:.1f}"]
            for label, c in (("driftline WindowState.update", ingest["driftline"]),
                             ("numpy baseline (searchsorted + bincount)", ingest["baseline"]))]),
        f"ratio driftline ÷ baseline (throughput): {times(ingest['ratio_vs_baseline'])}",
        "",
        "   per stage, whole stream (ns per value = per row × column of the stage)",
        table(["   stage", "columns", "median", "ns/value"], [
            [f"   {name}", str(s["columns"]), seconds(s["median_s"]), f"{s['ns_per_value']:.1f}"]
            for name, s in ingest["stages"].items()]),
        "",
        f"2. Window evaluation vs a {results['profile_build']['rows']:,}-row reference: count + compare + assess "
        f"(profile build, once per model version: {seconds(results['profile_build']['median_s'])})",
        table(["window", "driftline", "range", "count", "compare", "assess", "rows/s", "Evidently", "Evidently ÷ driftline",
               "incl. profile build"], [_evaluation_row(w) for w in results["evaluation"]]),
        *[_flagged(w) for w in results["evaluation"]],
        "",
        f"3. Memory: one count vector = 8 × {memory['feature_set_size']:,} = {size(memory['vector_bytes'])}; "
        f"measured per open pane {size(memory['per_pane_bytes_measured'])} "
        f"(overhead {memory['per_pane_overhead_bytes']:.0f} B); model fixed {size(memory['model_fixed_bytes'])}",
        table(["open panes (1-min hop)", "model bytes (tracemalloc)"],
              [[n, size(b)] for n, b in memory["model_bytes_by_open_panes"].items()]),
        f"reference profile JSON: {size(memory['profile_json_bytes'])} as written (indent=1), "
        f"{size(memory['profile_json_compact_bytes'])} compact, {size(memory['profile_json_gzip_bytes'])} gzip",
        "",
        f"4. Windowing overhead: one update of {results['panes']['batch_rows']:,} rows with a full window of panes open",
        table(["window", "open panes", "update, no close", "update closing 1 window", "rows/s cap at this batch"], [
            [label, str(c["open_panes"]), seconds(c["update_within_pane"]["median_s"]),
             seconds(c["update_closing_one_window"]["median_s"]), rate(c["max_rows_per_s_at_this_batch"])]
            for label, c in results["panes"]["cases"].items()]),
        "",
        "Targets",
        table(["target", "measured", "required", "met"], [
            [t["name"], times(t["value"]), f"≥ {t['required']:g}×", "—" if t["met"] is None else "yes" if t["met"] else "NO"]
            for t in results["targets"]]),
    ]
    return "\n".join(out)


def _flagged(window: dict[str, Any]) -> str:
    flagged = ", ".join(f"{name} ({f['severity']})" for name, f in window["flagged"].items())
    line = f"   {window['label']}: flagged by driftline: {flagged or 'none'}"
    evidently = window.get("evidently") or {}
    if "drifted" in evidently:
        line += f"; by Evidently: {', '.join(evidently['drifted']) or 'none'}"
    return line


def _evaluation_row(window: dict[str, Any]) -> list[str]:
    stages = window["stages"]
    evidently = window.get("evidently") or {}
    peer = seconds(evidently["median_s"]) if "median_s" in evidently else evidently.get("error", "not run")[:20]
    return [window["label"], seconds(window["median_s"]), spread(window), seconds(stages["count"]["median_s"]),
            seconds(stages["compare"]["median_s"]), seconds(stages["assess"]["median_s"]), rate(window["rows_per_s"]),
            peer, times(window.get("evidently_ratio")), times(window.get("evidently_ratio_incl_profile"))]
