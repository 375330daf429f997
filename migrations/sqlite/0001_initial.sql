-- siirto store, initial schema (SQLite). Keep in step with migrations/postgres/0001_initial.sql:
-- same tables, columns and indexes; only the integer column types differ.
-- Timestamps are unix milliseconds (INTEGER); `state` is the state name and `data` the JSON of
-- the whole state value, which the store does not interpret.

CREATE TABLE migrations (
    id          TEXT PRIMARY KEY NOT NULL,
    source_host TEXT NOT NULL,
    target_host TEXT NOT NULL,
    playbook    TEXT NOT NULL,
    cutover_at  INTEGER NOT NULL,
    state       TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE accounts (
    migration_id  TEXT NOT NULL REFERENCES migrations (id),
    user_name     TEXT NOT NULL,
    main_domain   TEXT NOT NULL,
    contact_email TEXT,
    disk_mb       INTEGER NOT NULL,
    state         TEXT NOT NULL,
    data          TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (migration_id, user_name)
);

CREATE TABLE domains (
    migration_id TEXT NOT NULL REFERENCES migrations (id),
    domain       TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    zone         TEXT NOT NULL,
    state        TEXT NOT NULL,
    data         TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (migration_id, domain),
    FOREIGN KEY (migration_id, user_name) REFERENCES accounts (migration_id, user_name)
);
-- domains_of(migration, user).
CREATE INDEX domains_by_user ON domains (migration_id, user_name);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id     TEXT NOT NULL REFERENCES migrations (id),
    kind             TEXT NOT NULL,
    subject          TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedupe_key       TEXT NOT NULL,
    due_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    done_at          INTEGER,
    -- Scheduling the same step twice is a no-op. Keys are global: callers put the migration id in them.
    UNIQUE (dedupe_key)
);
-- The claim and next_due_at: not-done jobs in claim order (due time, then id).
CREATE INDEX jobs_due ON jobs (done_at, due_at, id);
-- Per-migration listing.
CREATE INDEX jobs_by_migration ON jobs (migration_id, id);

-- Append-only: the store has no API to update or delete an event.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id TEXT NOT NULL REFERENCES migrations (id),
    account      TEXT,
    domain       TEXT,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX events_by_migration ON events (migration_id, id);
CREATE INDEX events_by_account ON events (migration_id, account, id);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id TEXT NOT NULL REFERENCES migrations (id),
    account      TEXT,
    kind         TEXT NOT NULL,
    dedupe_key   TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    recipients   TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    sent_at      INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    -- A notice is a single row, however often it is enqueued.
    UNIQUE (dedupe_key)
);
CREATE INDEX outbox_by_migration ON outbox (migration_id, id);
-- The sender's scan for unsent notices.
CREATE INDEX outbox_unsent ON outbox (sent_at, id);
