-- A notice's HTML part (NULL: plain text only), sent with the text as multipart/alternative.
ALTER TABLE outbox ADD COLUMN html TEXT;
-- A delivery-status notification (RFC 3464) for the notice arrived at the bounce mailbox after
-- the server had accepted it: the notice did not reach its reader; customer service is told.
ALTER TABLE outbox ADD COLUMN bounced_at BIGINT;
ALTER TABLE outbox ADD COLUMN bounce_reason TEXT;
-- The reseller an account belongs to (its cPanel owner when not root) and the reseller's own
-- contact address: with notices.reseller_customers = "reseller" or "both" the reseller gets a
-- roll-up of its customers instead of (or besides) notices to each of them.
ALTER TABLE accounts ADD COLUMN reseller TEXT;
ALTER TABLE accounts ADD COLUMN reseller_email TEXT;
-- Notices to one recipient go out in the order they were written: a send looks for an earlier
-- unsent notice to the same recipients.
CREATE INDEX outbox_by_recipients ON outbox (migration_id, recipients, id);
