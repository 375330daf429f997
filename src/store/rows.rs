//! The store's rows: what each table holds, as read (`*Row`, sqlx's `FromRow`) and as written
//! (`New*`), and the parsing of a row's stored state into the domain's state value.

use crate::domain::{AccountState, DomainState, MigrationState};
use crate::store::StoreError;
#[cfg(doc)]
use crate::store::Tx;

/// One migration: a source host moving to a target host under a playbook.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MigrationRow {
    /// The migration id (a validated `MigrationId` in the engine).
    pub id: String,
    /// The source host's name in the config.
    pub source_host: String,
    /// The target host's name in the config.
    pub target_host: String,
    /// The playbook, as the raw TOML it was planned with.
    pub playbook: String,
    /// The planned cutover time.
    pub cutover_at: i64,
    /// The state name.
    pub state: String,
    /// The whole state value as JSON.
    pub data: String,
    /// When the migration was created.
    pub created_at: i64,
    /// When the row last changed.
    pub updated_at: i64,
}

/// One cPanel account in a migration.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRow {
    /// The migration it belongs to.
    pub migration_id: String,
    /// The cPanel user name (column `user_name`: `user` is reserved in PostgreSQL).
    #[sqlx(rename = "user_name")]
    pub user: String,
    /// The account's main domain.
    pub main_domain: String,
    /// Where customer notices go, if the account has a contact address.
    pub contact_email: Option<String>,
    /// Disk usage in MiB, for planning.
    pub disk_mb: i64,
    /// The customer it belongs to as the plan reconciled it (`customer-<contract id>`, else
    /// `contact-<address>`): notices to a customer are one per key.
    pub customer_key: Option<String>,
    /// The customer's name from the contracts.
    pub customer_name: Option<String>,
    /// The customer's language as the contracts give it.
    pub language: Option<String>,
    /// The reseller it belongs to (its cPanel owner, when not root).
    pub reseller: Option<String>,
    /// The reseller's own contact address, when the source knows it.
    pub reseller_email: Option<String>,
    /// The state name.
    pub state: String,
    /// The whole state value as JSON.
    pub data: String,
    /// When the row last changed.
    pub updated_at: i64,
}

/// One domain of an account in a migration.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DomainRow {
    /// The migration it belongs to.
    pub migration_id: String,
    /// The domain name.
    pub domain: String,
    /// The owning cPanel user (column `user_name`).
    #[sqlx(rename = "user_name")]
    pub user: String,
    /// The DNS zone the domain's records live in.
    pub zone: String,
    /// The state name.
    pub state: String,
    /// The whole state value as JSON.
    pub data: String,
    /// When the row last changed.
    pub updated_at: i64,
}

/// An account on a dedicated IP at the source, and the target address an operator assigned.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DedicatedIpRow {
    /// The migration it belongs to.
    pub migration_id: String,
    /// The cPanel user (column `user_name`).
    #[sqlx(rename = "user_name")]
    pub user: String,
    /// Its dedicated IPv4 address at the source.
    pub source_ip: String,
    /// The target's dedicated IPv4 address an operator assigned, once assigned.
    pub target_ip: Option<String>,
    /// Who assigned it.
    pub assigned_by: Option<String>,
    /// When (unix milliseconds).
    pub assigned_at: Option<i64>,
}

/// A scheduled step of work.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRow {
    /// The job id.
    pub id: i64,
    /// The migration it belongs to.
    pub migration_id: String,
    /// What kind of step (the engine's name for it).
    pub kind: String,
    /// What it acts on (an account, a domain, the migration).
    pub subject: String,
    /// Step parameters as JSON.
    pub payload: String,
    /// The unique key that makes scheduling the same step twice a no-op.
    pub dedupe_key: String,
    /// When the job may run.
    pub due_at: i64,
    /// Failed attempts so far (reset by [`Tx::requeue_job`]).
    pub attempts: i32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the job was finished, if it was.
    pub done_at: Option<i64>,
}

/// A job to schedule with [`Tx::schedule_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The migration it belongs to.
    pub migration_id: String,
    /// What kind of step.
    pub kind: String,
    /// What it acts on.
    pub subject: String,
    /// Step parameters as JSON.
    pub payload: String,
    /// When the job may run.
    pub due_at: i64,
    /// Unique across all jobs (put the migration id in it): a second job with the same key is
    /// not inserted.
    pub dedupe_key: String,
}

/// An entry of the append-only event log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    /// The event id; ids grow in insertion order.
    pub id: i64,
    /// The migration it belongs to.
    pub migration_id: String,
    /// The account it concerns, if any.
    pub account: Option<String>,
    /// The domain it concerns, if any.
    pub domain: Option<String>,
    /// What happened (the engine's event name).
    pub kind: String,
    /// Details as JSON.
    pub detail: String,
    /// Who or what caused it (an operator, the scheduler).
    pub actor: String,
    /// When it happened.
    pub at: i64,
}

/// An event to append with [`Tx::append_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The migration it belongs to.
    pub migration_id: String,
    /// The account it concerns, if any.
    pub account: Option<String>,
    /// The domain it concerns, if any.
    pub domain: Option<String>,
    /// What happened.
    pub kind: String,
    /// Details as JSON.
    pub detail: String,
    /// Who or what caused it.
    pub actor: String,
    /// When it happened.
    pub at: i64,
}

/// A message to a customer, reseller or staff member, first written here and then sent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    /// The notice id.
    pub id: i64,
    /// The migration it belongs to.
    pub migration_id: String,
    /// The account it concerns, if any.
    pub account: Option<String>,
    /// What kind of notice (announce, completion, ...).
    pub kind: String,
    /// The unique key that makes enqueueing the same notice twice a no-op.
    pub dedupe_key: String,
    /// The stable Message-ID, so a resend is recognisably the same message.
    pub message_id: String,
    /// The recipients as a JSON array of addresses.
    pub recipients: String,
    /// The rendered subject.
    pub subject: String,
    /// The rendered body.
    pub body: String,
    /// When it was enqueued.
    pub created_at: i64,
    /// When it was sent, if it was.
    pub sent_at: Option<i64>,
    /// Failed send attempts so far.
    pub attempts: i32,
    /// The error of the last failed send.
    pub last_error: Option<String>,
    /// Delivery attempts started (each recorded before the message was handed over).
    pub delivery_attempts: i32,
    /// When the latest attempt started, while its end (accepted or failed) is not recorded.
    pub delivery_started_at: Option<i64>,
    /// Attempts that followed one whose end was never recorded (a kill, a lost lease): the only
    /// ones that can have delivered the message twice.
    pub resends: i32,
    /// When it was marked skipped (never sent: past its lateness limit).
    pub skipped_at: Option<i64>,
    /// Why it was skipped.
    pub skip_reason: Option<String>,
    /// When the server refused it for good (the error is `last_error`).
    pub failed_at: Option<i64>,
    /// The HTML part, sent with the text as multipart/alternative, if the template has one.
    pub html: Option<String>,
    /// When a delivery-status notification said it did not arrive (after the server took it).
    pub bounced_at: Option<i64>,
    /// What that notification said (its status and diagnostic).
    pub bounce_reason: Option<String>,
}

/// A notice to enqueue with [`Tx::enqueue_notice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotice {
    /// The migration it belongs to.
    pub migration_id: String,
    /// The account it concerns, if any.
    pub account: Option<String>,
    /// What kind of notice.
    pub kind: String,
    /// Unique across all notices (put the migration id in it).
    pub dedupe_key: String,
    /// The stable Message-ID.
    pub message_id: String,
    /// The recipients as a JSON array of addresses.
    pub recipients: String,
    /// The rendered subject.
    pub subject: String,
    /// The rendered body.
    pub body: String,
    /// The rendered HTML part, if the template has one.
    pub html: Option<String>,
    /// When it was enqueued.
    pub created_at: i64,
}

/// Parses a migration row's stored state.
pub fn migration_state(row: &MigrationRow) -> Result<MigrationState, StoreError> {
    serde_json::from_str(&row.data).map_err(|source| StoreError::Unreadable {
        what: "migration",
        key: row.id.clone(),
        source,
    })
}

/// Parses an account row's stored state.
pub fn account_state(row: &AccountRow) -> Result<AccountState, StoreError> {
    serde_json::from_str(&row.data).map_err(|source| StoreError::Unreadable {
        what: "account",
        key: format!("{}/{}", row.migration_id, row.user),
        source,
    })
}

/// Parses a domain row's stored state.
pub fn domain_state(row: &DomainRow) -> Result<DomainState, StoreError> {
    serde_json::from_str(&row.data).map_err(|source| StoreError::Unreadable {
        what: "domain",
        key: format!("{}/{}", row.migration_id, row.domain),
        source,
    })
}
