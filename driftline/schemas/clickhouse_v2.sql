-- driftline ClickHouse schema, version 2: applied after version 1 (connectors/clickhouse.py), statement
-- by statement, with the same placeholders. Every statement is idempotent (IF NOT EXISTS), so a store
-- at version 1 is brought to version 2 and applying it again changes nothing. Columns are documented in
-- docs/store.md.

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
