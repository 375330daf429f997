-- The event log's hash chain (siirto audit verify). Each event gets its place in its
-- migration's chain (chain_seq) and a hash over the previous event's hash and its own content
-- when its transaction commits; event_chain holds each migration's last place and hash, so
-- an edited, removed or reordered row, or a cut-off tail, is found. A commit takes the
-- migration's chain row last, with an upsert, which serializes the chaining per migration
-- without a lock that could wait on another.
-- Keep in step with migrations/sqlite/0018_event_chain.sql.
ALTER TABLE events ADD COLUMN chain_seq BIGINT;
ALTER TABLE events ADD COLUMN hash TEXT;
CREATE TABLE event_chain (
    migration_id TEXT PRIMARY KEY REFERENCES migrations (id),
    last_seq     BIGINT NOT NULL,
    last_hash    TEXT NOT NULL
);
CREATE UNIQUE INDEX events_by_chain ON events (migration_id, chain_seq);
-- Events written before the chain existed, chained by Store::connect once.
CREATE INDEX events_unchained ON events (migration_id, id) WHERE hash IS NULL;
