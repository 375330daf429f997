-- The domains of one zone: what a repoint of one account's zone must know of the zone's
-- other tracked domains, without reading the whole migration's domains.
CREATE INDEX domains_by_zone ON domains (migration_id, zone);
