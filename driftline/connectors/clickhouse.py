"""The ClickHouse store: windows, late events, alerts, rollback requests, audit log.

One client (clickhouse-connect) for chDB in-process or a ClickHouse server; the schema is
``schemas/clickhouse_v*.sql``, applied by :meth:`ClickHouseStore.apply_schema`; every write is
idempotent (docs/store.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from driftline import __version__
from driftline.engine.changewatch import ChangeDetection
from driftline.engine.features import FeatureSet
from driftline.engine.ids import digest
from driftline.engine.monitor import WindowReport
from driftline.engine.policy import AlertEvent, RollbackRequest
from driftline.engine.profile import CategoricalProfile, NumericProfile
from driftline.engine.stats import FeatureStats
from driftline.engine.versions import VersionChange
from driftline.engine.window import LateCount
from driftline.errors import DriftlineError
from driftline.outcome import AuditEntry
from driftline.schemas import schema_text

SCHEMA_FILES = ("clickhouse_v1.sql", "clickhouse_v2.sql")
"""Applied in order on every start; each is idempotent and ends by recording its version."""
SCHEMA_VERSION = 1
STAT_COLUMNS = tuple(FeatureStats.__dataclass_fields__)


class StoreError(DriftlineError):
    """The store refused a statement, or failed in a way a retry will not mend (a missing table, a type
    mismatch, a bug). The batch in hand is not committed; the service stops, and after a restart the batch
    is consumed and written again (every insert is idempotent): nothing is lost."""


class StoreUnavailable(StoreError):
    """The store failed in a way that passes: unreachable, connection dropped, timed out, overloaded, or a
    server error that is not the caller's fault (:func:`transient_reason`). The service pauses consumption
    and retries; ``reason`` says why, for the log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


TRANSIENT_CODES = {
    159: "TIMEOUT_EXCEEDED", 160: "TOO_SLOW", 202: "TOO_MANY_SIMULTANEOUS_QUERIES", 203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT", 210: "NETWORK_ERROR", 225: "NO_ZOOKEEPER", 236: "ABORTED", 241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY", 243: "NOT_ENOUGH_SPACE", 252: "TOO_MANY_PARTS", 279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS", 319: "UNKNOWN_STATUS_OF_INSERT", 394: "QUERY_WAS_CANCELLED", 425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK", 999: "KEEPER_EXCEPTION",
}
"""ClickHouse server errors that say "not now" rather than "not this": overload, timeouts, lost replicas or
Keeper, a full disk. Everything else the server answers (unknown table, syntax, type mismatch, access
denied, ...) is the caller's fault and stops the service."""
_HTTP_UNAVAILABLE = re.compile(r"HTTP status (429|502|503|504)\b")


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` (from clickhouse-connect, over HTTP or chDB) is worth a retry, in a few words (the
    exception class, the server's error code, the HTTP status), or None if it is not.

    * ``OperationalError`` (and its ``StreamFailureError``): clickhouse-connect raises it for transport
      failures: connection refused or reset, a response cut off, a read timeout, and 429/503/504 answers
      still failing after its own retries. Never for a statement the server rejected.
    * ``DatabaseError`` with a code in :data:`TRANSIENT_CODES` (the server or chDB said "not now"), or
      without a code for a 429/502/503/504 from a proxy in front of the server.
    * Python's own ``ConnectionError`` and ``TimeoutError``, should one escape the driver.
    """
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, (OperationalError, ConnectionError, TimeoutError)):
        return type(exc).__name__
    if type(exc) is DatabaseError:  # not its subclasses: ProgrammingError, DataError, ... are the caller's fault
        code = getattr(exc, "code", None)
        if code in TRANSIENT_CODES:
            return f"ClickHouse error {code} ({TRANSIENT_CODES[code]})"
        status = _HTTP_UNAVAILABLE.search(str(exc))
        if code is None and status is not None:
            return f"HTTP {status.group(1)}"
    return None


def store_error(message: str, exc: BaseException) -> StoreError:
    """The error to raise for a driver exception: :class:`StoreUnavailable` when it is transient."""
    reason = transient_reason(exc)
    return StoreUnavailable(message, reason) if reason is not None else StoreError(message)


def undeliverable_id(bad: Any) -> str:
    """The id of an undeliverable dead letter: a hash of its bad event (origin, stage, class, reason)."""
    return digest("undeliverable", bad.origin, bad.stage, bad.error_class, bad.reason)


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class ClickHouseStore:
    def __init__(self, dsn: str, database: str = "driftline", ttl_days: int = 400, audit_ttl_days: int = 3650) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
            raise StoreError(f"invalid database name {database!r}")
        self.dsn = dsn
        self.database = database
        self.ttl_days = ttl_days
        self.audit_ttl_days = audit_ttl_days
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import clickhouse_connect

            try:
                if self.dsn.startswith("chdb:"):
                    self._client = clickhouse_connect.get_client(dsn=self.dsn)
                else:
                    parts = urlsplit(self.dsn)
                    if parts.scheme not in ("http", "https"):
                        raise StoreError(f"store dsn must start with chdb:, http: or https:, got {self.dsn!r}")
                    self._client = clickhouse_connect.get_client(dsn=self.dsn)
            except StoreError:
                raise
            except Exception as exc:  # the driver raises many types; transient ones are retried by the service
                raise store_error(f"cannot open the store at {_redact(self.dsn)}: {_redact(str(exc))}", exc) from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- schema ------------------------------------------------------------------------------------

    def apply_schema(self) -> int:
        """Create or confirm every table; returns the schema version now in force."""
        for name in SCHEMA_FILES:
            text = schema_text(name).format(database=self.database, ttl_days=self.ttl_days,
                                            audit_ttl_days=self.audit_ttl_days)
            for statement in _statements(text):
                self._command(statement)
        return int(self.query(f"SELECT max(version) FROM {self.database}.schema_version")[1][0][0])

    # -- writes -------------------------------------------------------------------------------------

    def write_windows(self, features: FeatureSet, reports: Sequence[WindowReport]) -> int:
        rows = [row for report in reports for row in window_rows(features, report)]
        return self._insert("windows", WINDOW_COLUMNS, rows)

    def write_late(self, model: str, model_version: str, late: Sequence[LateCount]) -> int:
        """``late``: the running count of late events per window so far."""
        rows = [[model, model_version, c.window_id, _time(c.start_ms), _time(c.end_ms), c.count] for c in late]
        return self._insert("late_events", LATE_COLUMNS, rows)

    def write_alerts(self, events: Sequence[AlertEvent]) -> int:
        rows = [[e.alert_id, e.kind, e.window.model, e.window.model_version, e.subject, e.role, e.severity,
                 e.window.window_id, _time(e.window.start_ms), _time(e.window.end_ms),
                 [b.metric for b in e.breaches], [b.value for b in e.breaches], [b.threshold for b in e.breaches],
                 [b.severity for b in e.breaches], e.window.reference_hash, e.baseline] for e in events]
        return self._insert("alerts", ALERT_COLUMNS, rows)

    def write_rollbacks(self, requests: Sequence[RollbackRequest]) -> int:
        rows = [[r.request_id, r.model, r.model_version, r.alert_id, r.subject, r.severity, r.status,
                 r.suppressed_by or "", r.window.window_id, _time(r.window.start_ms), _time(r.window.end_ms),
                 r.window.reference_hash] for r in requests]
        return self._insert("rollback_requests", ROLLBACK_COLUMNS, rows)

    def write_version_changes(self, changes: Sequence[VersionChange]) -> int:
        rows = [[c.change_id, c.kind, c.model, c.from_version, c.to_version, c.window_id, _time(c.window_start_ms),
                 _time(c.window_end_ms), _time(c.last_seen_ms), c.reference_hash, __version__] for c in changes]
        return self._insert("version_changes", VERSION_CHANGE_COLUMNS, rows)

    def write_detections(self, detections: Sequence[ChangeDetection]) -> int:
        """The score change watch's detections (``change_detections``; ids are deterministic)."""
        rows = [[d.detection_id, d.model, d.model_version, d.detector, _time(d.event_time_ms or 0), d.index,
                 d.change_index, d.before_mean, d.after_mean, d.before_count, d.after_count, d.bound,
                 d.reference_hash] for d in detections]
        return self._insert("change_detections", DETECTION_COLUMNS, rows)

    def audit(self, entries: Sequence[AuditEntry], recorded_at: datetime | None = None) -> int:
        now = recorded_at or datetime.now(tz=UTC)
        rows = [[e.entry_id, now, _time(e.event_time_ms), e.action, e.actor, e.model, e.model_version, e.window_id,
                 e.subject_id, e.details, e.reference_hash, __version__] for e in entries]
        token_rows = [[r[0]] for r in rows]  # the wall-clock column is left out of the deduplication token
        return self._insert("audit_log", AUDIT_COLUMNS, rows, token_rows)

    def write_undeliverable(self, letters: Sequence[Any], now_ms: int) -> int:
        """Dead letters the broker refused (:class:`driftline.connectors.kafka.publish.Undeliverable`): a row each in
        ``undeliverable_dead_letters`` and an audit entry ``dead_letter.undeliverable`` at ``now_ms``."""
        rows = [[undeliverable_id(u.bad), u.topic, u.bad.origin, u.source_topic, u.source_partition, u.source_offset,
                 u.bad.stage, u.bad.error_class, u.bad.reason, u.value_bytes, u.value_sha256, u.key_bytes, u.error,
                 u.limit, __version__] for u in letters]
        written = self._insert("undeliverable_dead_letters", UNDELIVERABLE_COLUMNS, rows)
        self.audit([AuditEntry("dead_letter.undeliverable", now_ms, subject_id=row[0], details=json.dumps(
            {"origin": u.bad.origin, "stage": u.bad.stage, "error_class": u.bad.error_class,
             "reason": u.bad.reason[:200], "topic": u.topic, "value_bytes": u.value_bytes,
             "value_sha256": u.value_sha256, "delivery_error": u.error, "max_message_bytes": u.limit},
            sort_keys=True)) for u, row in zip(letters, rows, strict=True)])
        return written

    def write_checkpoint(self, group_id: str, seq: int, offsets: dict[str, int], state: dict[str, Any]) -> None:
        """The service's position and state after a batch (the newest ``seq`` of a group wins)."""
        row = [group_id, seq, datetime.now(tz=UTC), json.dumps(offsets, sort_keys=True),
               json.dumps(state, allow_nan=False, separators=(",", ":"))]
        self._insert("checkpoints", ("group_id", "seq", "written_at", "offsets", "state"), [row],
                     token_rows=[[group_id, seq]])

    def write_checkpoints(self, checkpoints: Sequence[tuple[str, int, dict[str, int], dict[str, Any]]]) -> None:
        """Several checkpoints (group_id, seq, offsets, state) in one insert: the two-stage service's, one
        per partition."""
        now = datetime.now(tz=UTC)
        rows = [[group_id, seq, now, json.dumps(offsets, sort_keys=True),
                 json.dumps(state, allow_nan=False, separators=(",", ":"))]
                for group_id, seq, offsets, state in checkpoints]
        self._insert("checkpoints", ("group_id", "seq", "written_at", "offsets", "state"), rows,
                     token_rows=[[group_id, seq] for group_id, seq, _, _ in checkpoints])

    def read_checkpoint(self, group_id: str) -> tuple[int, dict[str, int], dict[str, Any]] | None:
        _, rows = self.query(f"SELECT seq, offsets, state FROM {self.database}.checkpoints FINAL "
                             "WHERE group_id = {group:String}", {"group": group_id})
        if not rows:
            return None
        seq, offsets, state = rows[0]
        return int(seq), {k: int(v) for k, v in json.loads(offsets).items()}, json.loads(state)

    # -- reads --------------------------------------------------------------------------------------

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              text_ids: bool = False) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows. ``parameters`` fill ``{name:Type}`` placeholders (ClickHouse binds them,
        no quoting by hand). ``text_ids``: ``FixedString`` columns (the ids) come back as text, as they were
        written, instead of bytes, so a printed id can be pasted into the next query."""
        try:
            result = self.client.query(sql, parameters=parameters,
                                       query_formats={"FixedString": "string"} if text_ids else None)
        except StoreError:
            raise
        except Exception as exc:
            raise store_error(f"query failed: {_first_line(exc)}", exc) from exc
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    # -- internals ----------------------------------------------------------------------------------

    def _command(self, statement: str) -> None:
        try:
            self.client.command(statement)
        except StoreError:
            raise
        except Exception as exc:
            raise store_error(f"statement failed: {_first_line(exc)}\n{statement[:200]}", exc) from exc

    def _insert(self, table: str, columns: Sequence[str], rows: list[list[Any]],
                token_rows: Iterable[Sequence[Any]] | None = None) -> int:
        if not rows:
            return 0
        token = digest(table, json.dumps(token_rows if token_rows is not None else rows, default=str))
        try:
            self.client.insert(f"{self.database}.{table}", rows, column_names=list(columns),
                               settings={"insert_deduplication_token": token})
        except Exception as exc:
            raise store_error(f"insert into {self.database}.{table} failed: {_first_line(exc)}", exc) from exc
        return len(rows)


WINDOW_COLUMNS = (
    "model", "model_version", "window_id", "window_start", "window_end", "feature", "kind", "role", "baseline",
    "window_rows", *STAT_COLUMNS, "ks_pvalue_adjusted", "chi2_pvalue_adjusted", "severity", "insufficient_samples",
    "breaches.metric", "breaches.value", "breaches.threshold", "breaches.severity",
    "bin_labels", "bin_edges", "histogram_expected", "histogram_current", "reference_hash", "dataset_severity",
    "baseline_window_id", "driftline_version", "baseline_version",
)
LATE_COLUMNS = ("model", "model_version", "window_id", "window_start", "window_end", "late_events")
ALERT_COLUMNS = ("alert_id", "kind", "model", "model_version", "subject", "role", "severity", "window_id",
                 "window_start", "window_end", "breaches.metric", "breaches.value", "breaches.threshold",
                 "breaches.severity", "reference_hash", "baseline")
VERSION_CHANGE_COLUMNS = ("change_id", "kind", "model", "from_version", "to_version", "window_id", "window_start",
                          "window_end", "last_seen", "reference_hash", "driftline_version")
ROLLBACK_COLUMNS = ("request_id", "model", "model_version", "alert_id", "subject", "severity", "status",
                    "suppressed_by", "window_id", "window_start", "window_end", "reference_hash")
UNDELIVERABLE_COLUMNS = ("dead_letter_id", "dead_letter_topic", "origin", "source_topic", "source_partition",
                         "source_offset", "stage", "error_class", "reason", "value_bytes", "value_sha256", "key_bytes",
                         "delivery_error", "max_message_bytes", "driftline_version")
DETECTION_COLUMNS = ("detection_id", "model", "model_version", "detector", "event_time", "event_index",
                     "change_index", "before_mean", "after_mean", "before_count", "after_count", "bound",
                     "reference_hash")
AUDIT_COLUMNS = ("entry_id", "recorded_at", "event_time", "action", "actor", "model", "model_version", "window_id",
                 "subject_id", "details", "reference_hash", "driftline_version")


def window_rows(features: FeatureSet, report: WindowReport) -> list[list[Any]]:
    """The ``windows`` rows of one report: per feature, one row against the reference, one against the
    previous window (when there is one)."""
    w = report.window
    dataset = report.assessment.dataset
    dataset_severity = dataset.severity if dataset is not None else "ok"
    reference = features.reference()
    previous = report.baseline
    rows = []
    for baseline, stats, expected in (("reference", report.skew, reference),
                                      ("previous", report.drift, previous.counts if previous is not None else None)):
        if stats is None or expected is None:
            continue
        judged = baseline == "reference"
        for name, s in stats.items():
            feature = features.profile.features[name]
            assessed = report.assessment.features[name]
            breaches = assessed.breaches if judged else ()
            labels, edges = _bins(feature)
            rows.append([
                w.model, w.model_version, w.window_id, _time(w.start_ms), _time(w.end_ms), name, feature.kind,
                feature.role, baseline, w.rows, *[getattr(s, c) for c in STAT_COLUMNS],
                assessed.adjusted_pvalues.get("ks_pvalue") if judged else None,
                assessed.adjusted_pvalues.get("chi2_pvalue") if judged else None,
                assessed.severity if judged else "", assessed.insufficient,
                [b.metric for b in breaches], [b.value for b in breaches], [b.threshold for b in breaches],
                [b.severity for b in breaches],
                labels, edges, features.counts(expected, name).tolist(), features.counts(w.counts, name).tolist(),
                w.reference_hash, dataset_severity, "" if judged or previous is None else previous.window_id,
                __version__, "",
            ])
    return rows + version_rows(features, report)


def version_rows(features: FeatureSet, report: WindowReport) -> list[list[Any]]:
    """The ``previous_version`` rows of a window compared with the last window of the version it replaced
    (judged: they carry severity and breaches), on this version's cells."""
    versus = report.versus
    if versus is None:
        return []
    w = report.window
    dataset = versus.assessment.dataset
    rows = []
    for name, s in versus.stats.items():
        feature = features.profile.features[name]
        assessed = versus.assessment.features[name]
        breaches = assessed.breaches
        labels, edges = _bins(feature)
        rows.append([
            w.model, w.model_version, w.window_id, _time(w.start_ms), _time(w.end_ms), name, feature.kind,
            feature.role, "previous_version", w.rows, *[getattr(s, c) for c in STAT_COLUMNS],
            assessed.adjusted_pvalues.get("ks_pvalue"), assessed.adjusted_pvalues.get("chi2_pvalue"),
            assessed.severity, assessed.insufficient,
            [b.metric for b in breaches], [b.value for b in breaches], [b.threshold for b in breaches],
            [b.severity for b in breaches],
            labels, edges, features.counts(versus.expected, name).tolist(), features.counts(w.counts, name).tolist(),
            w.reference_hash, dataset.severity if dataset is not None else "ok", versus.window.window_id,
            __version__, versus.version,
        ])
    return rows


def _bins(feature: NumericProfile | CategoricalProfile) -> tuple[list[str], list[float]]:
    """Labels and right edges of the histogram cells, so SQL can recompute any statistic."""
    if isinstance(feature, CategoricalProfile):
        return [*feature.top, "__other__", "__unseen__", "__missing__"], []
    layout = feature.layout
    if layout is None:
        return ["__present__", "__missing__"], []
    return [], [*layout.edges.tolist()]


def _statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)
