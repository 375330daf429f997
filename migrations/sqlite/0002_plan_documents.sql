-- The reviewable plan of each migration (inventory, classification, reconciliation, schedule)
-- as one JSON document, kept apart from the migrations table so the daemon's per-job reads of
-- a migration stay small. Planning the same source again compares against the latest one.
CREATE TABLE plan_documents (
    migration_id TEXT PRIMARY KEY NOT NULL REFERENCES migrations (id),
    source_host  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    document     TEXT NOT NULL
);

CREATE INDEX plan_documents_by_source ON plan_documents (source_host, created_at);
