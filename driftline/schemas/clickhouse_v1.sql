-- driftline ClickHouse schema, version 1. Applied by driftline (connectors/clickhouse.py), statement by
-- statement, with {database}, {ttl_days} and {audit_ttl_days} filled in from the configuration.
-- Every statement is idempotent (IF NOT EXISTS), so applying the schema again changes nothing.
-- Columns are documented in docs/store.md.

CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.schema_version
(
    version     UInt32,
    description String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version;

-- One row per model, model_version, window, feature and baseline (reference = training-serving skew,
-- previous = drift against the window that ended where this one starts). Deterministic window_id;
-- re-inserting the same window replaces it (read with FINAL for exactly one copy), and the version
-- column window_rows makes the fuller copy win: a window recomputed from part of its events after a
-- crash cannot replace the complete one.
CREATE TABLE IF NOT EXISTS {database}.windows
(
    model               LowCardinality(String),
    model_version       LowCardinality(String),
    window_id           FixedString(32),
    window_start        DateTime64(3, 'UTC'),
    window_end          DateTime64(3, 'UTC'),
    feature             LowCardinality(String),
    kind                LowCardinality(String),
    role                LowCardinality(String),
    baseline            LowCardinality(String),
    window_rows         UInt64,
    n                   UInt64,
    n_expected          UInt64,
    missing_rate        Nullable(Float64),
    missing_rate_expected Nullable(Float64),
    missing_rate_shift  Nullable(Float64),
    psi                 Nullable(Float64),
    psi_critical        Nullable(Float64),
    psi_pvalue          Nullable(Float64),
    js_distance         Nullable(Float64),
    ks_statistic        Nullable(Float64),
    ks_error_bound      Nullable(Float64),
    ks_pvalue           Nullable(Float64),
    ks_pvalue_adjusted  Nullable(Float64),
    wasserstein_normed  Nullable(Float64),
    out_of_range_share  Nullable(Float64),
    chi2_pvalue         Nullable(Float64),
    chi2_pvalue_adjusted Nullable(Float64),
    l_infinity          Nullable(Float64),
    unseen_share        Nullable(Float64),
    approval_rate       Nullable(Float64),
    approval_rate_expected Nullable(Float64),
    approval_rate_shift Nullable(Float64),
    severity            LowCardinality(String),
    insufficient_samples Bool,
    breaches            Nested(metric String, value Float64, threshold Float64, severity String),
    bin_labels          Array(String) CODEC(ZSTD(3)),
    bin_edges           Array(Float64) CODEC(ZSTD(3)),
    histogram_expected  Array(UInt64) CODEC(ZSTD(3)),
    histogram_current   Array(UInt64) CODEC(ZSTD(3)),
    reference_hash      LowCardinality(String),
    dataset_severity    LowCardinality(String),
    baseline_window_id  String,
    driftline_version   LowCardinality(String)
)
ENGINE = ReplacingMergeTree(window_rows)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, model_version, feature, baseline, window_start, window_end)
TTL toDateTime(window_start) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Events that arrived after their window had closed: the running count per window (never silently
-- dropped). Each write carries the count so far; the largest wins.
CREATE TABLE IF NOT EXISTS {database}.late_events
(
    model          LowCardinality(String),
    model_version  LowCardinality(String),
    window_id      FixedString(32),
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    late_events    UInt64
)
ENGINE = ReplacingMergeTree(late_events)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, model_version, window_start, window_id)
TTL toDateTime(window_start) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.alerts
(
    alert_id       FixedString(32),
    kind           LowCardinality(String),
    model          LowCardinality(String),
    model_version  LowCardinality(String),
    subject        LowCardinality(String),
    role           LowCardinality(String),
    severity       LowCardinality(String),
    window_id      FixedString(32),
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    breaches       Nested(metric String, value Float64, threshold Float64, severity String),
    reference_hash LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, model_version, window_start, alert_id)
TTL toDateTime(window_start) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.rollback_requests
(
    request_id     FixedString(32),
    model          LowCardinality(String),
    model_version  LowCardinality(String),
    alert_id       FixedString(32),
    subject        LowCardinality(String),
    severity       LowCardinality(String),
    status         LowCardinality(String),
    suppressed_by  LowCardinality(String),
    window_id      FixedString(32),
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    reference_hash LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, model_version, window_start, request_id)
TTL toDateTime(window_start) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- What driftline decided and did, with the evidence. Never updated; an entry written again (a retried
-- batch, a replay) has the same entry_id and collapses into one (read with FINAL).
CREATE TABLE IF NOT EXISTS {database}.audit_log
(
    entry_id       FixedString(32),
    recorded_at    DateTime64(3, 'UTC'),
    event_time     DateTime64(3, 'UTC'),
    action         LowCardinality(String),
    actor          LowCardinality(String),
    model          LowCardinality(String),
    model_version  LowCardinality(String),
    window_id      String,
    subject_id     String,
    details        String CODEC(ZSTD(3)),
    reference_hash LowCardinality(String),
    driftline_version LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, model_version, event_time, entry_id)
TTL toDateTime(event_time) + INTERVAL {audit_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- The Kafka service's checkpoints: after every batch, the offsets it has consumed up to and the state
-- (open windows, join, decisions) those offsets leave; a restart resumes from the newest one.
CREATE TABLE IF NOT EXISTS {database}.checkpoints
(
    group_id    String,
    seq         UInt64,
    written_at  DateTime64(3, 'UTC'),
    offsets     String,
    state       String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY group_id;

INSERT INTO {database}.schema_version (version, description, applied_at)
SELECT 1, 'windows, late_events, alerts, rollback_requests, audit_log, checkpoints', now64(3)
WHERE (SELECT count() FROM {database}.schema_version WHERE version = 1) = 0;
