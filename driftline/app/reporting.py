"""Assessed results as plain, JSON-ready dictionaries and as text tables (the CLI's output contract)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from driftline.engine.assess import Assessment, FeatureAssessment
from driftline.engine.profile import ReferenceProfile


def feature_dict(assessed: FeatureAssessment, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "role": assessed.role}
    out.update({k: _finite(v) for k, v in assessed.stats.as_dict().items()})
    out["ks_pvalue_adjusted"] = _finite(assessed.adjusted_pvalues.get("ks_pvalue"))
    out["chi2_pvalue_adjusted"] = _finite(assessed.adjusted_pvalues.get("chi2_pvalue"))
    out["severity"] = assessed.severity
    out["insufficient_samples"] = assessed.insufficient
    out["breaches"] = [{"metric": b.metric, "value": b.value, "threshold": b.threshold, "severity": b.severity}
                       for b in assessed.breaches]
    return out


def evaluation_dict(profile: ReferenceProfile, assessment: Assessment, rows: int) -> dict[str, Any]:
    dataset = assessment.dataset
    assert dataset is not None
    return {
        "model": profile.model,
        "model_version": profile.model_version,
        "reference_hash": profile.content_hash,
        "rows": rows,
        "features": {name: feature_dict(f, profile.features[name].kind) for name, f in assessment.features.items()},
        "dataset": {
            "severity": dataset.severity,
            "drifted_share": dataset.drifted_share,
            "critical_share": dataset.critical_share,
            "drift_share_threshold": dataset.drift_share,
            "features_assessed": dataset.assessed,
            "drifted_features": list(dataset.drifted),
            "worst_severity": assessment.severity,
        },
    }


COLUMNS = (("feature", "feature"), ("kind", "kind"), ("n", "n"), ("missing", "missing_rate"), ("psi", "psi"),
           ("psi_crit", "psi_critical"), ("ks", "ks_statistic"), ("ks_p", "ks_pvalue"), ("js", "js_distance"),
           ("w1_norm", "wasserstein_normed"), ("chi2_p", "chi2_pvalue"), ("l_inf", "l_infinity"),
           ("unseen", "unseen_share"), ("out_rng", "out_of_range_share"), ("invalid", "invalid_share"),
           ("severity", "severity"))


def evaluation_table(result: Mapping[str, Any]) -> str:
    rows = [[header for header, _ in COLUMNS]]
    for name, f in result["features"].items():
        rows.append([_cell(name if key == "feature" else f.get(key)) for _, key in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    d = result["dataset"]
    lines.append("")
    lines.append(f"dataset: {d['severity']} — {len(d['drifted_features'])} of {d['features_assessed']} features drifted "
                 f"({d['drifted_share']:.0%}, threshold {d['drift_share_threshold']:.0%})"
                 + (f": {', '.join(d['drifted_features'])}" if d["drifted_features"] else ""))
    lines.append(f"model {result['model']} version {result['model_version']}, {result['rows']} rows, "
                 f"reference {result['reference_hash'][:19]}…")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 0.001 and value != 0 else f"{value:.3f}"
    return str(value)


def text_table(names: list[str], rows: list[tuple[Any, ...]]) -> str:
    """A plain aligned table (``driftline query``)."""
    cells = [names] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(names))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
