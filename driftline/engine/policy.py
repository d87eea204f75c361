"""From severities to actions, over the window history (the stateful half of the policy).

:class:`Decider` folds assessed windows, in order of window end, into alert events and rollback
requests passed through the guards (:data:`ROLLBACK_GUARDS`); it reads no clock, so the same window
history gives the same decisions. The rules: docs/engine.md, *Decisions*.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from driftline.engine.assess import SEVERITY_RANK, Assessment, Breach, Severity
from driftline.engine.ids import digest

DATASET = "__dataset__"
REFERENCE = "reference"
PREVIOUS_VERSION = "previous_version"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class AlertPolicy:
    consecutive: int = 2
    """k: windows in a row at warn or worse before an alert fires (two-window confirmation)."""
    resolve_after: int = 3
    """Windows in a row at ok before a firing alert resolves (hysteresis)."""


@dataclass(frozen=True)
class RollbackPolicy:
    triggers: Mapping[str, Severity] = field(
        default_factory=lambda: {"score": "critical", "decision": "critical", "dataset": "critical"})
    """Role (``feature``, ``score``, ``decision``, ``dataset``) → lowest severity that asks for a rollback."""
    cooldown_ms: int = 6 * 3_600_000
    daily_cap: int = 2
    breaker_models: int = 3
    """Fleet-wide circuit breaker: this many distinct models asking within ``breaker_window_ms`` opens it."""
    breaker_window_ms: int = 3_600_000
    dry_run: bool = True
    kill_switch: bool = False
    on_change_detection: bool = False
    """Whether a detection of the score change watch asks for a rollback too (through the same guards);
    off: detections are early warnings only."""


@dataclass(frozen=True)
class WindowRef:
    model: str
    model_version: str
    window_id: str
    start_ms: int
    end_ms: int
    reference_hash: str


@dataclass(frozen=True)
class AlertEvent:
    alert_id: str
    kind: Literal["firing", "escalated", "resolved"]
    subject: str
    role: str
    severity: Severity
    window: WindowRef
    breaches: tuple[Breach, ...]
    baseline: str = REFERENCE
    """What the window was judged against: ``reference`` (its profile) or ``previous_version`` (the last
    window of the version it replaced, in the first windows after a version switch)."""


@dataclass(frozen=True)
class RollbackRequest:
    request_id: str
    """Idempotency key: the same window and alert always give the same id."""
    model: str
    model_version: str
    alert_id: str
    subject: str
    severity: Severity
    window: WindowRef
    status: Literal["requested", "dry_run", "suppressed"] = "requested"
    suppressed_by: str | None = None


@dataclass
class SubjectState:
    recent: list[str] = field(default_factory=list)
    """Severities of the last ``consecutive`` judged windows."""
    ok_streak: int = 0
    firing: str | None = None
    role: str | None = None
    """Kept for subjects judged against another baseline than the reference (see :meth:`Decider.end_baseline`)."""


@dataclass
class DeciderState:
    subjects: dict[str, SubjectState] = field(default_factory=dict)
    last_request_ms: dict[str, int] = field(default_factory=dict)
    requests_per_day: dict[str, int] = field(default_factory=dict)
    fleet_requests: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subjects": {k: {"recent": list(s.recent), "ok_streak": s.ok_streak, "firing": s.firing,
                             **({"role": s.role} if s.role is not None else {})}
                         for k, s in sorted(self.subjects.items())},
            "last_request_ms": dict(sorted(self.last_request_ms.items())),
            "requests_per_day": dict(sorted(self.requests_per_day.items())),
            "fleet_requests": [list(r) for r in self.fleet_requests],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeciderState:
        return cls(
            subjects={k: SubjectState(list(s["recent"]), int(s["ok_streak"]), s["firing"], s.get("role"))
                      for k, s in data["subjects"].items()},
            last_request_ms={k: int(v) for k, v in data["last_request_ms"].items()},
            requests_per_day={k: int(v) for k, v in data["requests_per_day"].items()},
            fleet_requests=[(int(t), str(m)) for t, m in data["fleet_requests"]],
        )


Guard = Callable[[RollbackRequest, DeciderState, RollbackPolicy], RollbackRequest]


def kill_switch(request: RollbackRequest, state: DeciderState, policy: RollbackPolicy) -> RollbackRequest:
    return replace(request, status="suppressed", suppressed_by="kill_switch") if policy.kill_switch else request


def cooldown(request: RollbackRequest, state: DeciderState, policy: RollbackPolicy) -> RollbackRequest:
    last = state.last_request_ms.get(request.model)
    if last is not None and request.window.end_ms - last < policy.cooldown_ms:
        return replace(request, status="suppressed", suppressed_by="cooldown")
    return request


def daily_cap(request: RollbackRequest, state: DeciderState, policy: RollbackPolicy) -> RollbackRequest:
    if state.requests_per_day.get(_day_key(request), 0) >= policy.daily_cap:
        return replace(request, status="suppressed", suppressed_by="daily_cap")
    return request


def circuit_breaker(request: RollbackRequest, state: DeciderState, policy: RollbackPolicy) -> RollbackRequest:
    since = request.window.end_ms - policy.breaker_window_ms
    models = {m for t, m in state.fleet_requests if t > since} - {request.model}
    if len(models) + 1 >= policy.breaker_models:
        return replace(request, status="suppressed", suppressed_by="circuit_breaker")
    return request


def dry_run(request: RollbackRequest, state: DeciderState, policy: RollbackPolicy) -> RollbackRequest:
    return replace(request, status="dry_run") if policy.dry_run else request


ROLLBACK_GUARDS: tuple[Guard, ...] = (kill_switch, cooldown, daily_cap, circuit_breaker, dry_run)


class Decider:
    """Alert state machines and rollback guards for a fleet of models (see module docstring)."""

    def __init__(self, alerts: AlertPolicy | None = None, rollback: RollbackPolicy | None = None,
                 state: DeciderState | None = None, guards: tuple[Guard, ...] = ROLLBACK_GUARDS) -> None:
        self.alerts = alerts or AlertPolicy()
        self.rollback = rollback or RollbackPolicy()
        self.state = state or DeciderState()
        self.guards = guards

    def reset(self) -> None:
        """Forget the window history: the state of a fresh decider with the same policies."""
        self.state = DeciderState()

    def step(self, window: WindowRef, assessment: Assessment, baseline: str = REFERENCE,
             alerts: AlertPolicy | None = None) -> tuple[list[AlertEvent], list[RollbackRequest]]:
        """Fold one assessed window into the state; return the alert events and rollback requests.

        ``baseline``: what the assessment measured the window against. Subjects judged against another
        baseline than the reference keep their own streaks (``alerts`` overrides the alert policy for
        them) and never ask for a rollback: a new version that scores unlike the one it replaced is
        news for the risk team, not proof the new version is broken."""
        subjects: list[tuple[str, str, str, bool, tuple[Breach, ...]]] = [
            (name, f.role, f.severity, not f.judged, f.breaches) for name, f in assessment.features.items()]
        dataset = assessment.dataset
        if dataset is not None:
            share = dataset.critical_share if dataset.severity == "critical" else dataset.drifted_share
            breach = Breach("drifted_share", share, dataset.drift_share, dataset.severity)
            subjects.append((DATASET, "dataset", dataset.severity, dataset.assessed == 0,
                             (breach,) if dataset.severity != "ok" else ()))
        events: list[AlertEvent] = []
        for subject, role, severity, unjudged, breaches in subjects:
            if unjudged:
                continue
            event = self._advance(window, subject, role, severity, breaches, baseline, alerts or self.alerts)
            if event is not None:
                events.append(event)
        if baseline != REFERENCE:
            return events, []
        requests = [self._request(window, e) for e in events if self._triggers(e)]
        return events, requests

    def end_baseline(self, window: WindowRef, baseline: str) -> list[AlertEvent]:
        """The window's model version is judged against ``baseline`` no more (the comparison period after
        a version switch is over): its alerts still firing against it resolve at ``window``, and its
        streaks are forgotten."""
        prefix, suffix = f"{window.model}\x1f{window.model_version}\x1f", f"\x1f{baseline}"
        events = []
        for key in sorted(k for k in self.state.subjects if k.startswith(prefix) and k.endswith(suffix)):
            s = self.state.subjects.pop(key)
            if s.firing is not None:
                subject = key[len(prefix):-len(suffix)]
                role = s.role or ("dataset" if subject == DATASET else "feature")
                events.append(AlertEvent(self._alert_id(window, subject, "resolved", baseline), "resolved", subject,
                                         role, "ok", window, (), baseline))
        return events

    def _advance(self, window: WindowRef, subject: str, role: str, severity: str,
                 breaches: tuple[Breach, ...], baseline: str = REFERENCE,
                 alerts: AlertPolicy | None = None) -> AlertEvent | None:
        key = f"{window.model}\x1f{window.model_version}\x1f{subject}"
        if baseline != REFERENCE:
            key += f"\x1f{baseline}"
        policy = alerts or self.alerts
        s = self.state.subjects.setdefault(key, SubjectState())
        if baseline != REFERENCE:
            s.role = role
        k = policy.consecutive
        s.recent = (s.recent + [severity])[-k:]
        s.ok_streak = s.ok_streak + 1 if severity == "ok" else 0
        sustained = min(s.recent, key=SEVERITY_RANK.__getitem__) if len(s.recent) == k else "ok"
        kind: Literal["firing", "escalated", "resolved"] | None = None
        if s.firing is None and sustained != "ok":
            kind, s.firing = "firing", sustained
        elif s.firing is not None and SEVERITY_RANK[sustained] > SEVERITY_RANK[s.firing]:
            kind, s.firing = "escalated", sustained
        elif s.firing is not None and s.ok_streak >= policy.resolve_after:
            kind, s.firing = "resolved", None
        if kind is None:
            return None
        reported: Severity = "ok" if kind == "resolved" else sustained  # type: ignore[assignment]
        return AlertEvent(self._alert_id(window, subject, kind, baseline), kind, subject, role, reported, window,
                          breaches, baseline)

    @staticmethod
    def _alert_id(window: WindowRef, subject: str, kind: str, baseline: str) -> str:
        parts = [window.model, window.model_version, subject, kind, window.window_id]
        return digest(*parts) if baseline == REFERENCE else digest(*parts, baseline)

    def _triggers(self, event: AlertEvent) -> bool:
        minimum = self.rollback.triggers.get(event.role)
        return (event.kind != "resolved" and minimum is not None
                and SEVERITY_RANK[event.severity] >= SEVERITY_RANK[minimum])

    def change(self, model: str, model_version: str, detection_id: str, event_time_ms: int,
               reference_hash: str) -> list[RollbackRequest]:
        """A detection of the score change watch: a rollback request (its ``alert_id`` is the detection id,
        its window the instant of the detection) when the policy asks for one on detections."""
        if not self.rollback.on_change_detection:
            return []
        window = WindowRef(model, model_version, detection_id, event_time_ms, event_time_ms, reference_hash)
        return [self._guarded(window, detection_id, "score", "critical")]

    def _request(self, window: WindowRef, event: AlertEvent) -> RollbackRequest:
        return self._guarded(window, event.alert_id, event.subject, event.severity)

    def _guarded(self, window: WindowRef, alert_id: str, subject: str, severity: Severity) -> RollbackRequest:
        request = RollbackRequest(digest("rollback", alert_id), window.model, window.model_version,
                                  alert_id, subject, severity, window)
        for guard in self.guards:
            if request.status == "suppressed":
                break
            request = guard(request, self.state, self.rollback)
        if request.status != "suppressed":
            self.state.last_request_ms[request.model] = window.end_ms
            day = _day_key(request)
            self.state.requests_per_day[day] = self.state.requests_per_day.get(day, 0) + 1
            self.state.fleet_requests.append((window.end_ms, request.model))
            since = window.end_ms - self.rollback.breaker_window_ms
            self.state.fleet_requests = [r for r in self.state.fleet_requests if r[0] > since]
            # Forget this model's older days (other models may lag behind and still need theirs).
            today = window.end_ms // DAY_MS
            self.state.requests_per_day = {
                key: n for key, n in self.state.requests_per_day.items()
                if key.rsplit("\x1f", 1)[0] != request.model or int(key.rsplit("\x1f", 1)[1]) >= today - 1}
        return request


def _day_key(request: RollbackRequest) -> str:
    return f"{request.model}\x1f{request.window.end_ms // DAY_MS}"

