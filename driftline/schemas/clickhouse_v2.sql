-- driftline ClickHouse schema, version 2: applied after version 1 (connectors/clickhouse.py), statement
-- by statement, with the same placeholders. Every statement is idempotent (IF NOT EXISTS), so a store
-- at version 1 is brought to version 2 and applying it again changes nothing. Columns are documented in
-- docs/store.md.

INSERT INTO {database}.schema_version (version, description, applied_at)
SELECT 2, 'issue 9: invalid values, change detections, version switches, undeliverable dead letters', now64(3)
WHERE (SELECT count() FROM {database}.schema_version WHERE version = 2) = 0;
