-- Accounts on a dedicated IP at the source, and the target address an operator assigned
-- (`siirto assign-ip`). Keep in step with migrations/postgres/0004_dedicated_ips.sql.
-- `assigned_by`/`assigned_at` say who gave the address and when (also on the timeline).
CREATE TABLE dedicated_ips (
    migration_id TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    source_ip    TEXT NOT NULL,
    target_ip    TEXT,
    assigned_by  TEXT,
    assigned_at  INTEGER,
    PRIMARY KEY (migration_id, user_name),
    FOREIGN KEY (migration_id, user_name) REFERENCES accounts (migration_id, user_name)
);
-- One target address per account of a migration (NULLs, not yet assigned, do not clash).
CREATE UNIQUE INDEX dedicated_ips_target ON dedicated_ips (migration_id, target_ip);
