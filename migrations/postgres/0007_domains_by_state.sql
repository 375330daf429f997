-- The domains still to lower, zone by zone, without reading the whole migration's domains on
-- every run of the lowering job (50,000 domains in 250 runs would read 12.5 million rows).
CREATE INDEX domains_by_state ON domains (migration_id, state, zone);
