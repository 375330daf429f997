//! The pure core: migration, account and domain state machines, their events and transitions.
//!
//! Nothing here does I/O or reads a clock: every transition takes `now` and returns either the
//! new state or a [`Refused`] explaining why the event is not allowed in that state. The
//! invariants of DESIGN.md §3 live here, so no caller can break them:
//!
//! - a domain is repointed only after its account was verified on the target
//!   ([`DomainEvent::Repointed`] is refused unless the domain is [`DomainState::VerifiedOnTarget`]);
//! - the cutover never starts before the TTL gate (`lowered_at + old_ttl + margin`, per record,
//!   and the migration's gate is the latest of them);
//! - a completion notice is queued once: [`AccountEvent::NoticeQueued`] is accepted only from
//!   [`AccountState::Switched`], and the outbox row carries [`completion_notice_key`] as its
//!   unique dedupe key;
//! - no mail is left behind: with the playbook's final mail sync on, an account is
//!   [`AccountState::Done`] only after a delta sync of its mail was followed by a read of the
//!   source's mail log showing no local delivery since that sync began
//!   ([`AccountEvent::MailChecked`]); a delivery after it syncs again, at most
//!   [`AccountPolicy::max_mail_syncs`] times, then the account is held with the evidence.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::{AccountName, DomainName, MigrationId};

/// A point in time (UTC). Stored as unix milliseconds.
pub type Timestamp = DateTime<Utc>;

/// Converts unix milliseconds (as stored) to a timestamp; out-of-range values clamp to the epoch.
pub fn from_millis(ms: i64) -> Timestamp {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Converts a timestamp to unix milliseconds (as stored).
pub fn to_millis(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

fn add(at: Timestamp, duration: Duration) -> Timestamp {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Why an event was refused in a state. Refusals are expected outcomes, not bugs: the engine
/// records them and leaves the state as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} refused in state {state}: {reason}")]
pub struct Refused {
    /// The state the subject was in.
    pub state: &'static str,
    /// The event that was refused.
    pub event: &'static str,
    /// Why.
    pub reason: String,
}

fn refused(state: &'static str, event: &'static str, reason: impl Into<String>) -> Refused {
    Refused { state, event, reason: reason.into() }
}

/// How long the cutover of a record must wait after its TTL was lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// Added to the old TTL, for resolvers that round up or clocks that drift.
    pub margin: Duration,
    /// If set, the wait is this instead of `old_ttl + margin`: for tests and the demo only. The
    /// playbook says so and the engine logs it loudly every time a gate is computed with it.
    pub wait_override: Option<Duration>,
}

impl GatePolicy {
    /// The moment a record lowered at `lowered_at` with a previous TTL of `old_ttl` seconds may
    /// change: every resolver that cached the old answer has let it expire by then.
    pub fn opens_at(&self, lowered_at: Timestamp, old_ttl: u32) -> Timestamp {
        let wait = match self.wait_override {
            Some(wait) => wait,
            None => Duration::from_secs(u64::from(old_ttl)) + self.margin,
        };
        add(lowered_at, wait)
    }

    /// When every resolver has let an external domain's old records go, counted from `at` (its
    /// propagation): the TTL the plan observed at the customer's DNS host plus the margin, or
    /// [`EXTERNAL_RECORDS_ASSUMED_TTL`] where none was observed.
    pub fn external_records_expire_at(&self, at: Timestamp, observed_ttl: Option<u32>) -> Timestamp {
        self.opens_at(at, observed_ttl.unwrap_or(EXTERNAL_RECORDS_ASSUMED_TTL))
    }
}

/// The TTL assumed for an external domain's old records when the plan observed none: cPanel's
/// default zone TTL, 4 hours.
pub const EXTERNAL_RECORDS_ASSUMED_TTL: u32 = 14_400;

// ---------------------------------------------------------------------------------------------
// Migration

/// Where a migration stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MigrationState {
    /// Inventoried and recorded; nothing has been changed anywhere yet.
    Planned {
        /// When the plan was recorded.
        planned_at: Timestamp,
    },
    /// Someone reviewed the plan and approved it; it can be started.
    Approved {
        /// Who approved it.
        by: String,
        /// When.
        at: Timestamp,
    },
    /// The operator started it; the daemon lowers the TTLs next.
    Started {
        /// When the operator started it.
        started_at: Timestamp,
    },
    /// TTLs are lowered; waiting for the gate to open.
    TtlLowered {
        /// When the last TTL was lowered.
        lowered_at: Timestamp,
        /// When the latest per-record gate opens.
        gate_opens_at: Timestamp,
    },
    /// The gate is open: accounts are transferred and their domains cut over one by one.
    Transferring {
        /// When the cutover began.
        since: Timestamp,
    },
    /// Every account arrived or is held for an operator.
    CutOver {
        /// When the last account settled.
        at: Timestamp,
        /// Accounts that arrived (done).
        arrived: u32,
        /// Accounts held for an operator.
        held: u32,
    },
    /// Final: every account arrived, every changed record has its original TTL again, and
    /// every domain on someone else's DNS shows the target (DESIGN.md §3). Nothing more
    /// happens unless an operator rolls an account back.
    Settled {
        /// When the last domain became final.
        at: Timestamp,
        /// Accounts moved.
        accounts: u32,
        /// Domains, all in a final state (TTL restored, propagated or not repointed).
        domains: u32,
    },
    /// Paused by an operator; resumes into the state it was paused in.
    Paused {
        /// The state to resume into.
        previous: Box<MigrationState>,
        /// When it was paused.
        at: Timestamp,
    },
    /// Aborted by an operator; nothing further happens.
    Aborted {
        /// When.
        at: Timestamp,
        /// Why, as the operator gave it.
        reason: String,
    },
}

impl MigrationState {
    /// The state's name as stored and shown.
    pub fn name(&self) -> &'static str {
        match self {
            MigrationState::Planned { .. } => "planned",
            MigrationState::Approved { .. } => "approved",
            MigrationState::Started { .. } => "started",
            MigrationState::TtlLowered { .. } => "ttl_lowered",
            MigrationState::Transferring { .. } => "transferring",
            MigrationState::CutOver { .. } => "cut_over",
            MigrationState::Settled { .. } => "settled",
            MigrationState::Paused { .. } => "paused",
            MigrationState::Aborted { .. } => "aborted",
        }
    }

    /// True if the daemon may perform work for this migration.
    pub fn is_active(&self) -> bool {
        match self {
            MigrationState::Started { .. }
            | MigrationState::TtlLowered { .. }
            | MigrationState::Transferring { .. } => true,
            MigrationState::Planned { .. }
            | MigrationState::Approved { .. }
            | MigrationState::CutOver { .. }
            | MigrationState::Settled { .. }
            | MigrationState::Paused { .. }
            | MigrationState::Aborted { .. } => false,
        }
    }
}

/// Something that happened to a migration as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MigrationEvent {
    /// Someone reviewed the plan and approved it.
    Approved {
        /// Who.
        by: String,
    },
    /// The operator started the migration.
    Started,
    /// Every record that will change has its short TTL; the latest gate opens at `gate_opens_at`.
    TtlLowered {
        /// The latest per-record gate.
        gate_opens_at: Timestamp,
    },
    /// The TTL gate was found open; the cutover begins.
    GateOpened,
    /// Every account arrived or is held.
    AccountsSettled {
        /// Accounts that arrived.
        arrived: u32,
        /// Accounts held for an operator.
        held: u32,
    },
    /// Every account arrived and every domain is in its final state.
    Settled {
        /// Accounts moved.
        accounts: u32,
        /// Domains.
        domains: u32,
    },
    /// An operator retried a held account of a cut-over migration, or rolled one back in a
    /// settled one; the cutover goes on for it.
    Reopened,
    /// An operator paused the migration.
    Paused,
    /// An operator resumed the migration.
    Resumed,
    /// An operator aborted the migration.
    Aborted {
        /// Why.
        reason: String,
    },
}

impl MigrationEvent {
    /// The event's name as stored in the event log.
    pub fn name(&self) -> &'static str {
        match self {
            MigrationEvent::Approved { .. } => "migration_approved",
            MigrationEvent::Started => "migration_started",
            MigrationEvent::TtlLowered { .. } => "ttl_lowered",
            MigrationEvent::GateOpened => "gate_opened",
            MigrationEvent::AccountsSettled { .. } => "accounts_settled",
            MigrationEvent::Settled { .. } => "migration_settled",
            MigrationEvent::Reopened => "migration_reopened",
            MigrationEvent::Paused => "migration_paused",
            MigrationEvent::Resumed => "migration_resumed",
            MigrationEvent::Aborted { .. } => "migration_aborted",
        }
    }

    /// What happened, in words, for the event log's timeline (`siirto log`).
    pub fn describe(&self) -> String {
        match self {
            MigrationEvent::Approved { by } => format!("plan approved by {by}"),
            MigrationEvent::Started => "migration started".to_owned(),
            MigrationEvent::TtlLowered { gate_opens_at } => {
                format!(
                    "TTLs lowered; the cutover gate opens at {}",
                    gate_opens_at.format("%Y-%m-%d %H:%M:%SZ")
                )
            }
            MigrationEvent::GateOpened => "TTL gate open: the cutover begins".to_owned(),
            MigrationEvent::AccountsSettled { arrived, held: 0 } => {
                format!("cut over: every account arrived ({arrived})")
            }
            MigrationEvent::AccountsSettled { arrived, held } => {
                format!("cut over: {arrived} account(s) arrived, {held} held for an operator")
            }
            MigrationEvent::Settled { accounts, domains } => {
                format!("settled: every account arrived ({accounts}) and every domain is final ({domains})")
            }
            MigrationEvent::Reopened => "reopened for a retried or rolled-back account".to_owned(),
            MigrationEvent::Paused => "migration paused".to_owned(),
            MigrationEvent::Resumed => "migration resumed".to_owned(),
            MigrationEvent::Aborted { reason } => format!("migration aborted: {reason}"),
        }
    }
}

/// Applies `event` to a migration in `state` at `now`.
pub fn migration_transition(
    state: &MigrationState,
    event: &MigrationEvent,
    now: Timestamp,
) -> Result<MigrationState, Refused> {
    use MigrationEvent as E;
    use MigrationState as S;
    let refuse = |reason: &str| Err(refused(state.name(), event.name(), reason));
    match (state, event) {
        (S::Planned { .. }, E::Approved { by }) => {
            if by.trim().is_empty() {
                return refuse("an approval must say who approved");
            }
            Ok(S::Approved { by: by.clone(), at: now })
        }
        (S::Approved { .. }, E::Started) => Ok(S::Started { started_at: now }),
        (S::Started { .. }, E::TtlLowered { gate_opens_at }) => {
            Ok(S::TtlLowered { lowered_at: now, gate_opens_at: *gate_opens_at })
        }
        (S::TtlLowered { gate_opens_at, .. }, E::GateOpened) => {
            if now < *gate_opens_at {
                return refuse(&format!(
                    "the TTL gate opens at {gate_opens_at}; the old TTL has not expired everywhere yet"
                ));
            }
            Ok(S::Transferring { since: now })
        }
        (S::CutOver { .. } | S::Settled { .. }, E::Reopened) => Ok(S::Transferring { since: now }),
        (S::CutOver { held: 0, .. }, E::Settled { accounts, domains }) => {
            Ok(S::Settled { at: now, accounts: *accounts, domains: *domains })
        }
        (S::CutOver { .. }, E::Settled { .. }) => refuse("accounts are held for an operator"),
        (S::Transferring { .. }, E::AccountsSettled { arrived, held }) => {
            Ok(S::CutOver { at: now, arrived: *arrived, held: *held })
        }
        (S::Started { .. } | S::TtlLowered { .. } | S::Transferring { .. }, E::Paused) => {
            Ok(S::Paused { previous: Box::new(state.clone()), at: now })
        }
        (S::Paused { previous, .. }, E::Resumed) => Ok((**previous).clone()),
        (
            S::Planned { .. }
            | S::Approved { .. }
            | S::Started { .. }
            | S::TtlLowered { .. }
            | S::Transferring { .. }
            | S::Paused { .. },
            E::Aborted { reason },
        ) => Ok(S::Aborted { at: now, reason: reason.clone() }),
        (S::Planned { .. }, E::Started) => refuse("the plan has not been approved (siirto approve)"),
        (S::Planned { .. }, _) => refuse("the migration has not been started"),
        (S::Approved { .. }, _) => refuse("the migration has not been started"),
        (S::Paused { .. }, _) => refuse("the migration is paused"),
        (S::Aborted { .. }, _) => refuse("the migration was aborted"),
        (S::CutOver { .. }, _) => refuse("the migration is already cut over"),
        (S::Settled { .. }, _) => refuse("the migration is settled"),
        (S::Started { .. } | S::TtlLowered { .. } | S::Transferring { .. }, _) => {
            refuse("not the next step of this migration")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Account

/// Where one cPanel account stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AccountState {
    /// On a dedicated IP at the source: not sent until an operator assigns the target IP
    /// (`siirto assign-ip`). It waits visibly; it is neither failed nor held, and a migration
    /// is not cut over while an account waits here.
    AwaitingTargetIp {
        /// Its dedicated address at the source.
        source_ip: Ipv4Addr,
    },
    /// Not yet sent to the target.
    Pending,
    /// Enqueued in a transfer session on the target.
    Queued {
        /// The transfer session id.
        session: String,
        /// Which attempt this is, from 1.
        attempt: u32,
    },
    /// The session log shows the account copied to the target (TRANSFER queue).
    Copied {
        /// The transfer session id.
        session: String,
        /// Which attempt this is, from 1.
        attempt: u32,
    },
    /// The session log shows the account restored on the target (RESTORE queue).
    Restored {
        /// When it was seen restored.
        at: Timestamp,
    },
    /// Its sites answer on the target as on the source.
    Verified {
        /// When.
        at: Timestamp,
    },
    /// Every domain is repointed and the nameservers serve the new address.
    Switched {
        /// When.
        at: Timestamp,
    },
    /// The completion notice is in the outbox.
    Notified {
        /// The outbox row.
        notice_id: i64,
        /// When it was queued.
        at: Timestamp,
        /// When its domains were switched (and their mail routed to the target); `None` in
        /// states stored before this field existed.
        #[serde(default)]
        switched_at: Option<Timestamp>,
    },
    /// Switched and told; its mail is synced from the source once the old TTL has passed since
    /// the switch (the `sync_mail` step), because mail may have landed on the source until every
    /// resolver saw the new MX and A records.
    SyncingMail {
        /// When its domains were switched and its mail routed to the target.
        switched_at: Timestamp,
        /// Delta syncs done so far.
        syncs: u32,
    },
    /// A delta sync ran; the source's mail log is read next for local deliveries since it began
    /// (the `check_mail` step).
    CheckingMail {
        /// When its domains were switched and its mail routed to the target.
        switched_at: Timestamp,
        /// Delta syncs done so far (at least one).
        syncs: u32,
        /// When the last sync began.
        last_sync_started_at: Timestamp,
    },
    /// Arrived: moved, switched and told.
    Done {
        /// When.
        at: Timestamp,
    },
    /// The last transfer attempt failed; it will be tried again in a new session.
    Failed {
        /// The attempt that failed.
        attempt: u32,
        /// The failure as the target reported it.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// Needs an operator; nothing happens to it until `siirto retry`.
    Held {
        /// Why, with the evidence.
        reason: String,
        /// When.
        at: Timestamp,
        /// Where a retry resumes: the state it was held in (a transfer stage resumes from the
        /// start, a later stage repeats that stage).
        resume: Box<AccountState>,
    },
    /// An operator pointed its records (or one domain's) back at the source; nothing happens to
    /// it until `siirto retry`, which verifies it on the target again.
    RolledBack {
        /// Why, as the operator gave it.
        reason: String,
        /// The one domain rolled back, or `None` for the whole account.
        domain: Option<String>,
        /// When.
        at: Timestamp,
    },
}

impl AccountState {
    /// The state's name as stored and shown.
    pub fn name(&self) -> &'static str {
        match self {
            AccountState::AwaitingTargetIp { .. } => "awaiting_target_ip",
            AccountState::Pending => "pending",
            AccountState::Queued { .. } => "queued",
            AccountState::Copied { .. } => "copied",
            AccountState::Restored { .. } => "restored",
            AccountState::Verified { .. } => "verified",
            AccountState::Switched { .. } => "switched",
            AccountState::Notified { .. } => "notified",
            AccountState::SyncingMail { .. } => "syncing_mail",
            AccountState::CheckingMail { .. } => "checking_mail",
            AccountState::Done { .. } => "done",
            AccountState::Failed { .. } => "failed",
            AccountState::Held { .. } => "held",
            AccountState::RolledBack { .. } => "rolled_back",
        }
    }

    /// True when nothing more happens without an operator: done or held.
    pub fn is_settled(&self) -> bool {
        match self {
            AccountState::Done { .. } | AccountState::Held { .. } | AccountState::RolledBack { .. } => true,
            AccountState::AwaitingTargetIp { .. }
            | AccountState::Pending
            | AccountState::Queued { .. }
            | AccountState::Copied { .. }
            | AccountState::Restored { .. }
            | AccountState::Verified { .. }
            | AccountState::Switched { .. }
            | AccountState::Notified { .. }
            | AccountState::SyncingMail { .. }
            | AccountState::CheckingMail { .. }
            | AccountState::Failed { .. } => false,
        }
    }

    /// The names of the states that [`AccountState::wants_transfer`], for the store's queries.
    pub const WANTING_TRANSFER: [&'static str; 2] = ["pending", "failed"];
    /// The names of the states of an account in a transfer session (`queued`, `copied`).
    pub const IN_TRANSFER: [&'static str; 2] = ["queued", "copied"];

    /// True when the account waits to be (re)sent in a transfer session.
    pub fn wants_transfer(&self) -> bool {
        match self {
            AccountState::Pending | AccountState::Failed { .. } => true,
            AccountState::AwaitingTargetIp { .. }
            | AccountState::Queued { .. }
            | AccountState::Copied { .. }
            | AccountState::Restored { .. }
            | AccountState::Verified { .. }
            | AccountState::Switched { .. }
            | AccountState::Notified { .. }
            | AccountState::SyncingMail { .. }
            | AccountState::CheckingMail { .. }
            | AccountState::Done { .. }
            | AccountState::Held { .. }
            | AccountState::RolledBack { .. } => false,
        }
    }
}

/// What the source's mail log showed about an account's domains after a delta sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailEvidence {
    /// Local deliveries (into a mailbox on the source) since the mail routing switch.
    pub delivered_since_switch: u32,
    /// Of those, deliveries since the last delta sync began: mail the sync may have missed.
    pub delivered_since_last_sync: u32,
    /// When the last local delivery since the switch was logged.
    pub last_delivery_at: Option<Timestamp>,
}

/// Something that happened to one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AccountEvent {
    /// An operator assigned the target's dedicated address `ip` to an account waiting for one
    /// (who did it is the event's actor).
    TargetIpAssigned {
        /// The target's dedicated IPv4 address.
        ip: Ipv4Addr,
    },
    /// The account was enqueued in transfer session `session` on the target.
    Enqueued {
        /// The session id.
        session: String,
    },
    /// The session log shows `success-item` in the TRANSFER queue.
    Copied,
    /// The session log shows `success-item` in the RESTORE queue.
    Restored,
    /// The session log shows `failed-item`.
    TransferFailed {
        /// TRANSFER or RESTORE.
        queue: String,
        /// `msg.failure` as logged.
        message: String,
    },
    /// Every domain answered on the target as expected.
    VerifiedOnTarget,
    /// A domain did not answer on the target as on the source.
    VerificationFailed {
        /// The evidence: what the source and the target answered.
        evidence: String,
    },
    /// Every domain was repointed and verified through the resolver.
    DomainsSwitched,
    /// The completion notice was written to the outbox as row `notice_id`.
    NoticeQueued {
        /// The outbox row.
        notice_id: i64,
    },
    /// The completion notice was sent.
    NoticeSent,
    /// A delta sync of the account's mail (and, per playbook, its web root) from the source to
    /// the target ran to completion.
    MailSynced {
        /// When it began.
        started_at: Timestamp,
        /// What else it synced, as `source → target` paths (the web root, per playbook).
        synced: Vec<String>,
        /// The messages it copied, by mailbox (a folder path under the account's `mail/`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        copied: BTreeMap<String, u32>,
        /// Messages new on the source that the target held already (read, flagged or moved
        /// there by the customer), so not copied.
        #[serde(default)]
        already_there: u32,
    },
    /// The source's mail log was read for local deliveries to the account's domains.
    MailChecked {
        /// What it showed.
        evidence: MailEvidence,
    },
    /// A step failed beyond its retry budget; an operator must look.
    Held {
        /// Why, with the error.
        reason: String,
    },
    /// An operator asked to try a held account again from the start.
    RetryRequested,
    /// An operator rolled the account (or one of its domains) back to the source.
    RolledBack {
        /// Why.
        reason: String,
        /// The one domain rolled back, or `None` for the whole account.
        domain: Option<String>,
    },
}

impl AccountEvent {
    /// The event's name as stored in the event log.
    pub fn name(&self) -> &'static str {
        match self {
            AccountEvent::TargetIpAssigned { .. } => "target_ip_assigned",
            AccountEvent::Enqueued { .. } => "account_enqueued",
            AccountEvent::Copied => "account_copied",
            AccountEvent::Restored => "account_restored",
            AccountEvent::TransferFailed { .. } => "account_transfer_failed",
            AccountEvent::VerifiedOnTarget => "account_verified",
            AccountEvent::VerificationFailed { .. } => "account_verification_failed",
            AccountEvent::DomainsSwitched => "account_switched",
            AccountEvent::NoticeQueued { .. } => "notice_queued",
            AccountEvent::NoticeSent => "notice_sent",
            AccountEvent::MailSynced { .. } => "mail_synced",
            AccountEvent::MailChecked { .. } => "mail_checked",
            AccountEvent::Held { .. } => "account_held",
            AccountEvent::RetryRequested => "account_retry_requested",
            AccountEvent::RolledBack { .. } => "account_rolled_back",
        }
    }

    /// What happened, in words, for the event log's timeline (`siirto log`).
    pub fn describe(&self) -> String {
        match self {
            AccountEvent::TargetIpAssigned { ip } => format!("dedicated address {ip} on the target assigned"),
            AccountEvent::Enqueued { session } => format!("queued for transfer in session {session}"),
            AccountEvent::Copied => "copied to the target".to_owned(),
            AccountEvent::Restored => "restored on the target".to_owned(),
            AccountEvent::TransferFailed { queue, message } => {
                format!("transfer failed in the {queue} queue: {message}")
            }
            AccountEvent::VerifiedOnTarget => {
                "verified on the target: its sites answer as on the source".to_owned()
            }
            AccountEvent::VerificationFailed { evidence } => {
                format!("verification on the target failed: {evidence}")
            }
            AccountEvent::DomainsSwitched => "every domain repointed and verified".to_owned(),
            AccountEvent::NoticeQueued { .. } => "completion notice queued".to_owned(),
            AccountEvent::NoticeSent => "completion notice sent".to_owned(),
            AccountEvent::MailSynced { copied, already_there, .. } => format!(
                "mail delta-synced from the source: {} message(s) copied, {already_there} already there",
                copied.values().sum::<u32>()
            ),
            AccountEvent::MailChecked { evidence } => format!(
                "source mail log checked: {} delivery(ies) since the routing switch, {} since the last sync",
                evidence.delivered_since_switch, evidence.delivered_since_last_sync
            ),
            AccountEvent::Held { reason } => format!("held for an operator: {reason}"),
            AccountEvent::RetryRequested => "retry requested".to_owned(),
            AccountEvent::RolledBack { reason, domain } => match domain {
                Some(domain) => format!("{domain} rolled back to the source: {reason}"),
                None => format!("rolled back to the source: {reason}"),
            },
        }
    }
}

/// The limits an account's transitions respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPolicy {
    /// Transfer attempts before the account is held.
    pub max_transfer_attempts: u32,
    /// Whether a verification mismatch holds the account (else it proceeds, with the evidence logged).
    pub hold_on_mismatch: bool,
    /// Whether the account's mail is delta-synced from the source (and the source's mail log
    /// checked) before it is done.
    pub final_mail_sync: bool,
    /// Delta syncs of one account before mail still landing on the source holds it.
    pub max_mail_syncs: u32,
}

/// Applies `event` to an account in `state` at `now`.
pub fn account_transition(
    state: &AccountState,
    event: &AccountEvent,
    now: Timestamp,
    policy: &AccountPolicy,
) -> Result<AccountState, Refused> {
    use AccountEvent as E;
    use AccountState as S;
    let refuse = |reason: &str| Err(refused(state.name(), event.name(), reason));
    match (state, event) {
        (S::AwaitingTargetIp { .. }, E::TargetIpAssigned { .. }) => Ok(S::Pending),
        (_, E::TargetIpAssigned { .. }) => refuse("the account is not waiting for a target IP"),
        (S::AwaitingTargetIp { .. }, E::RolledBack { .. }) => {
            refuse("nothing of the account has moved to the target yet; there is nothing to roll back")
        }
        (S::AwaitingTargetIp { .. }, E::Held { reason }) => {
            Ok(S::Held { reason: reason.clone(), at: now, resume: Box::new(state.clone()) })
        }
        (S::AwaitingTargetIp { source_ip }, _) => refuse(&format!(
            "the account is on the dedicated IP {source_ip} and waits for a target IP (siirto assign-ip)"
        )),
        (S::Pending, E::Enqueued { session }) => Ok(S::Queued { session: session.clone(), attempt: 1 }),
        (S::Failed { attempt, .. }, E::Enqueued { session }) => {
            Ok(S::Queued { session: session.clone(), attempt: attempt + 1 })
        }
        (S::Queued { session, attempt }, E::Copied) => {
            Ok(S::Copied { session: session.clone(), attempt: *attempt })
        }
        // A fast restore can be seen in the same log read as the copy.
        (S::Queued { .. } | S::Copied { .. }, E::Restored) => Ok(S::Restored { at: now }),
        (S::Queued { attempt, .. } | S::Copied { attempt, .. }, E::TransferFailed { queue, message }) => {
            let reason = format!("{queue}: {message}");
            if *attempt >= policy.max_transfer_attempts {
                Ok(S::Held {
                    reason: format!("transfer failed {attempt} times; last: {reason}"),
                    at: now,
                    resume: Box::new(S::Pending),
                })
            } else {
                Ok(S::Failed { attempt: *attempt, reason, at: now })
            }
        }
        (S::Restored { .. }, E::VerifiedOnTarget) => Ok(S::Verified { at: now }),
        (S::Restored { .. }, E::VerificationFailed { evidence }) => {
            if policy.hold_on_mismatch {
                Ok(S::Held {
                    reason: format!("verification on the target failed: {evidence}"),
                    at: now,
                    resume: Box::new(state.clone()),
                })
            } else {
                Ok(S::Verified { at: now })
            }
        }
        (S::Verified { .. }, E::DomainsSwitched) => Ok(S::Switched { at: now }),
        (S::Switched { at }, E::NoticeQueued { notice_id }) => {
            Ok(S::Notified { notice_id: *notice_id, at: now, switched_at: Some(*at) })
        }
        (S::Notified { switched_at, at, .. }, E::NoticeSent) => {
            if policy.final_mail_sync {
                Ok(S::SyncingMail { switched_at: switched_at.unwrap_or(*at), syncs: 0 })
            } else {
                Ok(S::Done { at: now })
            }
        }
        (S::SyncingMail { switched_at, syncs }, E::MailSynced { started_at, .. }) => Ok(S::CheckingMail {
            switched_at: *switched_at,
            syncs: syncs + 1,
            last_sync_started_at: *started_at,
        }),
        (S::CheckingMail { switched_at, syncs, last_sync_started_at }, E::MailChecked { evidence }) => {
            if evidence.delivered_since_last_sync == 0 {
                Ok(S::Done { at: now })
            } else if *syncs < policy.max_mail_syncs {
                Ok(S::SyncingMail { switched_at: *switched_at, syncs: *syncs })
            } else {
                let last =
                    evidence.last_delivery_at.map(|t| format!(", the last at {t}")).unwrap_or_default();
                Ok(S::Held {
                    reason: format!(
                        "mail is still delivered on the source after {syncs} delta sync(s): {} message(s) since the sync that began at {last_sync_started_at}{last}; check the source's mail routing of the account's domains, then siirto retry syncs again",
                        evidence.delivered_since_last_sync
                    ),
                    at: now,
                    // A retry starts a fresh round of syncs.
                    resume: Box::new(S::SyncingMail { switched_at: *switched_at, syncs: 0 }),
                })
            }
        }
        (S::Held { resume, .. }, E::RetryRequested) => Ok(match **resume {
            // Held before it had a target IP: it waits for one again.
            S::AwaitingTargetIp { .. } => (**resume).clone(),
            S::Pending
            | S::Queued { .. }
            | S::Copied { .. }
            | S::Failed { .. }
            | S::Held { .. }
            | S::RolledBack { .. }
            | S::Done { .. } => S::Pending,
            S::Restored { .. }
            | S::Verified { .. }
            | S::Switched { .. }
            | S::Notified { .. }
            | S::SyncingMail { .. }
            | S::CheckingMail { .. } => (**resume).clone(),
        }),
        // A rolled-back account is verified on the target again before anything moves.
        (S::RolledBack { .. }, E::RetryRequested) => Ok(S::Restored { at: now }),
        (S::RolledBack { .. }, _) => refuse("the account was rolled back; siirto retry moves it again"),
        (
            S::Restored { .. }
            | S::Verified { .. }
            | S::Switched { .. }
            | S::Notified { .. }
            | S::SyncingMail { .. }
            | S::CheckingMail { .. }
            | S::Done { .. }
            | S::Held { .. },
            E::RolledBack { reason, domain },
        ) => {
            if reason.trim().is_empty() {
                return refuse("a rollback must say why");
            }
            Ok(S::RolledBack { reason: reason.clone(), domain: domain.clone(), at: now })
        }
        (S::Pending | S::Queued { .. } | S::Copied { .. } | S::Failed { .. }, E::RolledBack { .. }) => {
            refuse("nothing of the account has moved to the target yet; there is nothing to roll back")
        }
        (S::Held { .. }, _) => refuse("the account is held for an operator"),
        (S::Done { .. }, _) => refuse("the account has already arrived"),
        (
            S::Pending
            | S::Queued { .. }
            | S::Copied { .. }
            | S::Restored { .. }
            | S::Verified { .. }
            | S::Switched { .. }
            | S::Notified { .. }
            | S::SyncingMail { .. }
            | S::CheckingMail { .. }
            | S::Failed { .. },
            E::Held { reason },
        ) => Ok(S::Held { reason: reason.clone(), at: now, resume: Box::new(state.clone()) }),
        (S::Switched { .. }, _) => refuse("the next step is the completion notice"),
        (S::Notified { .. }, _) => refuse("the completion notice is already queued"),
        (S::SyncingMail { .. }, _) => refuse("the next step is the final delta sync of its mail"),
        // The invariant: not done until the mail log shows nothing delivered since the last sync.
        (S::CheckingMail { .. }, _) => {
            refuse("the source's mail log must be checked after the delta sync before the account is done")
        }
        (S::Pending | S::Failed { .. }, _) => {
            refuse("the account has not been enqueued in a transfer session")
        }
        (S::Queued { .. } | S::Copied { .. }, _) => refuse("the account is still being transferred"),
        (S::Restored { .. }, _) => refuse("the account has not been verified on the target"),
        (S::Verified { .. }, _) => refuse("the account's domains have not been switched"),
    }
}

/// The step the engine schedules for an account that has just entered `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStep {
    /// Check its sites on the target.
    Verify,
    /// Repoint its domains and verify through the resolver.
    Repoint,
    /// Write the completion notice to the outbox.
    QueueNotice,
    /// Delta-sync its mail from the source, once the old TTL has passed since the switch.
    SyncMail,
    /// Read the source's mail log for local deliveries since the last sync.
    CheckMail,
}

/// The follow-up step for an account that has just entered `state`, if the engine owes one.
/// Transfers are not per account: the engine batches accounts that want one into sessions.
pub fn account_next_step(state: &AccountState) -> Option<AccountStep> {
    match state {
        AccountState::Restored { .. } => Some(AccountStep::Verify),
        AccountState::Verified { .. } => Some(AccountStep::Repoint),
        AccountState::Switched { .. } => Some(AccountStep::QueueNotice),
        AccountState::SyncingMail { .. } => Some(AccountStep::SyncMail),
        AccountState::CheckingMail { .. } => Some(AccountStep::CheckMail),
        AccountState::AwaitingTargetIp { .. }
        | AccountState::Pending
        | AccountState::Queued { .. }
        | AccountState::Copied { .. }
        | AccountState::Notified { .. }
        | AccountState::Done { .. }
        | AccountState::Failed { .. }
        | AccountState::Held { .. }
        | AccountState::RolledBack { .. } => None,
    }
}

/// The dedupe key of an account's completion notice: the outbox's unique key, so the notice
/// is a single row however often the step runs.
pub fn completion_notice_key(migration: &MigrationId, user: &AccountName) -> String {
    format!("completion:{migration}:{user}")
}

/// The dedupe key of reminder `n` (from 1) to repoint a domain with external DNS.
pub fn reminder_notice_key(migration: &MigrationId, domain: &DomainName, n: u32) -> String {
    format!("reminder:{migration}:{domain}:{n}")
}

// ---------------------------------------------------------------------------------------------
// Domain

/// One rrset that will change, with the TTL it had before siirto touched it: recorded before
/// the lowering, so a crash after it cannot make us forget the value to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObservedRecord {
    /// The owner name, absolute with the trailing dot.
    pub name: String,
    /// The record type (`A`, `AAAA`, `TXT`, `MX`, `CNAME`).
    pub rtype: String,
    /// The TTL it had, in seconds (for a created record: the TTL it gets once settled, that of
    /// the A record it accompanies).
    pub old_ttl: u32,
    /// Values the repoint removes without a replacement (an AAAA at the source when the target
    /// has no IPv6): what a rollback puts back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Values the repoint adds to a name that had no such rrset (an AAAA at the target): a
    /// created record, which a rollback deletes again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
    /// For a created record: the zone's negative-caching TTL when it was observed,
    /// min(SOA TTL, SOA MINIMUM) (RFC 2308 §5) — how long a resolver may keep answering that the
    /// name has no such record. It, not `old_ttl`, gates the creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<u32>,
}

impl ObservedRecord {
    /// A record that changes in place, with the TTL it has now.
    pub fn changed(name: impl Into<String>, rtype: impl Into<String>, old_ttl: u32) -> ObservedRecord {
        ObservedRecord { name: name.into(), rtype: rtype.into(), old_ttl, ..ObservedRecord::default() }
    }

    /// The TTL its gate waits for: what resolvers may have cached of it before the lowering —
    /// the old TTL of a record that exists, the negative-caching TTL of one that is created.
    pub fn gate_ttl(&self) -> u32 {
        self.negative_ttl.unwrap_or(self.old_ttl)
    }
}

/// When one record's TTL gate opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordGate {
    /// The owner name.
    pub name: String,
    /// The record type.
    pub rtype: String,
    /// The TTL it had before the lowering, in seconds.
    pub old_ttl: u32,
    /// For a record siirto creates: the zone's negative-caching TTL, which gates it instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<u32>,
    /// `lowered_at + old_ttl + margin` (`lowered_at + negative_ttl + margin` for a created record).
    pub opens_at: Timestamp,
}

impl GatePolicy {
    /// The gate of each record lowered at `lowered_at`.
    pub fn record_gates(&self, lowered_at: Timestamp, records: &[ObservedRecord]) -> Vec<RecordGate> {
        records
            .iter()
            .map(|r| RecordGate {
                name: r.name.clone(),
                rtype: r.rtype.clone(),
                old_ttl: r.old_ttl,
                negative_ttl: r.negative_ttl,
                opens_at: self.opens_at(lowered_at, r.gate_ttl()),
            })
            .collect()
    }

    /// A domain's gate: the latest of its records' gates (`lowered_at` when nothing changes).
    pub fn domain_opens_at(&self, lowered_at: Timestamp, records: &[ObservedRecord]) -> Timestamp {
        records.iter().map(|r| self.opens_at(lowered_at, r.gate_ttl())).max().unwrap_or(lowered_at)
    }
}

/// One record of an external domain as the plan's classification saw it: its value at the
/// source, which the customer (or their DNS host) must change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenRecord {
    /// The owner name, absolute with the trailing dot.
    pub name: String,
    /// The record type (`A`).
    pub rtype: String,
    /// The value seen at plan time (the source's address).
    pub value: String,
}

/// A change the customer must make at their own DNS host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordChange {
    /// The owner name, absolute with the trailing dot.
    pub name: String,
    /// The record type (`A`).
    pub rtype: String,
    /// The value it has (the source's address).
    pub old_value: String,
    /// The value it must get (the target's address).
    pub new_value: String,
}

/// Where one domain's DNS stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DomainState {
    /// Nothing done yet.
    Pending,
    /// The TTL of each record that will change was read and recorded; the lowering comes next.
    TtlObserved {
        /// The records that will change, each with its old TTL.
        records: Vec<ObservedRecord>,
    },
    /// Its records that will change have the short TTL.
    TtlLowered {
        /// The records that will change, each with its old TTL.
        records: Vec<ObservedRecord>,
        /// When they were lowered.
        lowered_at: Timestamp,
    },
    /// Its account is verified on the target; it may be repointed once every record's gate is open.
    VerifiedOnTarget {
        /// The records that will change, each with its old TTL.
        records: Vec<ObservedRecord>,
        /// When they were lowered.
        lowered_at: Timestamp,
    },
    /// The nameserver was told the new address.
    Repointed {
        /// The changed records, each with its old TTL.
        records: Vec<ObservedRecord>,
        /// When they were lowered.
        lowered_at: Timestamp,
        /// When they were repointed.
        at: Timestamp,
    },
    /// Every own nameserver serves the new address; the short TTLs stay until the settle period
    /// has passed. (Stored as `done` before it had this name.)
    #[serde(alias = "done")]
    ServingTarget {
        /// The changed records, each with its old TTL.
        records: Vec<ObservedRecord>,
        /// When they were lowered.
        lowered_at: Timestamp,
        /// When the nameservers were seen serving the new address.
        at: Timestamp,
    },
    /// The settle period has passed and each changed record has its original TTL again.
    TtlRestored {
        /// The changed records, each with the TTL it has again.
        records: Vec<ObservedRecord>,
        /// When.
        at: Timestamp,
    },
    /// Its nameservers are not ours: siirto never touches its records; the customer repoints.
    External {
        /// Its nameservers as classified.
        nameservers: Vec<String>,
        /// Its records that point at the source, as the plan saw them.
        seen: Vec<SeenRecord>,
        /// The highest TTL the plan observed on its A and MX records at the customer's DNS
        /// host: how long resolvers may keep the old records after the customer changes them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed_ttl: Option<u32>,
    },
    /// Its account is verified on the target; the customer was (or is being) told what to change,
    /// and public DNS is polled until it shows the target's address.
    AwaitingCustomer {
        /// When the wait began (the account's verification).
        since: Timestamp,
        /// What the customer must change.
        records_to_change: Vec<RecordChange>,
        /// How many reminders were queued.
        reminded: u32,
        /// The highest TTL the plan observed on its A and MX records at the customer's DNS
        /// host: how long resolvers may keep the old records after the customer changes them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed_ttl: Option<u32>,
        /// Resolvers that gave no answer at all at the last look: what they would answer is
        /// unknown, so propagation is not declared until they answer.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        silent: Vec<String>,
    },
    /// Public DNS shows the target's address at every resolver: done, as far as siirto is
    /// concerned.
    Propagated {
        /// When the wait began.
        since: Timestamp,
        /// What the customer had to change.
        records_to_change: Vec<RecordChange>,
        /// How many reminders were queued.
        reminded: u32,
        /// When the resolvers were seen answering with the target's address.
        at: Timestamp,
        /// The highest TTL the plan observed on its A and MX records at the customer's DNS
        /// host: how long resolvers may keep the old records after the customer changes them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed_ttl: Option<u32>,
    },
    /// Moved with its account, but no DNS of ours points it at the source: the plan found
    /// nothing siirto can repoint (its zone is not on our DNS provider, it is not delegated, or
    /// its site is hosted elsewhere). Final from the plan on; siirto never writes its records.
    NotRepointed {
        /// Why, as the plan found it.
        reason: String,
        /// True when its site is served by someone else: the customer need not do anything.
        /// Otherwise, for it to be served from the new server the customer (or whoever keeps
        /// its DNS) must point its A records at the target's address.
        site_elsewhere: bool,
    },
    /// Pointed back at the source by an operator's rollback. Its records keep the short TTL
    /// for `settle_after` after the rollback (a retry soon after needs no new wait), then get
    /// their original TTL back; nothing else happens to it until `siirto retry`, which lowers
    /// them again first if they were restored.
    RolledBack {
        /// The records, each with its original TTL.
        records: Vec<ObservedRecord>,
        /// When they last got the short TTL (the rollback re-lowers restored TTLs).
        lowered_at: Timestamp,
        /// Why, as the operator gave it.
        reason: String,
        /// When.
        at: Timestamp,
        /// When the settle period after the rollback passed and the records got their original
        /// TTL back; `None` while they have the short one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_restored_at: Option<Timestamp>,
    },
}

impl DomainState {
    /// The state's name as stored and shown.
    pub fn name(&self) -> &'static str {
        match self {
            DomainState::Pending => "pending",
            DomainState::TtlObserved { .. } => "ttl_observed",
            DomainState::TtlLowered { .. } => "ttl_lowered",
            DomainState::VerifiedOnTarget { .. } => "verified_on_target",
            DomainState::Repointed { .. } => "repointed",
            DomainState::ServingTarget { .. } => "serving_target",
            DomainState::TtlRestored { .. } => "ttl_restored",
            DomainState::RolledBack { .. } => "rolled_back",
            DomainState::External { .. } => "external",
            DomainState::AwaitingCustomer { .. } => "awaiting_customer",
            DomainState::Propagated { .. } => "propagated",
            DomainState::NotRepointed { .. } => "not_repointed",
        }
    }

    /// True for a domain whose DNS is not ours (external, awaiting the customer, propagated):
    /// siirto never writes its records.
    pub fn is_external(&self) -> bool {
        match self {
            DomainState::External { .. }
            | DomainState::AwaitingCustomer { .. }
            | DomainState::Propagated { .. } => true,
            DomainState::Pending
            | DomainState::TtlObserved { .. }
            | DomainState::TtlLowered { .. }
            | DomainState::VerifiedOnTarget { .. }
            | DomainState::Repointed { .. }
            | DomainState::ServingTarget { .. }
            | DomainState::TtlRestored { .. }
            | DomainState::RolledBack { .. }
            | DomainState::NotRepointed { .. } => false,
        }
    }

    /// The names of the final states: nothing more happens to a domain in one of them.
    pub const FINAL: [&'static str; 3] = ["ttl_restored", "propagated", "not_repointed"];

    /// True in a final state: its changed records have their original TTL again, public DNS
    /// shows the target, or the plan left it unrepointed.
    pub fn is_final(&self) -> bool {
        Self::FINAL.contains(&self.name())
    }

    /// True for a domain whose records siirto writes: on our DNS and repointed in the cutover
    /// (neither external nor left unrepointed by the plan).
    pub fn dns_is_ours(&self) -> bool {
        !self.is_external() && !matches!(self, DomainState::NotRepointed { .. })
    }

    /// For a domain on someone else's DNS, the highest TTL the plan observed on its A and MX
    /// records there (`None` when none was observed, or the domain's DNS is ours).
    pub fn observed_ttl(&self) -> Option<u32> {
        match self {
            DomainState::External { observed_ttl, .. }
            | DomainState::AwaitingCustomer { observed_ttl, .. }
            | DomainState::Propagated { observed_ttl, .. } => *observed_ttl,
            DomainState::Pending
            | DomainState::TtlObserved { .. }
            | DomainState::TtlLowered { .. }
            | DomainState::VerifiedOnTarget { .. }
            | DomainState::Repointed { .. }
            | DomainState::ServingTarget { .. }
            | DomainState::TtlRestored { .. }
            | DomainState::RolledBack { .. }
            | DomainState::NotRepointed { .. } => None,
        }
    }

    /// The changes the customer must make, for an external domain once its account is verified.
    pub fn records_to_change(&self) -> &[RecordChange] {
        match self {
            DomainState::AwaitingCustomer { records_to_change, .. }
            | DomainState::Propagated { records_to_change, .. } => records_to_change,
            DomainState::Pending
            | DomainState::TtlObserved { .. }
            | DomainState::TtlLowered { .. }
            | DomainState::VerifiedOnTarget { .. }
            | DomainState::Repointed { .. }
            | DomainState::ServingTarget { .. }
            | DomainState::TtlRestored { .. }
            | DomainState::RolledBack { .. }
            | DomainState::External { .. }
            | DomainState::NotRepointed { .. } => &[],
        }
    }

    /// When the next reminder is due for a domain awaiting its customer: `since + every × (n+1)`
    /// after `n` reminders; `None` in any other state.
    pub fn reminder_due_at(&self, every: Duration) -> Option<Timestamp> {
        match self {
            DomainState::AwaitingCustomer { since, reminded, .. } => {
                Some(add(*since, every.saturating_mul(reminded.saturating_add(1))))
            }
            DomainState::Pending
            | DomainState::TtlObserved { .. }
            | DomainState::TtlLowered { .. }
            | DomainState::VerifiedOnTarget { .. }
            | DomainState::Repointed { .. }
            | DomainState::ServingTarget { .. }
            | DomainState::TtlRestored { .. }
            | DomainState::RolledBack { .. }
            | DomainState::External { .. }
            | DomainState::Propagated { .. }
            | DomainState::NotRepointed { .. } => None,
        }
    }

    /// The records that will change (or changed), with their original TTLs.
    pub fn records(&self) -> &[ObservedRecord] {
        match self {
            DomainState::Pending
            | DomainState::External { .. }
            | DomainState::AwaitingCustomer { .. }
            | DomainState::Propagated { .. }
            | DomainState::NotRepointed { .. } => &[],
            DomainState::TtlObserved { records }
            | DomainState::TtlLowered { records, .. }
            | DomainState::VerifiedOnTarget { records, .. }
            | DomainState::Repointed { records, .. }
            | DomainState::ServingTarget { records, .. }
            | DomainState::TtlRestored { records, .. }
            | DomainState::RolledBack { records, .. } => records,
        }
    }

    /// When the records got the short TTL, while they have it.
    pub fn lowered_at(&self) -> Option<Timestamp> {
        match self {
            DomainState::TtlLowered { lowered_at, .. }
            | DomainState::VerifiedOnTarget { lowered_at, .. }
            | DomainState::Repointed { lowered_at, .. }
            | DomainState::ServingTarget { lowered_at, .. }
            | DomainState::RolledBack { lowered_at, ttl_restored_at: None, .. } => Some(*lowered_at),
            DomainState::Pending
            | DomainState::TtlObserved { .. }
            | DomainState::TtlRestored { .. }
            | DomainState::RolledBack { ttl_restored_at: Some(_), .. }
            | DomainState::External { .. }
            | DomainState::AwaitingCustomer { .. }
            | DomainState::Propagated { .. }
            | DomainState::NotRepointed { .. } => None,
        }
    }

    /// Each record's gate, while the domain waits for its repoint.
    pub fn gates(&self, gate: &GatePolicy) -> Vec<RecordGate> {
        match self {
            DomainState::TtlLowered { records, lowered_at }
            | DomainState::VerifiedOnTarget { records, lowered_at }
            | DomainState::RolledBack { records, lowered_at, ttl_restored_at: None, .. } => {
                gate.record_gates(*lowered_at, records)
            }
            DomainState::Pending
            | DomainState::RolledBack { ttl_restored_at: Some(_), .. }
            | DomainState::TtlObserved { .. }
            | DomainState::Repointed { .. }
            | DomainState::ServingTarget { .. }
            | DomainState::TtlRestored { .. }
            | DomainState::External { .. }
            | DomainState::AwaitingCustomer { .. }
            | DomainState::Propagated { .. }
            | DomainState::NotRepointed { .. } => Vec::new(),
        }
    }
}

/// Something that happened to one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DomainEvent {
    /// The TTL of each record that will change was read from the nameserver.
    TtlObserved {
        /// The records that will change, each with its TTL now.
        records: Vec<ObservedRecord>,
    },
    /// Its records got the short TTL.
    TtlLowered,
    /// Its account was verified on the target.
    AccountVerified,
    /// Its records were changed to the target's address.
    Repointed,
    /// Every own nameserver was seen serving the target's address.
    ResolutionVerified,
    /// The settle period passed; each changed record has its original TTL again.
    TtlRestored,
    /// An operator rolled it back: its records point at the source again (with the short TTL).
    RolledBack {
        /// Why.
        reason: String,
    },
    /// An operator retried its rolled-back account: it waits for the account's verification again.
    RetryRequested,
    /// The account of an external domain was verified on the target: the customer must now
    /// point the records seen at the source at `new_value`.
    CustomerMustRepoint {
        /// The target's address.
        new_value: String,
        /// The new value of each seen record that is not simply the address (an SPF record:
        /// the same text with the old server's `ip4:` naming the new one).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rewritten: Vec<RecordChange>,
    },
    /// A reminder to repoint was queued for the customer.
    Reminded,
    /// The resolvers answer with the target's address.
    Propagated,
    /// The resolvers that gave no answer at all changed (empty: every one answers again).
    ResolversSilent {
        /// Their addresses.
        resolvers: Vec<String>,
    },
}

impl DomainEvent {
    /// The event's name as stored in the event log.
    pub fn name(&self) -> &'static str {
        match self {
            DomainEvent::TtlObserved { .. } => "domain_ttl_observed",
            DomainEvent::TtlLowered => "domain_ttl_lowered",
            DomainEvent::AccountVerified => "domain_verified_on_target",
            DomainEvent::Repointed => "domain_repointed",
            DomainEvent::ResolutionVerified => "domain_resolution_verified",
            DomainEvent::TtlRestored => "domain_ttl_restored",
            DomainEvent::RolledBack { .. } => "domain_rolled_back",
            DomainEvent::RetryRequested => "domain_retry_requested",
            DomainEvent::CustomerMustRepoint { .. } => "domain_awaiting_customer",
            DomainEvent::Reminded => "domain_reminded",
            DomainEvent::Propagated => "domain_propagated",
            DomainEvent::ResolversSilent { .. } => "domain_resolvers_silent",
        }
    }

    /// What happened, in words, for the event log's timeline (`siirto log`).
    pub fn describe(&self) -> String {
        match self {
            DomainEvent::TtlObserved { records } => {
                format!("TTLs read of {} record(s) that will change", records.len())
            }
            DomainEvent::TtlLowered => "TTL lowered".to_owned(),
            DomainEvent::AccountVerified => "its account verified on the target".to_owned(),
            DomainEvent::Repointed => "repointed to the target".to_owned(),
            DomainEvent::ResolutionVerified => "our nameservers serve the target's address".to_owned(),
            DomainEvent::TtlRestored => "TTL restored".to_owned(),
            DomainEvent::RolledBack { reason } => format!("rolled back to the source: {reason}"),
            DomainEvent::RetryRequested => "waits for its account's verification again".to_owned(),
            DomainEvent::CustomerMustRepoint { new_value, .. } => {
                format!("DNS elsewhere: the customer must point it at {new_value}")
            }
            DomainEvent::Reminded => "customer reminded to repoint".to_owned(),
            DomainEvent::Propagated => "public DNS shows the target's address".to_owned(),
            DomainEvent::ResolversSilent { resolvers } if resolvers.is_empty() => {
                "every resolver answers again".to_owned()
            }
            DomainEvent::ResolversSilent { resolvers } => format!(
                "no answer at all from resolver(s) {}: propagation waits for them",
                resolvers.join(", ")
            ),
        }
    }
}

/// Applies `event` to a domain in `state` at `now`; `gate` decides when a lowered record may change.
pub fn domain_transition(
    state: &DomainState,
    event: &DomainEvent,
    now: Timestamp,
    gate: &GatePolicy,
) -> Result<DomainState, Refused> {
    use DomainEvent as E;
    use DomainState as S;
    let refuse = |reason: &str| Err(refused(state.name(), event.name(), reason));
    match (state, event) {
        (S::Pending, E::TtlObserved { records }) => Ok(S::TtlObserved { records: records.clone() }),
        // Observing again (a retry after a crash before the lowering) keeps the first reading:
        // by then the records may already carry the short TTL.
        (S::TtlObserved { .. }, E::TtlObserved { .. }) => Ok(state.clone()),
        (S::TtlObserved { records }, E::TtlLowered) => {
            Ok(S::TtlLowered { records: records.clone(), lowered_at: now })
        }
        (S::TtlLowered { records, lowered_at }, E::AccountVerified) => {
            Ok(S::VerifiedOnTarget { records: records.clone(), lowered_at: *lowered_at })
        }
        (S::VerifiedOnTarget { records, lowered_at }, E::Repointed) => {
            let closed: Vec<String> = gate
                .record_gates(*lowered_at, records)
                .into_iter()
                .filter(|g| now < g.opens_at)
                .map(|g| match g.negative_ttl {
                    Some(negative) => format!(
                        "{} {} at {} (created: the zone's negative-caching TTL {negative} s)",
                        g.name, g.rtype, g.opens_at
                    ),
                    None => format!("{} {} at {} (old TTL {} s)", g.name, g.rtype, g.opens_at, g.old_ttl),
                })
                .collect();
            if !closed.is_empty() {
                return refuse(&format!("its TTL gate opens for {}", closed.join(", ")));
            }
            Ok(S::Repointed { records: records.clone(), lowered_at: *lowered_at, at: now })
        }
        (S::Repointed { records, lowered_at, .. }, E::ResolutionVerified) => {
            Ok(S::ServingTarget { records: records.clone(), lowered_at: *lowered_at, at: now })
        }
        (S::ServingTarget { records, .. }, E::TtlRestored) => {
            Ok(S::TtlRestored { records: records.clone(), at: now })
        }
        (
            S::TtlLowered { records, lowered_at }
            | S::VerifiedOnTarget { records, lowered_at }
            | S::Repointed { records, lowered_at, .. }
            | S::ServingTarget { records, lowered_at, .. },
            E::RolledBack { reason },
        ) => Ok(S::RolledBack {
            records: records.clone(),
            lowered_at: *lowered_at,
            reason: reason.clone(),
            at: now,
            ttl_restored_at: None,
        }),
        // The restored TTLs were lowered again by the rollback: its gate counts from now.
        (S::TtlRestored { records, .. }, E::RolledBack { reason }) => Ok(S::RolledBack {
            records: records.clone(),
            lowered_at: now,
            reason: reason.clone(),
            at: now,
            ttl_restored_at: None,
        }),
        // The settle period after the rollback passed: the original TTLs are back.
        (S::RolledBack { records, lowered_at, reason, at, ttl_restored_at: None }, E::TtlRestored) => {
            Ok(S::RolledBack {
                records: records.clone(),
                lowered_at: *lowered_at,
                reason: reason.clone(),
                at: *at,
                ttl_restored_at: Some(now),
            })
        }
        (S::RolledBack { records, lowered_at, ttl_restored_at: None, .. }, E::RetryRequested) => {
            Ok(S::TtlLowered { records: records.clone(), lowered_at: *lowered_at })
        }
        // Its TTLs are long again: they are lowered again (in its verification) before any
        // repoint, and the gate counts from then.
        (S::RolledBack { records, ttl_restored_at: Some(_), .. }, E::RetryRequested) => {
            Ok(S::TtlObserved { records: records.clone() })
        }
        (S::External { seen, observed_ttl, .. }, E::CustomerMustRepoint { new_value, rewritten }) => {
            Ok(S::AwaitingCustomer {
                since: now,
                records_to_change: seen
                    .iter()
                    .map(|r| {
                        let same = |c: &&RecordChange| {
                            c.name == r.name && c.rtype == r.rtype && c.old_value == r.value
                        };
                        rewritten.iter().find(same).cloned().unwrap_or_else(|| RecordChange {
                            name: r.name.clone(),
                            rtype: r.rtype.clone(),
                            old_value: r.value.clone(),
                            new_value: new_value.clone(),
                        })
                    })
                    .collect(),
                reminded: 0,
                observed_ttl: *observed_ttl,
                silent: Vec::new(),
            })
        }
        (S::AwaitingCustomer { since, records_to_change, reminded, observed_ttl, silent }, E::Reminded) => {
            Ok(S::AwaitingCustomer {
                since: *since,
                records_to_change: records_to_change.clone(),
                reminded: reminded.saturating_add(1),
                observed_ttl: *observed_ttl,
                silent: silent.clone(),
            })
        }
        (
            S::AwaitingCustomer { since, records_to_change, reminded, observed_ttl, .. },
            E::ResolversSilent { resolvers },
        ) => Ok(S::AwaitingCustomer {
            since: *since,
            records_to_change: records_to_change.clone(),
            reminded: *reminded,
            observed_ttl: *observed_ttl,
            silent: resolvers.clone(),
        }),
        (S::AwaitingCustomer { silent, .. }, E::Propagated) if !silent.is_empty() => {
            refuse(&format!("resolver(s) {} gave no answer", silent.join(", ")))
        }
        (S::AwaitingCustomer { since, records_to_change, reminded, observed_ttl, .. }, E::Propagated) => {
            Ok(S::Propagated {
                since: *since,
                records_to_change: records_to_change.clone(),
                reminded: *reminded,
                at: now,
                observed_ttl: *observed_ttl,
            })
        }
        (S::External { .. }, E::Reminded | E::Propagated | E::ResolversSilent { .. }) => {
            refuse("its account has not been verified on the target")
        }
        (S::External { .. } | S::AwaitingCustomer { .. } | S::Propagated { .. }, E::RolledBack { .. }) => {
            refuse("its DNS is not ours; siirto changed none of its records")
        }
        (S::NotRepointed { reason, .. }, _) => refuse(&format!("it is not repointed ({reason})")),
        (S::External { .. }, _) => refuse("its DNS is not ours; only the customer can repoint it"),
        (S::AwaitingCustomer { .. }, _) => refuse("waiting for the customer to repoint it"),
        (S::Propagated { .. }, _) => refuse("public DNS already shows the target"),
        (_, E::CustomerMustRepoint { .. } | E::Reminded | E::Propagated | E::ResolversSilent { .. }) => {
            refuse("only a domain with external DNS waits for its customer")
        }
        (S::RolledBack { .. }, _) => refuse("it was rolled back; siirto retry moves it again"),
        (_, E::RetryRequested) => refuse("only a rolled-back domain is retried"),
        (S::Pending | S::TtlObserved { .. }, E::RolledBack { .. }) => {
            refuse("its TTL has not been lowered; nothing was changed")
        }
        (S::Pending, _) => refuse("its TTL has not been observed"),
        (S::TtlObserved { .. }, _) => refuse("its TTL has not been lowered"),
        (S::TtlLowered { .. }, E::Repointed) => refuse("its account has not been verified on the target"),
        (S::TtlLowered { .. }, _) => refuse("waiting for its account to be verified on the target"),
        (S::VerifiedOnTarget { .. }, _) => refuse("the next step is the repoint"),
        (S::Repointed { .. }, _) => refuse("the next step is the resolver check"),
        (S::ServingTarget { .. }, _) => refuse("the domain has already been cut over"),
        (S::TtlRestored { .. }, _) => refuse("the domain is cut over and its TTLs restored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        from_millis(1_800_000_000_000 + secs * 1000)
    }

    const POLICY: AccountPolicy = AccountPolicy {
        max_transfer_attempts: 2,
        hold_on_mismatch: true,
        final_mail_sync: false,
        max_mail_syncs: 2,
    };
    const GATE: GatePolicy = GatePolicy { margin: Duration::from_secs(30), wait_override: None };

    #[test]
    fn external_records_expire_after_the_observed_ttl_or_the_assumed_one() {
        assert_eq!(GATE.external_records_expire_at(t(100), Some(300)), t(430));
        assert_eq!(GATE.external_records_expire_at(t(100), None), t(100 + 14_400 + 30));
    }

    #[test]
    fn gate_is_old_ttl_plus_margin_unless_overridden() {
        assert_eq!(GATE.opens_at(t(0), 3600), t(3630));
        let short =
            GatePolicy { margin: Duration::from_secs(30), wait_override: Some(Duration::from_secs(2)) };
        assert_eq!(short.opens_at(t(0), 3600), t(2));
    }

    #[test]
    fn migration_transitions() {
        use MigrationEvent as E;
        use MigrationState as S;
        let planned = S::Planned { planned_at: t(0) };
        let approved = S::Approved { by: "maija".into(), at: t(0) };
        let started = S::Started { started_at: t(1) };
        let lowered = S::TtlLowered { lowered_at: t(2), gate_opens_at: t(100) };
        let transferring = S::Transferring { since: t(100) };
        let cut = S::CutOver { at: t(200), arrived: 3, held: 1 };
        let all_arrived = S::CutOver { at: t(200), arrived: 4, held: 0 };
        let settled = S::Settled { at: t(300), accounts: 4, domains: 9 };
        let paused = S::Paused { previous: Box::new(lowered.clone()), at: t(50) };
        let aborted = S::Aborted { at: t(60), reason: "customer asked".into() };
        let abort = E::Aborted { reason: "customer asked".into() };
        // (state, event, now, expected: Ok(state name) or Err(fragment of the reason))
        let table: Vec<(S, E, i64, Result<&str, &str>)> = vec![
            (planned.clone(), E::Started, 1, Err("not been approved")),
            (planned.clone(), E::Approved { by: "maija".into() }, 1, Ok("approved")),
            (planned.clone(), E::Approved { by: " ".into() }, 1, Err("must say who")),
            (approved.clone(), E::Started, 1, Ok("started")),
            (approved.clone(), E::GateOpened, 1, Err("not been started")),
            (approved.clone(), abort.clone(), 1, Ok("aborted")),
            (started.clone(), E::Approved { by: "maija".into() }, 1, Err("not the next step")),
            (planned.clone(), E::GateOpened, 1, Err("not been started")),
            (planned.clone(), abort.clone(), 60, Ok("aborted")),
            (started.clone(), E::TtlLowered { gate_opens_at: t(100) }, 2, Ok("ttl_lowered")),
            (started.clone(), E::GateOpened, 2, Err("not the next step")),
            (started.clone(), E::Paused, 2, Ok("paused")),
            (lowered.clone(), E::GateOpened, 99, Err("TTL gate opens")),
            (lowered.clone(), E::GateOpened, 100, Ok("transferring")),
            (lowered.clone(), E::Started, 100, Err("not the next step")),
            (lowered.clone(), E::Paused, 50, Ok("paused")),
            (transferring.clone(), E::AccountsSettled { arrived: 3, held: 1 }, 200, Ok("cut_over")),
            (transferring.clone(), E::GateOpened, 200, Err("not the next step")),
            (transferring.clone(), abort.clone(), 200, Ok("aborted")),
            (paused.clone(), E::Resumed, 70, Ok("ttl_lowered")),
            (paused.clone(), E::GateOpened, 200, Err("paused")),
            (paused.clone(), abort.clone(), 200, Ok("aborted")),
            (aborted.clone(), E::Resumed, 200, Err("aborted")),
            (aborted.clone(), E::Started, 200, Err("aborted")),
            (cut.clone(), E::Paused, 300, Err("already cut over")),
            (cut.clone(), E::Reopened, 300, Ok("transferring")),
            (transferring.clone(), E::Reopened, 300, Err("not the next step")),
            (cut.clone(), abort.clone(), 300, Err("already cut over")),
            (cut.clone(), E::Settled { accounts: 4, domains: 9 }, 300, Err("held for an operator")),
            (all_arrived.clone(), E::Settled { accounts: 4, domains: 9 }, 300, Ok("settled")),
            (settled.clone(), E::Reopened, 400, Ok("transferring")),
            (settled.clone(), E::Paused, 400, Err("settled")),
            (settled.clone(), E::Settled { accounts: 4, domains: 9 }, 400, Err("settled")),
        ];
        for (state, event, now, expected) in table {
            let got = migration_transition(&state, &event, t(now));
            match (expected, got) {
                (Ok(name), Ok(next)) => assert_eq!(next.name(), name, "{state:?} + {event:?}"),
                (Err(fragment), Err(refusal)) => {
                    assert!(refusal.reason.contains(fragment), "{state:?} + {event:?}: {refusal}")
                }
                (expected, got) => {
                    panic!("{state:?} + {event:?}: expected {expected:?}, got {got:?}")
                }
            }
        }
    }

    #[test]
    fn resume_returns_to_the_paused_state_exactly() {
        let lowered = MigrationState::TtlLowered { lowered_at: t(2), gate_opens_at: t(100) };
        let paused = migration_transition(&lowered, &MigrationEvent::Paused, t(3)).unwrap();
        assert_eq!(migration_transition(&paused, &MigrationEvent::Resumed, t(4)).unwrap(), lowered);
    }

    #[test]
    fn account_transitions() {
        use AccountEvent as E;
        use AccountState as S;
        let queued1 = S::Queued { session: "s1".into(), attempt: 1 };
        let queued2 = S::Queued { session: "s2".into(), attempt: 2 };
        let copied = S::Copied { session: "s1".into(), attempt: 1 };
        let failed = S::Failed { attempt: 1, reason: "RESTORE: disk full".into(), at: t(5) };
        let restored = S::Restored { at: t(6) };
        let verified = S::Verified { at: t(7) };
        let switched = S::Switched { at: t(8) };
        let notified = S::Notified { notice_id: 9, at: t(9), switched_at: Some(t(8)) };
        let done = S::Done { at: t(10) };
        let held = S::Held {
            reason: "x".into(),
            at: t(10),
            resume: Box::new(S::Copied { session: "s1".into(), attempt: 1 }),
        };
        let held_verified = S::Held { reason: "x".into(), at: t(10), resume: Box::new(verified.clone()) };
        let fail = E::TransferFailed { queue: "RESTORE".into(), message: "disk full".into() };
        let mismatch = E::VerificationFailed { evidence: "source 200 \"Kukka\", target 500".into() };
        let enqueue = E::Enqueued { session: "s2".into() };
        let rollback = E::RolledBack { reason: "shop broken".into(), domain: Some("kukka.test".into()) };
        let rolled_back = S::RolledBack { reason: "shop broken".into(), domain: None, at: t(11) };
        let awaiting = S::AwaitingTargetIp { source_ip: Ipv4Addr::new(192, 0, 2, 11) };
        let held_awaiting = S::Held { reason: "x".into(), at: t(10), resume: Box::new(awaiting.clone()) };
        let assign = E::TargetIpAssigned { ip: Ipv4Addr::new(198, 51, 100, 21) };
        let table: Vec<(S, E, Result<&str, &str>)> = vec![
            (S::Pending, enqueue.clone(), Ok("queued")),
            (S::Pending, E::Copied, Err("not been enqueued")),
            (S::Pending, E::NoticeQueued { notice_id: 1 }, Err("not been enqueued")),
            (queued1.clone(), E::Copied, Ok("copied")),
            (queued1.clone(), E::Restored, Ok("restored")),
            (queued1.clone(), fail.clone(), Ok("failed")),
            (queued1.clone(), E::VerifiedOnTarget, Err("still being transferred")),
            (copied.clone(), E::Restored, Ok("restored")),
            (copied.clone(), fail.clone(), Ok("failed")),
            (copied.clone(), E::DomainsSwitched, Err("still being transferred")),
            (failed.clone(), enqueue.clone(), Ok("queued")),
            (failed.clone(), E::Restored, Err("not been enqueued")),
            (queued2.clone(), fail.clone(), Ok("held")),
            (restored.clone(), E::VerifiedOnTarget, Ok("verified")),
            (restored.clone(), mismatch.clone(), Ok("held")),
            (restored.clone(), E::DomainsSwitched, Err("not been verified")),
            (verified.clone(), E::DomainsSwitched, Ok("switched")),
            (verified.clone(), E::NoticeQueued { notice_id: 1 }, Err("not been switched")),
            (switched.clone(), E::NoticeQueued { notice_id: 9 }, Ok("notified")),
            (switched.clone(), E::NoticeSent, Err("completion notice")),
            (notified.clone(), E::NoticeSent, Ok("done")),
            (notified.clone(), E::NoticeQueued { notice_id: 10 }, Err("already queued")),
            (done.clone(), E::NoticeQueued { notice_id: 10 }, Err("already arrived")),
            (done.clone(), E::Held { reason: "x".into() }, Err("already arrived")),
            (held.clone(), E::Restored, Err("held for an operator")),
            (held.clone(), E::RetryRequested, Ok("pending")),
            (held_verified.clone(), E::RetryRequested, Ok("verified")),
            (verified.clone(), E::Held { reason: "dns down".into() }, Ok("held")),
            (S::Pending, E::RetryRequested, Err("not been enqueued")),
            (done.clone(), rollback.clone(), Ok("rolled_back")),
            (verified.clone(), rollback.clone(), Ok("rolled_back")),
            (held_verified.clone(), rollback.clone(), Ok("rolled_back")),
            (restored.clone(), rollback.clone(), Ok("rolled_back")),
            (switched.clone(), rollback.clone(), Ok("rolled_back")),
            (notified.clone(), rollback.clone(), Ok("rolled_back")),
            (done.clone(), E::RolledBack { reason: " ".into(), domain: None }, Err("must say why")),
            (S::Pending, rollback.clone(), Err("nothing of the account has moved")),
            (queued1.clone(), rollback.clone(), Err("nothing of the account has moved")),
            (copied.clone(), rollback.clone(), Err("nothing of the account has moved")),
            (failed.clone(), rollback.clone(), Err("nothing of the account has moved")),
            (rolled_back.clone(), E::RetryRequested, Ok("restored")),
            (rolled_back.clone(), rollback.clone(), Err("rolled back")),
            (rolled_back.clone(), E::Held { reason: "x".into() }, Err("rolled back")),
            (rolled_back.clone(), E::VerifiedOnTarget, Err("rolled back")),
            (awaiting.clone(), assign.clone(), Ok("pending")),
            (awaiting.clone(), enqueue.clone(), Err("waits for a target IP")),
            (awaiting.clone(), E::Restored, Err("waits for a target IP")),
            (awaiting.clone(), rollback.clone(), Err("nothing of the account has moved")),
            (awaiting.clone(), E::Held { reason: "zone unreadable".into() }, Ok("held")),
            (held_awaiting.clone(), E::RetryRequested, Ok("awaiting_target_ip")),
            (S::Pending, assign.clone(), Err("not waiting for a target IP")),
            (queued1.clone(), assign.clone(), Err("not waiting for a target IP")),
            (held.clone(), assign.clone(), Err("not waiting for a target IP")),
        ];
        for (state, event, expected) in table {
            let got = account_transition(&state, &event, t(20), &POLICY);
            match (expected, got) {
                (Ok(name), Ok(next)) => assert_eq!(next.name(), name, "{state:?} + {event:?}"),
                (Err(fragment), Err(refusal)) => {
                    assert!(refusal.reason.contains(fragment), "{state:?} + {event:?}: {refusal}")
                }
                (expected, got) => {
                    panic!("{state:?} + {event:?}: expected {expected:?}, got {got:?}")
                }
            }
        }
    }

    #[test]
    fn no_account_is_done_before_its_mail_is_synced_and_checked() {
        use AccountEvent as E;
        use AccountState as S;
        let policy = AccountPolicy { final_mail_sync: true, max_mail_syncs: 2, ..POLICY };
        let notified = S::Notified { notice_id: 9, at: t(9), switched_at: Some(t(8)) };
        let syncing = S::SyncingMail { switched_at: t(8), syncs: 0 };
        let synced = E::MailSynced {
            started_at: t(100),
            synced: vec!["mail".into()],
            copied: BTreeMap::from([("example.fi/info".to_owned(), 2)]),
            already_there: 1,
        };
        let checking1 = S::CheckingMail { switched_at: t(8), syncs: 1, last_sync_started_at: t(100) };
        let checking2 = S::CheckingMail { switched_at: t(8), syncs: 2, last_sync_started_at: t(200) };
        let clean = E::MailChecked {
            evidence: MailEvidence {
                delivered_since_switch: 3,
                delivered_since_last_sync: 0,
                last_delivery_at: Some(t(50)),
            },
        };
        let stranded = E::MailChecked {
            evidence: MailEvidence {
                delivered_since_switch: 4,
                delivered_since_last_sync: 1,
                last_delivery_at: Some(t(150)),
            },
        };
        let held = S::Held { reason: "x".into(), at: t(300), resume: Box::new(syncing.clone()) };
        let table: Vec<(S, E, Result<S, &str>)> = vec![
            (notified.clone(), E::NoticeSent, Ok(syncing.clone())),
            // Stored before `switched_at` existed: the notice's queueing time stands in.
            (
                S::Notified { notice_id: 9, at: t(9), switched_at: None },
                E::NoticeSent,
                Ok(S::SyncingMail { switched_at: t(9), syncs: 0 }),
            ),
            (syncing.clone(), synced.clone(), Ok(checking1.clone())),
            (syncing.clone(), clean.clone(), Err("next step is the final delta sync")),
            (syncing.clone(), E::NoticeSent, Err("next step is the final delta sync")),
            (checking1.clone(), clean.clone(), Ok(S::Done { at: t(20) })),
            // Something landed on the source after the sync began: sync again.
            (checking1.clone(), stranded.clone(), Ok(S::SyncingMail { switched_at: t(8), syncs: 1 })),
            (checking1.clone(), synced.clone(), Err("must be checked after the delta sync")),
            (checking1.clone(), E::NoticeSent, Err("must be checked after the delta sync")),
            (checking2.clone(), clean.clone(), Ok(S::Done { at: t(20) })),
            (held.clone(), E::RetryRequested, Ok(syncing.clone())),
            (
                checking1.clone(),
                E::RolledBack { reason: "x".into(), domain: None },
                Ok(S::RolledBack { reason: "x".into(), domain: None, at: t(20) }),
            ),
        ];
        for (state, event, expected) in table {
            let got = account_transition(&state, &event, t(20), &policy);
            match (expected, got) {
                (Ok(want), Ok(next)) => assert_eq!(next, want, "{state:?} + {event:?}"),
                (Err(fragment), Err(refusal)) => {
                    assert!(refusal.reason.contains(fragment), "{state:?} + {event:?}: {refusal}")
                }
                (expected, got) => panic!("{state:?} + {event:?}: expected {expected:?}, got {got:?}"),
            }
        }
        // Bounded: after the last allowed sync, mail still landing holds the account with the
        // evidence, and a retry starts a fresh round.
        let next = account_transition(&checking2, &stranded, t(20), &policy).unwrap();
        let S::Held { reason, resume, .. } = &next else { panic!("{next:?}") };
        assert!(reason.contains("after 2 delta sync(s): 1 message(s)"), "{reason}");
        assert_eq!(**resume, S::SyncingMail { switched_at: t(8), syncs: 0 });
        // Without the final sync, the sent notice is the end.
        let off = AccountPolicy { final_mail_sync: false, ..policy };
        assert_eq!(
            account_transition(&notified, &E::NoticeSent, t(20), &off).unwrap(),
            S::Done { at: t(20) }
        );
        assert_eq!(account_next_step(&syncing), Some(AccountStep::SyncMail));
        assert_eq!(account_next_step(&checking1), Some(AccountStep::CheckMail));
        assert!(!syncing.is_settled() && !checking1.is_settled() && !syncing.wants_transfer());
        let json = serde_json::to_string(&checking1).unwrap();
        assert_eq!(serde_json::from_str::<AccountState>(&json).unwrap(), checking1);
        // A state stored before the field existed still reads.
        let old = r#"{"state":"notified","notice_id":3,"at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(
            serde_json::from_str::<AccountState>(old).unwrap(),
            S::Notified { switched_at: None, .. }
        ));
    }

    #[test]
    fn mismatch_proceeds_when_the_playbook_says_so() {
        let policy = AccountPolicy { hold_on_mismatch: false, ..POLICY };
        let event = AccountEvent::VerificationFailed { evidence: "title differs".into() };
        let next = account_transition(&AccountState::Restored { at: t(0) }, &event, t(1), &policy).unwrap();
        assert_eq!(next.name(), "verified");
    }

    #[test]
    fn next_steps() {
        assert_eq!(account_next_step(&AccountState::Restored { at: t(0) }), Some(AccountStep::Verify));
        assert_eq!(account_next_step(&AccountState::Verified { at: t(0) }), Some(AccountStep::Repoint));
        assert_eq!(account_next_step(&AccountState::Switched { at: t(0) }), Some(AccountStep::QueueNotice));
        assert_eq!(account_next_step(&AccountState::Pending), None);
        assert!(AccountState::Pending.wants_transfer());
        assert!(
            !AccountState::Held { reason: String::new(), at: t(0), resume: Box::new(AccountState::Pending) }
                .wants_transfer()
        );
    }

    fn rec(name: &str, rtype: &str, old_ttl: u32) -> ObservedRecord {
        ObservedRecord::changed(name, rtype, old_ttl)
    }

    #[test]
    fn per_record_gates_and_the_domains_gate() {
        let records = vec![rec("kukka.test.", "A", 3600), rec("www.kukka.test.", "A", 300)];
        let gates = GATE.record_gates(t(0), &records);
        assert_eq!(gates.iter().map(|g| g.opens_at).collect::<Vec<_>>(), vec![t(3630), t(330)]);
        assert_eq!(GATE.domain_opens_at(t(0), &records), t(3630));
        assert_eq!(GATE.domain_opens_at(t(7), &[]), t(7), "nothing changes: nothing to wait for");
        let lowered = DomainState::TtlLowered { records: records.clone(), lowered_at: t(0) };
        assert_eq!(lowered.gates(&GATE), gates);
        assert!(DomainState::Pending.gates(&GATE).is_empty());
    }

    #[test]
    fn a_created_record_is_gated_by_the_negative_ttl() {
        // The AAAA created next to an A of TTL 300 in a zone whose negative TTL is 900: its gate
        // is the negative TTL's (RFC 2308), and it becomes the domain's gate.
        let created = ObservedRecord {
            created: vec!["2001:db8::3".into()],
            negative_ttl: Some(900),
            ..rec("kukka.test.", "AAAA", 300)
        };
        assert_eq!(created.gate_ttl(), 900);
        let records = vec![rec("kukka.test.", "A", 300), created];
        let gates = GATE.record_gates(t(0), &records);
        assert_eq!(gates.iter().map(|g| g.opens_at).collect::<Vec<_>>(), vec![t(330), t(930)]);
        assert_eq!(gates[1].negative_ttl, Some(900));
        assert_eq!(GATE.domain_opens_at(t(0), &records), t(930));
        let verified = DomainState::VerifiedOnTarget { records: records.clone(), lowered_at: t(0) };
        let err = domain_transition(&verified, &DomainEvent::Repointed, t(400), &GATE).unwrap_err();
        assert!(err.reason.contains("negative-caching TTL 900 s"), "{}", err.reason);
        assert!(domain_transition(&verified, &DomainEvent::Repointed, t(930), &GATE).is_ok());
        // Older stored states (no created/removed fields) still read.
        let old: ObservedRecord =
            serde_json::from_str(r#"{"name":"kukka.test.","rtype":"A","old_ttl":60}"#).unwrap();
        assert_eq!(old, rec("kukka.test.", "A", 60));
    }

    #[test]
    fn domain_transitions() {
        use DomainEvent as E;
        use DomainState as S;
        // www has TTL 300, the apex 3600: the domain's gate is the apex's, 3630 s after lowering.
        let records = vec![rec("kukka.test.", "A", 3600), rec("www.kukka.test.", "A", 300)];
        let short_only = vec![rec("www.kukka.test.", "A", 300)];
        let observed = S::TtlObserved { records: records.clone() };
        let lowered = S::TtlLowered { records: records.clone(), lowered_at: t(0) };
        let verified = S::VerifiedOnTarget { records: records.clone(), lowered_at: t(0) };
        let verified_short = S::VerifiedOnTarget { records: short_only.clone(), lowered_at: t(0) };
        let repointed = S::Repointed { records: records.clone(), lowered_at: t(0), at: t(4000) };
        let done = S::ServingTarget { records: records.clone(), lowered_at: t(0), at: t(4001) };
        let restored = S::TtlRestored { records: records.clone(), at: t(9000) };
        let rolled_back = S::RolledBack {
            records: records.clone(),
            lowered_at: t(0),
            reason: "shop broken".into(),
            at: t(5000),
            ttl_restored_at: None,
        };
        let rolled_back_restored = S::RolledBack {
            records: records.clone(),
            lowered_at: t(0),
            reason: "shop broken".into(),
            at: t(5000),
            ttl_restored_at: Some(t(9000)),
        };
        assert_eq!(rolled_back_restored.lowered_at(), None, "no short TTL: no gate");
        assert!(rolled_back_restored.gates(&GATE).is_empty());
        let rollback = E::RolledBack { reason: "shop broken".into() };
        let observe = E::TtlObserved { records: records.clone() };
        let table: Vec<(S, E, i64, Result<&str, &str>)> = vec![
            (S::Pending, observe.clone(), 0, Ok("ttl_observed")),
            (S::Pending, E::TtlLowered, 0, Err("not been observed")),
            (S::Pending, E::Repointed, 0, Err("not been observed")),
            (S::Pending, E::AccountVerified, 0, Err("not been observed")),
            (S::Pending, rollback.clone(), 0, Err("nothing was changed")),
            (S::Pending, E::RetryRequested, 0, Err("only a rolled-back domain")),
            (observed.clone(), E::TtlObserved { records: short_only.clone() }, 0, Ok("ttl_observed")),
            (observed.clone(), E::TtlLowered, 0, Ok("ttl_lowered")),
            (observed.clone(), E::AccountVerified, 0, Err("not been lowered")),
            (observed.clone(), E::Repointed, 0, Err("not been lowered")),
            (observed.clone(), rollback.clone(), 0, Err("nothing was changed")),
            (lowered.clone(), E::AccountVerified, 10, Ok("verified_on_target")),
            // The invariant: never repointed before its account is verified on the target.
            (lowered.clone(), E::Repointed, 5000, Err("not been verified")),
            (lowered.clone(), E::TtlLowered, 10, Err("waiting for its account")),
            (lowered.clone(), rollback.clone(), 10, Ok("rolled_back")),
            // The invariant: never before lowered_at + old_ttl + margin, for every record.
            (verified.clone(), E::Repointed, 329, Err("www.kukka.test. A at")),
            (verified.clone(), E::Repointed, 3629, Err("kukka.test. A at")),
            (verified.clone(), E::Repointed, 3630, Ok("repointed")),
            (verified_short.clone(), E::Repointed, 329, Err("old TTL 300 s")),
            (verified_short.clone(), E::Repointed, 330, Ok("repointed")),
            (verified.clone(), E::ResolutionVerified, 3630, Err("next step is the repoint")),
            (verified.clone(), rollback.clone(), 100, Ok("rolled_back")),
            (repointed.clone(), E::ResolutionVerified, 4001, Ok("serving_target")),
            (repointed.clone(), E::Repointed, 4001, Err("resolver check")),
            (repointed.clone(), E::TtlRestored, 4001, Err("resolver check")),
            (repointed.clone(), rollback.clone(), 4001, Ok("rolled_back")),
            (done.clone(), E::Repointed, 5000, Err("already been cut over")),
            (done.clone(), E::TtlRestored, 9000, Ok("ttl_restored")),
            (done.clone(), rollback.clone(), 5000, Ok("rolled_back")),
            (done.clone(), E::RetryRequested, 5000, Err("only a rolled-back domain")),
            (restored.clone(), E::TtlRestored, 9001, Err("TTLs restored")),
            (restored.clone(), E::Repointed, 9001, Err("TTLs restored")),
            (restored.clone(), rollback.clone(), 9001, Ok("rolled_back")),
            (rolled_back.clone(), E::RetryRequested, 6000, Ok("ttl_lowered")),
            (rolled_back.clone(), E::TtlRestored, 9000, Ok("rolled_back")),
            (rolled_back_restored.clone(), E::TtlRestored, 9500, Err("rolled back")),
            (rolled_back_restored.clone(), E::RetryRequested, 9500, Ok("ttl_observed")),
            (rolled_back.clone(), E::Repointed, 6000, Err("rolled back")),
            (rolled_back.clone(), E::AccountVerified, 6000, Err("rolled back")),
            (rolled_back.clone(), rollback.clone(), 6000, Err("rolled back")),
        ];
        for (state, event, now, expected) in table {
            let got = domain_transition(&state, &event, t(now), &GATE);
            match (expected, got) {
                (Ok(name), Ok(next)) => assert_eq!(next.name(), name, "{state:?} + {event:?}"),
                (Err(fragment), Err(refusal)) => {
                    assert!(refusal.reason.contains(fragment), "{state:?} + {event:?}: {refusal}")
                }
                (expected, got) => {
                    panic!("{state:?} + {event:?}: expected {expected:?}, got {got:?}")
                }
            }
        }
    }

    #[test]
    fn external_domain_transitions() {
        use DomainEvent as E;
        use DomainState as S;
        let seen = vec![
            SeenRecord { name: "oma.test.".into(), rtype: "A".into(), value: "192.0.2.10".into() },
            SeenRecord { name: "www.oma.test.".into(), rtype: "A".into(), value: "192.0.2.10".into() },
        ];
        let external = S::External {
            nameservers: vec!["ns1.muu.test".into()],
            seen: seen.clone(),
            observed_ttl: Some(300),
        };
        let ask = E::CustomerMustRepoint { new_value: "192.0.2.20".into(), rewritten: Vec::new() };
        let awaiting = domain_transition(&external, &ask, t(100), &GATE).unwrap();
        assert_eq!(awaiting.name(), "awaiting_customer");
        assert!(awaiting.is_external() && external.is_external() && !S::Pending.is_external());
        assert_eq!(
            awaiting.records_to_change()[1],
            RecordChange {
                name: "www.oma.test.".into(),
                rtype: "A".into(),
                old_value: "192.0.2.10".into(),
                new_value: "192.0.2.20".into(),
            }
        );
        let every = Duration::from_secs(3600);
        assert_eq!(awaiting.reminder_due_at(every), Some(t(3700)));
        let reminded = domain_transition(&awaiting, &E::Reminded, t(3700), &GATE).unwrap();
        assert_eq!(reminded.reminder_due_at(every), Some(t(7300)), "the second reminder counts from since");
        let propagated = domain_transition(&reminded, &E::Propagated, t(5000), &GATE).unwrap();
        assert_eq!(
            propagated,
            S::Propagated {
                since: t(100),
                records_to_change: awaiting.records_to_change().to_vec(),
                reminded: 1,
                at: t(5000),
                observed_ttl: Some(300),
            }
        );
        assert_eq!(propagated.reminder_due_at(every), None);
        let rollback = E::RolledBack { reason: "x".into() };
        let table: Vec<(S, E, Result<&str, &str>)> = vec![
            (external.clone(), ask.clone(), Ok("awaiting_customer")),
            (external.clone(), E::TtlObserved { records: vec![] }, Err("only the customer")),
            (external.clone(), E::TtlLowered, Err("only the customer")),
            (external.clone(), E::AccountVerified, Err("only the customer")),
            (external.clone(), E::Repointed, Err("only the customer")),
            (external.clone(), E::Reminded, Err("not been verified")),
            (external.clone(), E::Propagated, Err("not been verified")),
            (external.clone(), rollback.clone(), Err("not ours")),
            (external.clone(), E::RetryRequested, Err("only the customer")),
            (awaiting.clone(), E::Reminded, Ok("awaiting_customer")),
            (awaiting.clone(), E::Propagated, Ok("propagated")),
            (awaiting.clone(), ask.clone(), Err("waiting for the customer")),
            (awaiting.clone(), E::Repointed, Err("waiting for the customer")),
            (awaiting.clone(), rollback.clone(), Err("not ours")),
            (propagated.clone(), E::Propagated, Err("already shows")),
            (propagated.clone(), E::Reminded, Err("already shows")),
            (propagated.clone(), rollback.clone(), Err("not ours")),
            (S::Pending, ask.clone(), Err("only a domain with external DNS")),
            (
                S::TtlLowered { records: vec![], lowered_at: t(0) },
                E::Propagated,
                Err("only a domain with external DNS"),
            ),
            (
                S::TtlLowered { records: vec![], lowered_at: t(0) },
                E::Reminded,
                Err("only a domain with external DNS"),
            ),
        ];
        for (state, event, expected) in table {
            let got = domain_transition(&state, &event, t(20), &GATE);
            match (expected, got) {
                (Ok(name), Ok(next)) => assert_eq!(next.name(), name, "{state:?} + {event:?}"),
                (Err(fragment), Err(refusal)) => {
                    assert!(refusal.reason.contains(fragment), "{state:?} + {event:?}: {refusal}")
                }
                (expected, got) => panic!("{state:?} + {event:?}: expected {expected:?}, got {got:?}"),
            }
        }
        let json = serde_json::to_string(&awaiting).unwrap();
        assert!(json.contains("\"state\":\"awaiting_customer\""), "{json}");
        assert_eq!(serde_json::from_str::<DomainState>(&json).unwrap(), awaiting);
        // A state stored under its old name still reads.
        let old = r#"{"state":"done","records":[],"lowered_at":"2026-12-01T00:00:00Z","at":"2026-12-01T01:00:00Z"}"#;
        let read: DomainState = serde_json::from_str(old).unwrap();
        assert_eq!(read.name(), "serving_target");
        assert!(
            !read.is_final()
                && DomainState::NotRepointed { reason: "x".into(), site_elsewhere: true }.is_final()
        );
    }

    #[test]
    fn rollback_keeps_the_records_and_sets_when_the_short_ttl_began() {
        let records = vec![rec("kukka.test.", "A", 3600)];
        let rollback = DomainEvent::RolledBack { reason: "shop broken".into() };
        // Still short since the lowering: the gate counts from the original lowering.
        let done = DomainState::ServingTarget { records: records.clone(), lowered_at: t(0), at: t(4000) };
        let back = domain_transition(&done, &rollback, t(5000), &GATE).unwrap();
        assert_eq!(back.lowered_at(), Some(t(0)));
        assert_eq!(back.records(), records.as_slice());
        // Restored: the rollback lowers again, so a retried repoint waits a full old TTL from now.
        let restored = DomainState::TtlRestored { records: records.clone(), at: t(9000) };
        let back = domain_transition(&restored, &rollback, t(9500), &GATE).unwrap();
        assert_eq!(back.lowered_at(), Some(t(9500)));
        let retried = domain_transition(&back, &DomainEvent::RetryRequested, t(9600), &GATE).unwrap();
        assert_eq!(retried, DomainState::TtlLowered { records, lowered_at: t(9500) });
    }

    #[test]
    fn states_round_trip_through_json() {
        let state = AccountState::Held {
            reason: "RESTORE: disk full".into(),
            at: t(1),
            resume: Box::new(AccountState::Pending),
        };
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"state\":\"held\""), "{json}");
        assert_eq!(serde_json::from_str::<AccountState>(&json).unwrap(), state);
        let paused = MigrationState::Paused {
            previous: Box::new(MigrationState::Started { started_at: t(0) }),
            at: t(1),
        };
        let json = serde_json::to_string(&paused).unwrap();
        assert_eq!(serde_json::from_str::<MigrationState>(&json).unwrap(), paused);
    }

    #[test]
    fn the_transfer_state_names_match_the_states() {
        let queued = AccountState::Queued { session: "s".into(), attempt: 1 };
        let cases = [
            (AccountState::Pending, true, false),
            (AccountState::Failed { attempt: 1, reason: "x".into(), at: t(1) }, true, false),
            (queued.clone(), false, true),
            (AccountState::Copied { session: "s".into(), attempt: 1 }, false, true),
            (AccountState::Held { reason: "x".into(), at: t(3), resume: Box::new(queued) }, false, false),
        ];
        for (state, wants, in_transfer) in cases {
            assert_eq!(state.wants_transfer(), wants, "{state:?}");
            assert_eq!(AccountState::WANTING_TRANSFER.contains(&state.name()), wants, "{state:?}");
            assert_eq!(AccountState::IN_TRANSFER.contains(&state.name()), in_transfer, "{state:?}");
        }
    }

    #[test]
    fn notice_key_is_stable() {
        let m = MigrationId::parse("old1-2026").unwrap();
        let u = AccountName::parse("kukka").unwrap();
        assert_eq!(completion_notice_key(&m, &u), "completion:old1-2026:kukka");
    }
}
