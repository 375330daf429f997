-- The DNS lock of an account: the leased job (repoint, rollback, TTL restore, verification)
-- that alone may read and write the account's domain states and records until the lock expires
-- with that job's lease. Taken with one conditional UPDATE, so it holds across daemons sharing
-- one database.
ALTER TABLE accounts ADD COLUMN dns_lock_job BIGINT;
ALTER TABLE accounts ADD COLUMN dns_lock_expires_at BIGINT;
-- Every end of a job run releases what it holds by job id.
CREATE INDEX accounts_by_dns_lock ON accounts (dns_lock_job) WHERE dns_lock_job IS NOT NULL;
