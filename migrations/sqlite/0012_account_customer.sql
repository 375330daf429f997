-- Who an account belongs to, as the plan reconciled it: notices to a customer (advance, start)
-- are one per customer, listing all of their accounts, in their language. The key is the
-- contract's customer id (`customer-<id>`), else the account's contact address
-- (`contact-<address>`); NULL for an account no notice can reach.
ALTER TABLE accounts ADD COLUMN customer_key TEXT;
ALTER TABLE accounts ADD COLUMN customer_name TEXT;
ALTER TABLE accounts ADD COLUMN language TEXT;
CREATE INDEX accounts_by_customer ON accounts (migration_id, customer_key);
