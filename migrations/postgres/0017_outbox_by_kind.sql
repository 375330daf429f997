-- The metrics' count of notices by kind and result (`Store::gauges`, every scrape) reads this
-- index alone instead of the outbox's rows with their texts. Keep in step with
-- migrations/sqlite/0017_outbox_by_kind.sql.
CREATE INDEX outbox_by_kind ON outbox (migration_id, kind, skipped_at, failed_at, bounced_at, sent_at);
