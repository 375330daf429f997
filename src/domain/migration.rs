//! The migration as a whole: its states, events and transitions.

use serde::{Deserialize, Serialize};

use super::*;

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
