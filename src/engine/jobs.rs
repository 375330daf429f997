//! The kinds of work in the jobs table and their payloads.

use serde::{Deserialize, Serialize};

/// The kinds of work in the jobs table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Observe and lower the TTLs of the migrating records (migration-wide).
    LowerTtl,
    /// Open the TTL gate once the old TTLs have expired (migration-wide).
    OpenGate,
    /// Put the accounts that want a transfer into a new transfer session (migration-wide).
    Transfer,
    /// Enqueue a session's accounts and start it (subject: session id).
    StartSession,
    /// Read a session's state and log (subject: session id).
    PollSession,
    /// Check an account's sites on the target (subject: user).
    Verify,
    /// Repoint an account's domains and verify through the resolver (subject: user).
    Repoint,
    /// Write an account's completion notice to the outbox (subject: user).
    QueueNotice,
    /// Send one outbox row (subject: notice id).
    SendNotice,
    /// See whether every account has settled (migration-wide).
    Settle,
    /// Give an account's changed records their original TTLs back after the settle period
    /// (subject: user).
    RestoreTtl,
    /// Point an account's records (or one domain's) back at the source (subject: user;
    /// payload: the domain, if one).
    Rollback,
    /// Ask public DNS whether a domain with external DNS shows the target's address yet, and
    /// remind its customer when a reminder is due (subject: domain; payload: its user).
    PollExternal,
    /// Delta-sync an account's mail from the source once the old TTL has passed since its
    /// switch (subject: user).
    SyncMail,
    /// Read the source's mail log for local deliveries since the last sync (subject: user).
    CheckMail,
    /// Once a domain on external DNS is propagated and the old records have expired: route its
    /// mail on the source to the target and delta-sync the account's mail, which kept landing
    /// on the source while the customer's records pointed there (subject: domain; payload:
    /// its user).
    ExternalMail,
    /// Write every customer's advance notice to the outbox, `schedule.announce_before` the
    /// cutover (migration-wide).
    Announce,
    /// Brief customer service the day before the cutover (migration-wide).
    BriefStaff,
    /// After a reschedule: correct the advance notices already out, re-date those not out yet
    /// (migration-wide; payload: the old cutover and the reason).
    CorrectNotices,
    /// Run a decommission stage of the old server when it is due (subject: its place among the
    /// playbook's stages).
    Decommission,
}

impl JobKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::LowerTtl => "lower_ttl",
            JobKind::OpenGate => "open_gate",
            JobKind::Transfer => "transfer",
            JobKind::StartSession => "start_session",
            JobKind::PollSession => "poll_session",
            JobKind::Verify => "verify",
            JobKind::Repoint => "repoint",
            JobKind::QueueNotice => "queue_notice",
            JobKind::SendNotice => "send_notice",
            JobKind::Settle => "settle",
            JobKind::RestoreTtl => "restore_ttl",
            JobKind::Rollback => "rollback",
            JobKind::PollExternal => "poll_external",
            JobKind::SyncMail => "sync_mail",
            JobKind::CheckMail => "check_mail",
            JobKind::ExternalMail => "external_mail",
            JobKind::Announce => "announce",
            JobKind::BriefStaff => "brief_staff",
            JobKind::CorrectNotices => "correct_notices",
            JobKind::Decommission => "decommission",
        }
    }

    /// Parses a stored kind.
    pub fn parse(kind: &str) -> Option<JobKind> {
        [
            JobKind::LowerTtl,
            JobKind::OpenGate,
            JobKind::Transfer,
            JobKind::StartSession,
            JobKind::PollSession,
            JobKind::Verify,
            JobKind::Repoint,
            JobKind::QueueNotice,
            JobKind::SendNotice,
            JobKind::Settle,
            JobKind::RestoreTtl,
            JobKind::Rollback,
            JobKind::PollExternal,
            JobKind::SyncMail,
            JobKind::CheckMail,
            JobKind::ExternalMail,
            JobKind::Announce,
            JobKind::BriefStaff,
            JobKind::CorrectNotices,
            JobKind::Decommission,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }

    /// True when the job's step checks its leases itself instead of being cancelled when its
    /// lease is lost: a batch of send jobs, whose other jobs' messages go on (each checking its
    /// own lease before it goes out) and whose messages already accepted get their sent-marks
    /// committed, not dropped.
    pub fn checks_its_leases(self) -> bool {
        self == JobKind::SendNotice
    }

    /// True when a failure of this job concerns one account, which is held when the retry
    /// budget is spent; the other jobs concern the whole migration and keep retrying.
    pub fn is_per_account(self) -> bool {
        match self {
            JobKind::Verify
            | JobKind::Repoint
            | JobKind::QueueNotice
            | JobKind::SendNotice
            | JobKind::SyncMail
            | JobKind::CheckMail => true,
            JobKind::LowerTtl
            | JobKind::OpenGate
            | JobKind::Transfer
            | JobKind::StartSession
            | JobKind::PollSession
            | JobKind::Settle
            // An account that is done or rolled back is not held again: these keep retrying
            // (with the backoff's cap) and show among the status's failing jobs.
            | JobKind::RestoreTtl
            | JobKind::Rollback
            // Waiting for a customer holds nobody; a failing poll (or the mail follow-up of an
            // account that is done) retries with the backoff's cap.
            | JobKind::PollExternal
            | JobKind::ExternalMail
            | JobKind::Announce
            | JobKind::BriefStaff
            | JobKind::CorrectNotices
            // A stage's account that the old server refuses is held within the stage; the
            // stage itself keeps retrying.
            | JobKind::Decommission => false,
        }
    }
}

/// The payload of a session job: which accounts it carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionPayload {
    /// The accounts (cPanel users) the session carries.
    pub accounts: Vec<String>,
}

/// The payload of a rollback job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackPayload {
    /// The one domain rolled back, or `None` for the whole account.
    pub domain: Option<String>,
    /// Why, as the operator gave it.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_kinds_round_trip() {
        for kind in [JobKind::LowerTtl, JobKind::Settle, JobKind::SendNotice] {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::parse("nope"), None);
    }
}
