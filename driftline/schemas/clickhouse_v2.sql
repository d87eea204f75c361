-- driftline ClickHouse schema, version 2: applied after version 1 (connectors/clickhouse.py), statement
-- by statement, with the same placeholders. Every statement is idempotent (IF NOT EXISTS), so a store
-- at version 1 is brought to version 2 and applying it again changes nothing. Columns are documented in
-- docs/store.md.

-- Version switches (issue 9): a model version appearing or disappearing from traffic
-- (driftline/engine/versions.py), and the baseline a window was compared with when it is another version
-- of the model (windows.baseline = 'previous_version'; alerts.baseline likewise).
CREATE TABLE IF NOT EXISTS {database}.version_changes
(
    change_id         FixedString(32),
    kind              LowCardinality(String),
    model             LowCardinality(String),
    from_version      LowCardinality(String),
    to_version        LowCardinality(String),
    window_id         FixedString(32),
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC'),
    last_seen         DateTime64(3, 'UTC'),
    reference_hash    LowCardinality(String),
    driftline_version LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, window_end, change_id)
TTL toDateTime(window_start) + INTERVAL {audit_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

ALTER TABLE {database}.windows ADD COLUMN IF NOT EXISTS baseline_version LowCardinality(String) DEFAULT '';

ALTER TABLE {database}.alerts ADD COLUMN IF NOT EXISTS baseline LowCardinality(String) DEFAULT 'reference';

-- Invalid values (issue 9): per window and numeric column, the values that are ±inf or outside the
-- column's valid range (reference profile `valid_range`), counted apart and in no histogram cell, and
-- their share of the window's non-missing values. Older rows read 0 / NULL.
ALTER TABLE {database}.windows ADD COLUMN IF NOT EXISTS invalid UInt64 DEFAULT 0 AFTER out_of_range_share;
ALTER TABLE {database}.windows ADD COLUMN IF NOT EXISTS invalid_share Nullable(Float64) AFTER invalid;

-- Undeliverable dead letters (issue 9): a bad event whose dead letter the broker refused for what it is
-- (too large for the dead-letter topic even cut to its max.message.bytes, invalid for the topic), twice,
-- is recorded here instead, so that its partition goes on. One row per bad event, by a deterministic id
-- (a replayed batch writes the same row); no payload, only where it came from, why it was bad and why it
-- could not be written. No TTL: there is no time column, and the rows are few.
CREATE TABLE IF NOT EXISTS {database}.undeliverable_dead_letters
(
    dead_letter_id    FixedString(32),
    dead_letter_topic String,
    origin            String,
    source_topic      String,
    source_partition  Int32,
    source_offset     Int64,
    stage             LowCardinality(String),
    error_class       LowCardinality(String),
    reason            String,
    value_bytes       Nullable(UInt64),
    value_sha256      String,
    key_bytes         Nullable(UInt64),
    delivery_error    String,
    max_message_bytes UInt64,
    driftline_version LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY dead_letter_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Change detections (issue 9): the score change watch's early warnings (driftline.engine.changewatch),
-- one row per detection; detection_id is a hash of model, version, detector and the event index at
-- which it fired, so a replay or a restart writes the same row again (ReplacingMergeTree keeps one).
CREATE TABLE IF NOT EXISTS {database}.change_detections
(
    detection_id   FixedString(32),
    model          LowCardinality(String),
    model_version  LowCardinality(String),
    detector       LowCardinality(String),
    event_time     DateTime64(3, 'UTC'),
    event_index    UInt64,
    change_index   UInt64,
    before_mean    Float64,
    after_mean     Float64,
    before_count   UInt64,
    after_count    UInt64,
    bound          Float64,
    reference_hash LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, model_version, event_time, detection_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

INSERT INTO {database}.schema_version (version, description, applied_at)
SELECT 2, 'issue 9: invalid values, change detections, version switches, undeliverable dead letters', now64(3)
WHERE (SELECT count() FROM {database}.schema_version WHERE version = 2) = 0;
