-- Leases on the database's clock, and notices' delivery attempts.
--
-- A claim writes a random token with the lease: a lease is (job, owner, token), valid while
-- lease_expires_at (set from the database's own clock, never a daemon's) lies ahead. The
-- holder renews it while its step runs; a re-claim after expiry gets a new token, so the old
-- holder's lease is dead even when the owner name is the same. A run that ends (finished,
-- retried, rescheduled, released) clears only the expiry: the owner and token that remain say
-- whose run ended it.
ALTER TABLE jobs ADD COLUMN lease_token BIGINT;
-- Each delivery attempt of a notice is recorded before the message is handed over; its
-- acceptance (the server's 250) sets sent_at. An attempt whose end was never recorded (a kill,
-- a lost lease) makes the next attempt a resend, counted here and logged as an event.
ALTER TABLE outbox ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN delivery_started_at BIGINT;
ALTER TABLE outbox ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
-- The restart of a daemon takes back what its owner name holds.
CREATE INDEX jobs_by_lease_owner ON jobs (lease_owner) WHERE lease_expires_at IS NOT NULL;
-- The transfer steps read only the accounts that want a transfer or are in one, not a whole
-- migration of 10,000 accounts each time they build or poll a session.
CREATE INDEX accounts_by_state ON accounts (migration_id, state, user_name);
