-- Retiring the old server (siirto decommission): the playbook's stages of each migration with
-- their dates and where each stands, and what each stage did to each account (done, held by a
-- gate with its evidence, undone). Keep in step with migrations/postgres/0019_decommission.sql.
CREATE TABLE decommission_stages (
    migration_id TEXT NOT NULL REFERENCES migrations (id),
    stage        BIGINT NOT NULL,
    name         TEXT NOT NULL,
    action       TEXT NOT NULL,
    manual       BIGINT NOT NULL,
    due_at       BIGINT NOT NULL,
    -- pending | running | ran (a pass done, accounts held) | waiting (for people) | done
    -- | skipped | undone
    state        TEXT NOT NULL,
    -- JSON: who postponed, skipped or undid it and why, the traffic evidence, the tasks.
    detail       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (migration_id, stage)
);
CREATE TABLE decommission_accounts (
    migration_id TEXT NOT NULL REFERENCES migrations (id),
    stage        BIGINT NOT NULL,
    user_name    TEXT NOT NULL,
    -- done | held | undone | excluded
    state        TEXT NOT NULL,
    -- JSON: the gate's evidence (resolver, name, type, answer) or the operator's reason.
    evidence     TEXT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (migration_id, stage, user_name)
);
