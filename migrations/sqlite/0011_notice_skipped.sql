-- A notice past its lateness limit (an advance notice that would arrive too close to the
-- cutover) is never sent: it is kept, marked skipped, with why, so that staff can see who was
-- not told in time.
ALTER TABLE outbox ADD COLUMN skipped_at BIGINT;
ALTER TABLE outbox ADD COLUMN skip_reason TEXT;
