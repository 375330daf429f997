-- The messages the final mail sync copied, by mailbox and Maildir unique name: a later sync of
-- the same account never copies one again, so a message the customer deleted on the new
-- server after it was copied stays deleted.
CREATE TABLE mail_copied (
    migration_id TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    mailbox      TEXT NOT NULL,
    uniq         TEXT NOT NULL,
    copied_at    BIGINT NOT NULL,
    PRIMARY KEY (migration_id, user_name, mailbox, uniq),
    FOREIGN KEY (migration_id, user_name) REFERENCES accounts (migration_id, user_name)
);
