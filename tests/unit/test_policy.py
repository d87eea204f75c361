"""Decisions over the window history: ``driftline.engine.policy.Decider``, driven by hand-built assessments.

Each rule of the module docstring alone (k consecutive windows, lowest severity, escalation,
hysteresis, insufficient windows, triggers, kill switch, cooldown, daily cap, circuit breaker,
dry-run), then the promise that ties them together: decisions are a pure function of the window
history, so a replay, or a restart from ``DeciderState.to_dict`` through JSON, gives the same alerts
and the same requests with the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.engine.assess import Assessment, Breach, DatasetAssessment, FeatureAssessment
from driftline.engine.policy import (DATASET, DAY_MS, AlertEvent, AlertPolicy, Decider, DeciderState,
                                     RollbackPolicy, RollbackRequest, WindowRef)
from driftline.engine.stats import FeatureStats
from driftline.engine.window import window_id

MINUTE = 60_000
HOUR = 3_600_000
ROLES = {"x": "feature", "y": "feature", "score": "score", "decision": "decision"}
LIMITS = {"warn": 0.1, "critical": 0.25}


def window(i: int, model: str = "m", size: int = MINUTE, version: str = "1") -> WindowRef:
    start = i * size
    return WindowRef(model, version, window_id(model, version, start, start + size), start, start + size, "sha256:ref")


def feature(name: str, severity: str, insufficient: bool = False) -> FeatureAssessment:
    breaches = () if severity == "ok" else (Breach("psi", 0.3 if severity == "critical" else 0.15,
                                                   LIMITS[severity], severity),)  # type: ignore[arg-type]
    return FeatureAssessment(name, ROLES.get(name, "feature"), FeatureStats(n=1_000, n_expected=10_000),
                             severity, breaches, {}, insufficient)  # type: ignore[arg-type]


def assessment(severities: Mapping[str, str], insufficient: Iterable[str] = (),
               dataset: str | None = None, assessed: int = 2) -> Assessment:
    skip = set(insufficient)
    features = {name: feature(name, s, name in skip) for name, s in severities.items()}
    data = None
    if dataset is not None:
        share = {"ok": 0.0, "warn": 0.5, "critical": 1.0}[dataset]
        data = DatasetAssessment(dataset, share, share if dataset == "critical" else 0.0, assessed,  # type: ignore[arg-type]
                                 ("x",) if dataset != "ok" else (), 0.5)
    return Assessment(features, data)


def feed(decider: Decider, history: Iterable[tuple[WindowRef, Assessment]]
         ) -> tuple[list[AlertEvent], list[RollbackRequest]]:
    events: list[AlertEvent] = []
    requests: list[RollbackRequest] = []
    for ref, a in history:
        e, r = decider.step(ref, a)
        events += e
        requests += r
    return events, requests


def run_severities(severities: Iterable[str], subject: str = "x", alerts: AlertPolicy | None = None,
                   rollback: RollbackPolicy | None = None, model: str = "m", first: int = 0,
                   decider: Decider | None = None) -> tuple[Decider, list[list[AlertEvent]], list[RollbackRequest]]:
    decider = decider or Decider(alerts, rollback)
    per_window: list[list[AlertEvent]] = []
    requests: list[RollbackRequest] = []
    for i, severity in enumerate(severities, start=first):
        e, r = decider.step(window(i, model), assessment({subject: severity}))
        per_window.append(e)
        requests += r
    return decider, per_window, requests


def kinds(per_window: list[list[AlertEvent]]) -> list[str | None]:
    return [None if not e else "+".join(f"{x.kind}:{x.severity}" for x in e) for e in per_window]


# -- alert state machine -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_an_alert_fires_after_k_consecutive_windows_at_warn_or_worse(k: int) -> None:
    _, per_window, _ = run_severities(["warn"] * (k - 1) + ["ok"] + ["warn"] * k, alerts=AlertPolicy(consecutive=k))
    assert kinds(per_window) == [None] * (2 * k - 1) + ["firing:warn"]


def test_a_single_breach_between_ok_windows_never_fires() -> None:
    _, per_window, _ = run_severities(["ok", "warn", "ok", "critical", "ok", "warn"] * 3)
    assert kinds(per_window) == [None] * 18


def test_firing_severity_is_the_lowest_the_k_windows_held() -> None:
    _, mixed, _ = run_severities(["critical", "warn"], alerts=AlertPolicy(consecutive=2))
    assert kinds(mixed) == [None, "firing:warn"]
    _, critical, _ = run_severities(["critical", "critical"], alerts=AlertPolicy(consecutive=2))
    assert kinds(critical) == [None, "firing:critical"]


def test_a_firing_warn_escalates_once_critical_has_held_k_windows() -> None:
    _, per_window, _ = run_severities(["warn", "warn", "critical", "warn", "critical", "critical", "critical"])
    assert kinds(per_window) == [None, "firing:warn", None, None, None, "escalated:critical", None]


def test_an_alert_resolves_only_after_resolve_after_ok_windows() -> None:
    policy = AlertPolicy(consecutive=2, resolve_after=3)
    _, per_window, _ = run_severities(["warn", "warn", "ok", "ok", "warn", "ok", "ok", "ok", "ok"], alerts=policy)
    assert kinds(per_window) == [None, "firing:warn", None, None, None, None, None, "resolved:ok", None]
    resolved = [e for w in per_window for e in w if e.kind == "resolved"]
    assert resolved[0].breaches == () and resolved[0].window == window(7)


def test_an_alert_fires_again_after_resolving_with_a_new_id() -> None:
    policy = AlertPolicy(consecutive=1, resolve_after=1)
    _, per_window, _ = run_severities(["warn", "ok", "warn", "ok"], alerts=policy)
    assert kinds(per_window) == ["firing:warn", "resolved:ok", "firing:warn", "resolved:ok"]
    ids = [e.alert_id for w in per_window for e in w]
    assert len(set(ids)) == 4


def test_windows_with_too_few_samples_neither_extend_nor_break_a_streak() -> None:
    decider = Decider(AlertPolicy(consecutive=3, resolve_after=2))
    plan = [("warn", False), ("critical", True), ("ok", True), ("warn", False), ("ok", True), ("warn", False),
            ("ok", False), ("warn", True), ("ok", False)]
    per_window = []
    for i, (severity, skip) in enumerate(plan):
        events, _ = decider.step(window(i), assessment({"x": severity}, insufficient=["x"] if skip else []))
        per_window.append(events)
    assert kinds(per_window) == [None, None, None, None, None, "firing:warn", None, None, "resolved:ok"]


def test_a_feature_judged_on_its_rows_only_still_fires() -> None:
    # too few values for the distribution tests (insufficient), but the window's rows were judged:
    # a feature an upstream join dropped fires on its missing rate and asks for the rollback
    decider = Decider(AlertPolicy(consecutive=2), RollbackPolicy(triggers={"feature": "critical"}))
    dropped = Breach("missing_rate_shift", 1.0, 0.1, "critical")
    history = [FeatureAssessment("x", "feature", FeatureStats(n=4_500, n_expected=10_000, missing_rate=1.0),
                                 "critical", (dropped,), {}, insufficient=True, rows_judged=True) for _ in range(2)]
    events, requests = feed(decider, [(window(i), Assessment({"x": f})) for i, f in enumerate(history)])
    assert [(e.kind, e.severity) for e in events] == [("firing", "critical")]
    assert len(requests) == 1


def test_the_dataset_subject_follows_the_dataset_rule_and_skips_unassessed_windows() -> None:
    decider = Decider(AlertPolicy(consecutive=2))
    e0, _ = decider.step(window(0), assessment({"x": "warn"}, dataset="warn"))
    e1, _ = decider.step(window(1), assessment({"x": "warn"}, dataset="critical", assessed=0))  # skipped
    e2, _ = decider.step(window(2), assessment({"x": "warn"}, dataset="warn"))
    assert [e.subject for e in e0] == [] and [e.subject for e in e1] == ["x"]
    dataset_events = [e for e in e2 if e.subject == DATASET]
    assert [(e.kind, e.role, e.severity) for e in dataset_events] == [("firing", "dataset", "warn")]
    assert dataset_events[0].breaches[0].metric == "drifted_share"


def test_subjects_are_independent_per_model_and_version() -> None:
    decider = Decider(AlertPolicy(consecutive=2))
    decider.step(window(0, "a"), assessment({"x": "warn"}))
    decider.step(window(0, "b"), assessment({"x": "warn"}))
    decider.step(window(0, "a", version="2"), assessment({"x": "warn"}))
    events, _ = decider.step(window(1, "a"), assessment({"x": "warn", "y": "warn"}))
    assert [(e.window.model, e.subject) for e in events] == [("a", "x")]


# -- rollback requests and their guards -------------------------------------------------------------------


def test_only_matching_roles_and_severities_ask_for_a_rollback() -> None:
    decider = Decider(AlertPolicy(consecutive=1), RollbackPolicy(dry_run=False, cooldown_ms=0, daily_cap=100,
                                                                 breaker_models=100))
    _, r0 = decider.step(window(0), assessment({"x": "critical", "score": "warn", "decision": "ok"}, dataset="warn"))
    assert r0 == []  # feature: no trigger; score at warn: below its trigger; dataset at warn: below
    events, r1 = decider.step(window(1), assessment({"x": "critical", "score": "critical", "decision": "critical"},
                                                    dataset="critical"))
    assert sorted(r.subject for r in r1) == sorted(["score", "decision", DATASET])
    assert all(r.status == "requested" and r.severity == "critical" for r in r1)
    by_alert = {e.alert_id: e for e in events}
    assert all(by_alert[r.alert_id].kind == "escalated" for r in r1 if r.subject != "decision")


def test_a_resolving_alert_never_asks_for_a_rollback() -> None:
    policy = RollbackPolicy(triggers={"feature": "ok"}, dry_run=False, cooldown_ms=0)
    _, per_window, requests = run_severities(["warn", "ok"], alerts=AlertPolicy(1, 1), rollback=policy)
    assert kinds(per_window) == ["firing:warn", "resolved:ok"]
    assert [r.status for r in requests] == ["requested"]


CYCLE = AlertPolicy(consecutive=1, resolve_after=1)
"""Fires on every breaching window and resolves on every ok one: one request per other window."""


def test_dry_run_is_the_default_and_is_still_returned() -> None:
    _, _, requests = run_severities(["critical"], subject="score", alerts=CYCLE)
    assert [(r.status, r.suppressed_by) for r in requests] == [("dry_run", None)]


def test_the_kill_switch_suppresses_every_request_and_leaves_the_guards_untouched() -> None:
    decider, _, requests = run_severities(["critical", "ok"] * 3, subject="score", alerts=CYCLE,
                                          rollback=RollbackPolicy(kill_switch=True, dry_run=False))
    assert [(r.status, r.suppressed_by) for r in requests] == [("suppressed", "kill_switch")] * 3
    assert decider.state.last_request_ms == {} and decider.state.fleet_requests == []


def test_cooldown_per_model() -> None:
    policy = RollbackPolicy(triggers={"score": "warn"}, dry_run=False, cooldown_ms=10 * MINUTE, daily_cap=100)
    decider, _, requests = run_severities(["warn", "ok"] * 8, subject="score", alerts=CYCLE, rollback=policy)
    # requests at window ends 1, 3, 5, ... minutes; cooldown 10 minutes from the last *granted* request
    granted = [r.window.end_ms // MINUTE for r in requests if r.status == "requested"]
    suppressed = [(r.window.end_ms // MINUTE, r.suppressed_by) for r in requests if r.status == "suppressed"]
    assert granted == [1, 11]
    assert suppressed == [(m, "cooldown") for m in (3, 5, 7, 9, 13, 15)]
    other, _, other_requests = run_severities(["warn"], subject="score", alerts=CYCLE, rollback=policy, model="n",
                                              first=2, decider=decider)
    assert [r.status for r in other_requests] == ["requested"]  # another model is not cooled down


def test_two_triggers_in_one_window_make_one_request() -> None:
    decider = Decider(AlertPolicy(consecutive=1), RollbackPolicy(dry_run=False))
    _, requests = decider.step(window(0), assessment({"score": "critical", "decision": "critical"}))
    assert [(r.subject, r.status, r.suppressed_by) for r in requests] == [
        ("score", "requested", None), ("decision", "suppressed", "cooldown")]


def test_daily_cap_per_model_and_utc_day_of_the_window_end() -> None:
    policy = RollbackPolicy(triggers={"score": "warn"}, dry_run=False, cooldown_ms=0, daily_cap=2)
    hour_windows = [(i, "warn" if i % 2 == 0 else "ok") for i in range(20, 30)]  # 20:00 .. 05:00 of the next day
    decider = Decider(CYCLE, policy)
    statuses = []
    for i, severity in hour_windows:
        _, requests = decider.step(window(i, size=HOUR), assessment({"score": severity}))
        statuses += [(r.window.end_ms // HOUR, r.status, r.suppressed_by) for r in requests]
    # windows end at 21h, 23h (day 0), then 25h = 01:00, 27h, 29h of day 1
    assert statuses == [(21, "requested", None), (23, "requested", None),
                        (25, "requested", None), (27, "requested", None), (29, "suppressed", "daily_cap")]
    assert all(int(key.rsplit("\x1f", 1)[1]) >= 29 * HOUR // DAY_MS - 1 for key in decider.state.requests_per_day)


def test_a_window_ending_at_midnight_counts_for_the_next_day() -> None:
    policy = RollbackPolicy(triggers={"score": "warn"}, dry_run=False, cooldown_ms=0, daily_cap=1)
    decider = Decider(CYCLE, policy)
    _, first = decider.step(window(22, size=HOUR), assessment({"score": "warn"}))  # ends 23:00, day 0
    decider.step(window(23 * 60 + 58, size=MINUTE), assessment({"score": "ok"}))
    _, midnight = decider.step(window(23 * 60 + 59, size=MINUTE), assessment({"score": "warn"}))  # ends 24:00
    assert [r.status for r in first + midnight] == ["requested", "requested"]


def test_daily_cap_holds_for_a_model_that_lags_the_fleet() -> None:
    policy = RollbackPolicy(triggers={"score": "warn"}, dry_run=False, cooldown_ms=0, daily_cap=2, breaker_models=100)
    decider = Decider(CYCLE, policy)
    day10, day20 = 10 * 24, 20 * 24  # hour indices
    statuses = []
    for model, hour, severity in [("a", day10 + 1, "warn"), ("a", day10 + 2, "ok"), ("a", day10 + 3, "warn"),
                                  ("a", day10 + 4, "ok"),
                                  ("b", day20 + 1, "warn"),  # another model, live, ten days ahead
                                  ("a", day10 + 5, "warn")]:  # a's third request on its day 10
        _, requests = decider.step(window(hour, model, size=HOUR), assessment({"score": severity}))
        statuses += [(model, r.status, r.suppressed_by) for r in requests]
    assert statuses[-1] == ("a", "suppressed", "daily_cap")


def test_circuit_breaker_across_models() -> None:
    policy = RollbackPolicy(dry_run=False, breaker_models=3, breaker_window_ms=HOUR)
    decider = Decider(AlertPolicy(consecutive=1), policy)
    asks = [("a", 0), ("b", 10), ("c", 20), ("d", 50), ("e", 75)]  # (model, window index in minutes)
    outcome = {}
    for model, minute in asks:
        _, requests = decider.step(window(minute, model), assessment({"score": "critical"}))
        outcome[model] = (requests[0].status, requests[0].suppressed_by)
    assert outcome == {"a": ("requested", None), "b": ("requested", None),
                       "c": ("suppressed", "circuit_breaker"), "d": ("suppressed", "circuit_breaker"),
                       # at minute 76 the granted requests of a and b (minutes 1 and 11) have left the hour
                       "e": ("requested", None)}


def test_guards_run_in_order_and_stop_at_the_first_suppression() -> None:
    policy = RollbackPolicy(triggers={"score": "warn"}, dry_run=True, cooldown_ms=HOUR, kill_switch=False)
    decider, _, requests = run_severities(["warn", "ok", "warn"], subject="score", alerts=CYCLE, rollback=policy)
    # dry-run requests rehearse the guards: they count toward the cooldown like real ones
    assert [(r.status, r.suppressed_by) for r in requests] == [("dry_run", None), ("suppressed", "cooldown")]
    killed = Decider(CYCLE, RollbackPolicy(triggers={"score": "warn"}, cooldown_ms=HOUR, kill_switch=True),
                     state=DeciderState.from_dict(decider.state.to_dict()))
    killed.step(window(3), assessment({"score": "ok"}))
    _, r = killed.step(window(4), assessment({"score": "warn"}))  # within the cooldown: the kill switch comes first
    assert [(x.status, x.suppressed_by) for x in r] == [("suppressed", "kill_switch")]


def test_reset_forgets_the_history() -> None:
    history = [(window(i), assessment({"score": s})) for i, s in enumerate(["critical", "critical", "ok", "warn"])]
    used = Decider(AlertPolicy(1))
    feed(used, history)
    assert used.state.to_dict() != DeciderState().to_dict()
    used.reset()
    assert used.state.to_dict() == DeciderState().to_dict()
    assert feed(used, history) == feed(Decider(AlertPolicy(1)), history)


def test_request_ids_are_idempotency_keys() -> None:
    policy = RollbackPolicy(dry_run=False)
    _, first = Decider(AlertPolicy(1), policy).step(window(5), assessment({"score": "critical"}))
    _, again = Decider(AlertPolicy(1), policy).step(window(5), assessment({"score": "critical"}))
    _, other = Decider(AlertPolicy(1), policy).step(window(6), assessment({"score": "critical"}))
    assert first[0].request_id == again[0].request_id != other[0].request_id
    assert first[0].alert_id == again[0].alert_id != other[0].alert_id


# -- replay -------------------------------------------------------------------------------------------------

SEVERITY = st.sampled_from(["ok", "ok", "warn", "critical"])


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[WindowRef, Assessment]]:
    """Interleaved window histories of up to three models, in order of window end."""
    models = ["a", "b", "c"][: draw(st.integers(1, 3))]
    n = draw(st.integers(1, 40))
    size = draw(st.sampled_from([MINUTE, 20 * MINUTE, HOUR]))
    history = []
    for i in range(n):
        for model in models:
            if draw(st.booleans()) or model == models[0]:
                severities = {name: draw(SEVERITY) for name in ("x", "y", "score", "decision")}
                insufficient = [name for name in severities if draw(st.integers(0, 9)) == 0]
                dataset = draw(st.sampled_from([None, "ok", "warn", "critical"]))
                history.append((window(i, model, size),
                                assessment(severities, insufficient, dataset, assessed=draw(st.integers(0, 2)))))
    return history


@st.composite
def policies(draw: st.DrawFn) -> tuple[AlertPolicy, RollbackPolicy]:
    alerts = AlertPolicy(consecutive=draw(st.integers(1, 3)), resolve_after=draw(st.integers(1, 3)))
    rollback = RollbackPolicy(
        triggers=draw(st.sampled_from([{"score": "critical", "decision": "critical", "dataset": "critical"},
                                       {"feature": "warn", "score": "warn"}])),
        cooldown_ms=draw(st.sampled_from([0, 30 * MINUTE, 6 * HOUR])), daily_cap=draw(st.integers(1, 3)),
        breaker_models=draw(st.integers(1, 3)), dry_run=draw(st.booleans()), kill_switch=draw(st.booleans()))
    return alerts, rollback


@given(history=histories(), policy=policies())
def test_replaying_the_window_history_reproduces_alerts_and_requests(
        history: list[tuple[WindowRef, Assessment]], policy: tuple[AlertPolicy, RollbackPolicy]) -> None:
    first = feed(Decider(*policy), history)
    second = feed(Decider(*policy), history)
    assert first == second
    events, requests = first
    assert len({(e.alert_id) for e in events}) == len(events)
    assert len({r.request_id for r in requests}) == len(requests)


@given(history=histories(), policy=policies(), data=st.data())
def test_restart_from_state_json_continues_identically(
        history: list[tuple[WindowRef, Assessment]], policy: tuple[AlertPolicy, RollbackPolicy],
        data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(history)))
    uninterrupted = Decider(*policy)
    expected = feed(uninterrupted, history)

    before = Decider(*policy)
    head = feed(before, history[:cut])
    saved = json.dumps(before.state.to_dict(), allow_nan=False)
    after = Decider(*policy, state=DeciderState.from_dict(json.loads(saved)))
    tail = feed(after, history[cut:])

    assert (head[0] + tail[0], head[1] + tail[1]) == expected
    assert after.state.to_dict() == uninterrupted.state.to_dict()


@given(history=histories(), policy=policies())
def test_state_bookkeeping_stays_bounded(history: list[tuple[WindowRef, Assessment]],
                                         policy: tuple[AlertPolicy, RollbackPolicy]) -> None:
    decider = Decider(*policy)
    for ref, a in history:
        decider.step(ref, a)
        state = decider.state
        assert all(len(s.recent) <= policy[0].consecutive for s in state.subjects.values())
        assert all(n <= policy[1].daily_cap for n in state.requests_per_day.values())
        assert len(state.requests_per_day) <= 2 * len({r.model for r, _ in history})
        assert all(t <= ref.end_ms for t, _ in state.fleet_requests)
