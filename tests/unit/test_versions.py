"""Version switches: the detector (engine/versions.py), counts carried between two versions' plans
(engine/rebin.py), alerts against the previous version (engine/policy.py), and the pipeline wiring
(driftline/version_tracking.py): a silent switch from one version to another is recorded once, its first
windows are judged against the version it replaced, and a restart from a snapshot gives the same records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.app.synthetic import CREDIT_CATEGORICAL, Incident, credit_applications
from driftline.config import Config
from driftline.engine.assess import assess
from driftline.engine.features import FeatureSet
from driftline.engine.policy import PREVIOUS_VERSION, AlertPolicy, Decider, WindowRef
from driftline.engine.profile import build_profile
from driftline.engine.rebin import numeric_onto, onto
from driftline.engine.stats import ks_on_grid
from driftline.engine.versions import VersionChange, VersionWatch
from driftline.engine.window_spec import ClosedWindow, window_id
from driftline.errors import InvalidInput
from driftline.events import EventBuilder, Events, Source
from driftline.outcome import StepResult
from driftline.pipeline import Pipeline
from driftline.registry import KnownProfiles, ModelRegistry

HOUR = 3_600_000
DAY = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the pipeline's events (events.py refuses times before 2000)


def window(version: str, hour: int, model: str = "m", hours: int = 1) -> ClosedWindow:
    start = hour * HOUR
    return ClosedWindow(model, version, start, start + hours * HOUR, window_id(model, version, start, start + hours * HOUR),
                        np.array([10]), f"hash-{version}")


def run(watch: VersionWatch, timeline: list[tuple[int, str]]) -> list[tuple[str, str, str, int]]:
    """Each hour's events (every (hour, version) has events spanning the hour), as a live stream brings them:
    an hour's events are seen, then the windows of the hour before close. (kind, from, to, window hour) of
    each change."""
    out = []
    hours = sorted({h for h, _ in timeline})
    for hour in [*hours, hours[-1] + 1]:
        for version in sorted(v for h, v in timeline if h == hour):
            watch.seen(version, [hour * HOUR, hour * HOUR + HOUR - 1])
        for version in sorted(v for h, v in timeline if h == hour - 1):
            for c in watch.observe(window(version, hour - 1)).changes:
                out.append((c.kind, c.from_version, c.to_version, c.window_start_ms // HOUR))
    return out


def test_a_version_that_takes_over_appears_and_the_old_one_disappears_after_n_windows() -> None:
    timeline = [(0, "1"), (1, "1"), (2, "2"), (3, "2"), (4, "2"), (5, "2")]
    assert run(VersionWatch("m", HOUR, gone_after=2), timeline) == [
        ("appeared", "1", "2", 2), ("disappeared", "1", "2", 3)]
    assert run(VersionWatch("m", HOUR, gone_after=3), timeline) == [
        ("appeared", "1", "2", 2), ("disappeared", "1", "2", 4)]


def test_versions_running_side_by_side_from_the_start_are_no_switch() -> None:
    timeline = [(h, v) for h in range(4) for v in ("1", "2")]
    assert run(VersionWatch("m", HOUR), timeline) == []
    # a canary joining later is one: it appears once, and nobody disappears while both carry traffic
    timeline = [(h, "1") for h in range(6)] + [(h, "2") for h in range(3, 6)]
    timeline.sort()
    assert run(VersionWatch("m", HOUR), timeline) == [("appeared", "1", "2", 3)]


def test_sparse_traffic_within_n_windows_is_not_a_disappearance() -> None:
    timeline = sorted([(h, "1") for h in range(12)] + [(h, "2") for h in (0, 2, 4, 6, 8)])
    assert run(VersionWatch("m", HOUR, gone_after=2), timeline) == [("disappeared", "2", "1", 10)]


def test_flapping_versions_give_each_transition_once() -> None:
    timeline = [(0, "1"), (1, "1"), (2, "2"), (3, "2"), (4, "2"), (5, "1"), (6, "1"), (7, "1"), (8, "2")]
    assert run(VersionWatch("m", HOUR, gone_after=2), timeline) == [
        ("appeared", "1", "2", 2), ("disappeared", "1", "2", 3),
        ("appeared", "2", "1", 5), ("disappeared", "2", "1", 6),
        ("appeared", "1", "2", 8)]


def test_the_open_window_of_a_version_counts_as_traffic() -> None:
    """The old version's last window may still be open (no later event moves its watermark): its newest
    event, not its newest closed window, is what the gap counts from; the window closing later (end of
    input) does not bring the version back."""
    watch = VersionWatch("m", HOUR, gone_after=2)
    watch.seen("1", [0, 2 * HOUR + HOUR // 2])  # events up to 02:30, window [2, 3) still open
    assert watch.observe(window("1", 0)).changes == [] and watch.observe(window("1", 1)).changes == []
    changes = [(c.kind, c.window_start_ms // HOUR) for h in range(3, 7)
               for c in (watch.seen("2", [h * HOUR, h * HOUR + 1]) or watch.observe(window("2", h))).changes]
    assert changes == [("appeared", 3), ("disappeared", 4)]  # windows [3, 4) and [4, 5) without version 1
    assert watch.observe(window("1", 2)).changes == []  # its last window, flushed at the end: not a return


def test_hopping_windows_count_the_gap_from_the_last_window_holding_the_newest_event() -> None:
    """4 h windows every hour: version 1's newest event (03:59) is in windows up to [3, 7); two windows of
    the model ending after 07:00 ([4, 8), [5, 9)) are the two without it."""
    watch = VersionWatch("m", HOUR, gone_after=2)
    watch.seen("1", [0, 4 * HOUR - 1])
    watch.seen("2", [4 * HOUR, 12 * HOUR])
    got = [(c.kind, c.window_start_ms // HOUR) for start in range(1, 9)
           for c in watch.observe(window("2", start, hours=4)).changes]
    assert got == [("appeared", 1), ("disappeared", 5)]


def test_change_ids_are_deterministic_and_name_the_window() -> None:
    timeline = [(0, "1"), (1, "1"), (2, "2"), (3, "2"), (4, "2")]
    first, second = VersionWatch("m", HOUR), VersionWatch("m", HOUR)
    a = [c for h, v in timeline for c in (first.seen(v, [h * HOUR, h * HOUR + 1]) or first.observe(window(v, h))).changes]
    b = [c for h, v in timeline for c in (second.seen(v, [h * HOUR, h * HOUR + 1]) or second.observe(window(v, h))).changes]
    assert a == b and len({c.change_id for c in a}) == 2
    appeared = a[0]
    assert appeared == VersionChange(appeared.change_id, "appeared", "m", "1", "2", window("2", 2).window_id,
                                     2 * HOUR, 3 * HOUR, "hash-2", HOUR + 1)


@pytest.mark.parametrize("cut", range(1, 9))
def test_a_watch_restored_from_its_snapshot_goes_on_the_same(cut: int) -> None:
    timeline = [(0, "1"), (1, "1"), (2, "2"), (3, "2"), (4, "2"), (5, "1"), (6, "1"), (7, "1"), (8, "2")]
    whole = VersionWatch("m", HOUR, compare_windows=2)
    expected = [(c, o.compare_with, o.ended) for h, v in timeline
                for o in [whole.seen(v, [h * HOUR, h * HOUR + 1]) or whole.observe(window(v, h))] for c in [o.changes]]
    before = VersionWatch("m", HOUR, compare_windows=2)
    got = [(c, o.compare_with, o.ended) for h, v in timeline[:cut]
           for o in [before.seen(v, [h * HOUR, h * HOUR + 1]) or before.observe(window(v, h))] for c in [o.changes]]
    after = VersionWatch("m", HOUR, compare_windows=2)
    after.restore(json.loads(json.dumps(before.snapshot())))
    got += [(c, o.compare_with, o.ended) for h, v in timeline[cut:]
            for o in [after.seen(v, [h * HOUR, h * HOUR + 1]) or after.observe(window(v, h))] for c in [o.changes]]
    assert got == expected


def test_the_first_k_windows_of_a_new_version_are_compared_then_the_period_ends() -> None:
    watch = VersionWatch("m", HOUR, compare_windows=2)
    seen = []
    for h, v in [(0, "1"), (1, "1"), (2, "2"), (3, "2"), (4, "2"), (5, "2")]:
        watch.seen(v, [h * HOUR, h * HOUR + 1])
        o = watch.observe(window(v, h))
        seen.append((o.compare_with, o.ended))
    assert seen == [(None, []), (None, []), ("1", []), ("1", []), (None, ["2"]), (None, [])]
    assert VersionWatch("m", HOUR, compare_windows=0).observe(window("1", 0)).compare_with is None


def test_bad_watch_settings_name_the_setting() -> None:
    with pytest.raises(InvalidInput, match="version_gone_after"):
        VersionWatch("m", HOUR, gone_after=0)
    with pytest.raises(InvalidInput, match="version_baseline_windows"):
        VersionWatch("m", HOUR, compare_windows=-1)
    with pytest.raises(InvalidInput, match="of model m was handed a window of other"):
        VersionWatch("m", HOUR).observe(window("1", 0, model="other"))


# -- counts carried between two versions' plans --------------------------------------------------------------


def _plans(seed: int = 11) -> tuple[FeatureSet, FeatureSet, FeatureSet]:
    rng = np.random.default_rng(seed)
    old = build_profile(credit_applications(rng, 20_000), model="credit", model_version="3",
                        categorical=CREDIT_CATEGORICAL, score_column="score", decision_column="decision")
    same = build_profile(old_data := credit_applications(np.random.default_rng(seed), 20_000), model="credit",
                         model_version="3b", categorical=CREDIT_CATEGORICAL, score_column="score",
                         decision_column="decision")
    del old_data
    new = build_profile(credit_applications(rng, 20_000), model="credit", model_version="4",
                        categorical=CREDIT_CATEGORICAL, score_column="score", decision_column="decision")
    return FeatureSet(old), FeatureSet(same), FeatureSet(new)


def test_counts_onto_the_same_cells_are_copied_exactly() -> None:
    old, same, _ = _plans()
    counts = old.count(credit_applications(np.random.default_rng(1), 3_000), rows=3_000)
    carried = onto(old, same, counts)
    assert carried.rebinned == () and carried.incomparable == ()
    assert np.array_equal(carried.counts, counts)


def test_counts_onto_other_cells_keep_totals_and_agree_with_counting_there() -> None:
    old, _, new = _plans()
    data = credit_applications(np.random.default_rng(2), 5_000)
    counts = old.count(data, rows=5_000)
    carried = onto(old, new, counts)
    direct = new.count(data, rows=5_000)
    assert "score" in carried.rebinned and carried.incomparable == ()
    for name, feature in new.profile.features.items():
        c, d = new.counts(carried.counts, name), new.counts(direct, name)
        assert c.sum() == d.sum() and c[-1] == d[-1], name  # every value kept, missing exactly
        if feature.kind == "numeric" and feature.layout is not None:
            ks, _, _ = ks_on_grid(c[:-1], d[:-1], int(c[:-1].sum()), int(d[:-1].sum()))
            assert ks < 0.02, (name, ks)  # within about one source cell
        else:
            assert np.array_equal(c, d), name  # categories mapped by label: the same labels here
    # a comparison of the same values through the two plans finds no drift
    stats = new.compare(carried.counts, direct)
    assert assess(stats, {n: f.role for n, f in new.profile.features.items()}).severity == "ok"


def test_columns_without_a_counterpart_are_not_comparable() -> None:
    rng = np.random.default_rng(3)
    a = FeatureSet(build_profile({"x": rng.normal(0, 1, 2_000), "y": rng.normal(0, 1, 2_000)}, model="m",
                                 model_version="1"))
    b = FeatureSet(build_profile({"x": rng.normal(0, 1, 2_000), "z": rng.choice(["p", "q"], 2_000)}, model="m",
                                 model_version="2"))
    carried = onto(a, b, a.count({"x": rng.normal(0, 1, 100)}, rows=100))
    assert carried.incomparable == ("z",) and carried.rebinned == ("x",)


def test_numeric_mass_is_split_by_width_inside_a_cell() -> None:
    from driftline.engine.bins import NumericLayout

    source = NumericLayout.from_edges(np.array([0.0, 10.0]), np.array([]), 1.0)
    target = NumericLayout.from_edges(np.array([0.0, 5.0, 10.0]), np.array([]), 1.0)
    cells = np.zeros(source.n_cells, dtype=np.int64)
    cells[source.grid_cells.start + 1] = 100  # 100 values in (0, 10]
    cells[-1] = 7
    out = numeric_onto(source, target, cells)
    assert out[target.grid_cells.start + 1] == 50 and out[target.grid_cells.start + 2] == 50 and out[-1] == 7


# -- alerts against the previous version -----------------------------------------------------------------


def _assessment(severity: str) -> Any:
    rng = np.random.default_rng(0)
    features = FeatureSet(build_profile({"score": rng.beta(2, 5, 5_000)}, model="m", model_version="2",
                                        score_column="score"))
    shift = 0.0 if severity == "ok" else 0.4
    counts = features.count({"score": np.clip(rng.beta(2, 5, 2_000) + shift, 0, 1)}, rows=2_000)
    return assess(features.compare(features.reference(), counts), {"score": "score"})


def ref(hour: int) -> WindowRef:
    return WindowRef("m", "2", f"w{hour}", hour * HOUR, (hour + 1) * HOUR, "h")


def test_previous_version_alerts_keep_their_own_streak_ask_no_rollback_and_resolve_at_the_period_end() -> None:
    decider = Decider(AlertPolicy(consecutive=2))
    bad = _assessment("critical")
    assert bad.features["score"].severity == "critical"
    one = AlertPolicy(consecutive=1)
    alerts, rollbacks = decider.step(ref(0), bad, PREVIOUS_VERSION, one)
    assert [(a.kind, a.subject, a.baseline) for a in alerts] == [("firing", "score", PREVIOUS_VERSION)]
    assert rollbacks == []  # a critical score against the reference would ask for one; against the old version not
    reference_alerts, _ = decider.step(ref(0), bad)
    assert reference_alerts == []  # the reference streak is its own: one window of two
    assert alerts[0].alert_id != Decider(AlertPolicy(consecutive=1)).step(ref(0), bad)[0][0].alert_id
    state = json.loads(json.dumps(decider.state.to_dict()))
    decider.state = type(decider.state).from_dict(state)
    resolved = decider.end_baseline(ref(1), PREVIOUS_VERSION)
    assert [(a.kind, a.subject, a.role, a.baseline, a.window.window_id) for a in resolved] == [
        ("resolved", "score", "score", PREVIOUS_VERSION, "w1")]
    assert not any(k.endswith(PREVIOUS_VERSION) for k in decider.state.subjects)
    assert decider.end_baseline(ref(2), PREVIOUS_VERSION) == []


# -- the pipeline: a silent switch ---------------------------------------------------------------------------


SHIFT = Incident(score_shift=1.2)


@pytest.fixture(scope="module")
def two_versions() -> dict[tuple[str, str], Any]:
    rng = np.random.default_rng(20260101)
    out = {}
    for version, trained in (("3", Incident()), ("4", SHIFT)):  # version 4 was trained to score higher
        out[("credit", version)] = build_profile(credit_applications(rng, 20_000, trained), model="credit",
                                                 model_version=version, categorical=CREDIT_CATEGORICAL,
                                                 score_column="score", decision_column="decision")
    return out


def wid(version: str, hour: int) -> str:
    return window_id("credit", version, DAY + hour * HOUR, DAY + (hour + 1) * HOUR)


def config(**model: Any) -> Config:
    return Config.model_validate({
        "windows": {"size": "1h", "allowed_lateness": 0},
        "models": [{"name": "credit", "references": {"3": "/nonexistent/3.json", "4": "/nonexistent/4.json"},
                    "policy": {"min_samples": 200}, **model}],
    })


def pipeline_of(config: Config, profiles: dict[tuple[str, str], Any]) -> Pipeline:
    return Pipeline(config, ModelRegistry(config, KnownProfiles(profiles)))


def hour_events(hour: int, version: str, n: int = 800, incident: Incident = Incident()) -> Events:
    rng = np.random.default_rng([hour, int(version)])
    data = credit_applications(rng, n, incident)
    times = np.sort(DAY + hour * HOUR + rng.integers(0, HOUR, n))
    builder = EventBuilder(Source("test", "line"))
    assert not builder.bad
    names = [k for k in data if k not in ("score", "decision")]
    for i in range(n):
        features = {k: (None if isinstance(v := data[k][i], float) and v != v else v) for k in names}
        builder.add({"request_id": f"{version}-{hour}-{i}", "model": "credit", "model_version": version,
                     "event_time": int(times[i]), "features": features, "score": float(data["score"][i]),
                     "decision": str(data["decision"][i])}, i)
    return builder.build()


SWITCH = [(0, "3", Incident()), (1, "3", Incident()), (2, "3", Incident()), (3, "4", SHIFT), (4, "4", SHIFT),
          (5, "4", SHIFT), (6, "4", SHIFT)]
"""Three hours of version 3, then version 4 takes over and scores higher (a silent switch: each version
matches its own training data, so only the comparison of the two shows it)."""


def replay_switch(pipeline: Pipeline, hours: list[tuple[int, str, Incident]]) -> list[StepResult]:
    return [pipeline.process(hour_events(h, v, incident=i)) for h, v, i in hours]


def summary(steps: list[StepResult]) -> dict[str, Any]:
    return {
        "changes": [c for s in steps for c in s.version_changes],
        "bad": [b for s in steps for b in s.bad],
        "alerts": [(a.alert_id, a.kind, a.subject, a.baseline, a.window.window_id) for s in steps for a in s.alerts],
        "rollbacks": [r.request_id for s in steps for r in s.rollbacks],
        "versus": [(r.window.window_id, r.versus.version, r.versus.window.window_id, r.versus.assessment.severity)
                   for s in steps for r in s.reports if r.versus is not None],
    }


def test_a_silent_switch_is_recorded_and_judged_against_the_replaced_version(two_versions: Any) -> None:
    pipeline = pipeline_of(config(), two_versions)
    steps = replay_switch(pipeline, SWITCH)
    steps.append(pipeline.finish())
    got = summary(steps)
    assert got["bad"] == []
    changes = got["changes"]
    assert [(c.kind, c.from_version, c.to_version, (c.window_start_ms - DAY) // HOUR) for c in changes] == [
        ("appeared", "3", "4", 3), ("disappeared", "3", "4", 4)]
    assert pipeline.totals.version_changes == 2
    # version 4's first two windows (policy.consecutive) against version 3's last closed window
    v3_last = wid("3", 1)  # (its window of hour 2 stays open: no later event of version 3 closes it)
    assert [(w, v, b) for w, v, b, _ in got["versus"]] == [
        (wid("4", 3), "3", v3_last),
        (wid("4", 4), "3", v3_last)]
    assert all(severity == "critical" for *_, severity in got["versus"])
    previous = [(kind, subject, w) for _, kind, subject, baseline, w in got["alerts"] if baseline == PREVIOUS_VERSION]
    fired = {subject for kind, subject, _ in previous if kind == "firing"}
    assert "score" in fired and "decision" in fired
    assert {w for kind, _, w in previous if kind == "firing"} == {wid("4", 4)}
    # the period ends with version 4's third window: what fired against version 3 resolves there
    assert {s for kind, s, w in previous if kind == "resolved" and w == wid("4", 5)} \
        == fired
    # against its own reference version 4 is fine; the comparison alerts but asks for no rollback
    assert [a for a in got["alerts"] if a[3] != PREVIOUS_VERSION and a[2] in ("score", "decision")] == []
    assert got["rollbacks"] == []


def test_a_restart_from_a_snapshot_gives_the_same_records(two_versions: Any) -> None:
    whole = pipeline_of(config(), two_versions)
    expected = summary(replay_switch(whole, SWITCH) + [whole.finish()])
    for cut in (3, 4, 5):
        first = pipeline_of(config(), two_versions)
        before = replay_switch(first, SWITCH[:cut])
        state = json.loads(json.dumps(first.snapshot(), allow_nan=False))  # as a checkpoint stores it
        second = pipeline_of(config(), two_versions)
        second.restore(state)
        after = replay_switch(second, SWITCH[cut:]) + [second.finish()]
        assert summary(before + after) == expected, cut


@pytest.mark.parametrize("group", [2, 3, 9])
def test_the_records_do_not_depend_on_how_the_stream_is_cut_into_batches(two_versions: Any, group: int) -> None:
    """Version 3 is replaced, returns for an hour and goes again: hour by hour, or hours read together in
    one batch (a backlog, a restart that cuts elsewhere), the same records with the same last-seen times.
    Each window is judged on the events before its end, never on later ones of the same batch."""
    timeline = [*SWITCH[:5], (5, "3", Incident()), (6, "4", SHIFT), (7, "4", SHIFT), (8, "4", SHIFT)]
    hourly = pipeline_of(config(version_gone_after=1), two_versions)
    expected = summary(replay_switch(hourly, timeline) + [hourly.finish()])
    # (each version's windows close with its own events: version 3's hour 5 closes at the end of input)
    assert [(c.kind, c.from_version, c.to_version, (c.window_start_ms - DAY) // HOUR) for c in expected["changes"]] == [
        ("appeared", "3", "4", 3), ("disappeared", "3", "4", 3), ("appeared", "4", "3", 5),
        ("disappeared", "4", "3", 5), ("appeared", "3", "4", 8), ("disappeared", "3", "4", 8)]
    together = pipeline_of(config(version_gone_after=1), two_versions)
    steps = [together.process(Events.concat([hour_events(h, v, incident=i) for h, v, i in timeline[lo:lo + group]]))
             for lo in range(0, len(timeline), group)]
    assert summary(steps + [together.finish()])["changes"] == expected["changes"]


def test_configured_comparison_length_and_gone_after(two_versions: Any) -> None:
    pipeline = pipeline_of(config(version_baseline_windows=1, version_gone_after=3), two_versions)
    got = summary(replay_switch(pipeline, SWITCH) + [pipeline.finish()])
    assert [(c.kind, (c.window_start_ms - DAY) // HOUR) for c in got["changes"]] == [("appeared", 3), ("disappeared", 5)]
    assert len(got["versus"]) == 1
    fired = [a for a in got["alerts"] if a[3] == PREVIOUS_VERSION and a[1] == "firing"]
    assert fired and {a[4] for a in fired} == {wid("4", 3)}  # k = 1 window
    off = pipeline_of(config(version_baseline_windows=0), two_versions)
    got = summary(replay_switch(off, SWITCH) + [off.finish()])
    assert got["versus"] == [] and len(got["changes"]) == 2


def test_bad_version_settings_name_the_field() -> None:
    from driftline.config import ConfigError, load_config

    path = Path(__file__)  # any existing file: the references are not read by validation
    for field, value in (("version_gone_after", 0), ("version_baseline_windows", -1)):
        with pytest.raises(ConfigError, match=f"models.0.{field}"):
            load_config(None, environ={"DRIFTLINE__MODELS__0__NAME": "m", "DRIFTLINE__MODELS__0__REFERENCES__1":
                                       str(path), f"DRIFTLINE__MODELS__0__{field.upper()}": str(value)})
