//! One domain's DNS: the records observed and their TTL gates, its states, events and
//! transitions (our own zones and domains on someone else's DNS).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

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
        /// When the last reminder was queued: the next waits `every` after it, so a daemon
        /// that was down (or a clock that jumped) sends one reminder, not one per missed slot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_reminded_at: Option<Timestamp>,
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
            DomainState::AwaitingCustomer { since, reminded, last_reminded_at, .. } => {
                let slot = add(*since, every.saturating_mul(reminded.saturating_add(1)));
                Some(match last_reminded_at {
                    Some(last) => slot.max(add(*last, every)),
                    None => slot,
                })
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
                last_reminded_at: None,
            })
        }
        (
            S::AwaitingCustomer { since, records_to_change, reminded, observed_ttl, silent, .. },
            E::Reminded,
        ) => Ok(S::AwaitingCustomer {
            since: *since,
            records_to_change: records_to_change.clone(),
            reminded: reminded.saturating_add(1),
            observed_ttl: *observed_ttl,
            silent: silent.clone(),
            last_reminded_at: Some(now),
        }),
        (
            S::AwaitingCustomer {
                since, records_to_change, reminded, observed_ttl, last_reminded_at, ..
            },
            E::ResolversSilent { resolvers },
        ) => Ok(S::AwaitingCustomer {
            since: *since,
            records_to_change: records_to_change.clone(),
            reminded: *reminded,
            observed_ttl: *observed_ttl,
            silent: resolvers.clone(),
            last_reminded_at: *last_reminded_at,
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
