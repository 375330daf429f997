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
//!   [`AccountState::Switched`], and the outbox row carries [`completion_notice_key`] (the
//!   customer and the accounts it is about) as its unique dedupe key;
//! - no mail is left behind: with the playbook's final mail sync on, an account is
//!   [`AccountState::Done`] only after a delta sync of its mail was followed by a read of the
//!   source's mail log showing no local delivery since that sync began
//!   ([`AccountEvent::MailChecked`]); a delivery after it syncs again, at most
//!   [`AccountPolicy::max_mail_syncs`] times, then the account is held with the evidence.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::names::{DomainName, MigrationId};

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

mod account;
mod dns;
mod migration;

pub use account::*;
pub use dns::*;
pub use migration::*;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

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
        // A daemon down for a day (or a clock that jumped) reminds once, then waits `every`
        // again, instead of one reminder per missed slot.
        let late = domain_transition(&reminded, &E::Reminded, t(90_000), &GATE).unwrap();
        assert_eq!(late.reminder_due_at(every), Some(t(93_600)));
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
        assert_eq!(
            completion_notice_key(&m, "customer-C1", &["kukka", "kukka2"]),
            "completion:old1-2026:customer-C1:kukka,kukka2"
        );
    }
}
