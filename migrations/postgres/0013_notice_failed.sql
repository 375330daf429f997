-- A notice the server refused for good (5xx: no such mailbox): kept, marked failed with the
-- server's words; customer service is told so that someone calls the customer.
ALTER TABLE outbox ADD COLUMN failed_at BIGINT;
