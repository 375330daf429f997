-- Customer service's search (`siirto::search`): every term a search box may be given for an
-- account, one row per (field, term, account), so each probe is an exact or prefix range lookup
-- of the primary key and never a scan. `field` is user, email, customer (the name's words joined
-- by spaces, and each word of two characters or more), name_pair (two words of the name, in
-- either order: a query of several words), contract, reseller or domain; every term is
-- lowercase. The store writes the rows in the transaction that writes their accounts and
-- domains. Keep in step with migrations/postgres/0016_search_terms.sql: same
-- tables, columns and keys; SQLite compares TEXT bytewise (BINARY) already, as the byte-order
-- prefix range needs, and stores the table in its key (WITHOUT ROWID) instead of twice.
CREATE TABLE search_terms (
    term         TEXT NOT NULL,
    field        TEXT NOT NULL,
    migration_id TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    PRIMARY KEY (field, term, migration_id, user_name)
) WITHOUT ROWID;

-- The migrations recorded before this table existed: the store writes their terms when it next
-- connects (`Store::connect`), in Rust, because the words of a name and the lowercasing of
-- non-ASCII letters (SQLite's lower() knows only ASCII) must be exactly those of new rows.
CREATE TABLE search_terms_backfill (
    migration_id TEXT PRIMARY KEY NOT NULL
);
INSERT INTO search_terms_backfill (migration_id) SELECT id FROM migrations;
