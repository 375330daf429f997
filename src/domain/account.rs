//! One cPanel account: its states, events, transitions and the next step each state asks for.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::*;

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
    /// The completion notice was refused for good (no such mailbox): the account moves on, and
    /// customer service is told to call the customer.
    NoticeFailed {
        /// The server's words.
        reason: String,
    },
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
            AccountEvent::NoticeFailed { .. } => "notice_failed",
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
            AccountEvent::NoticeFailed { reason } => {
                format!("completion notice could not be delivered ({reason}); customer service was told")
            }
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
        (S::Notified { switched_at, at, .. }, E::NoticeSent | E::NoticeFailed { .. }) => {
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

/// The dedupe key of a customer's completion notice about `users` (their switched accounts, by
/// name): the outbox's unique key, so the notice is a single row however often the step runs.
pub fn completion_notice_key(migration: &MigrationId, customer: &str, users: &[&str]) -> String {
    format!("completion:{migration}:{customer}:{}", users.join(","))
}

/// The dedupe key of reminder `n` (from 1) to repoint a domain with external DNS.
pub fn reminder_notice_key(migration: &MigrationId, domain: &DomainName, n: u32) -> String {
    format!("reminder:{migration}:{domain}:{n}")
}
