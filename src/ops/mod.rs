//! One door per operator action. Every verb a person performs on a migration — approve,
//! start (which runs the pre-flight), pre-flight, pause, resume, abort, retry, roll back, assign
//! an IP, acknowledge an operator task — is one function here, taking the store, the adapters it needs, the arguments, the
//! actor and `now`, and returning a typed outcome. The CLI's handlers parse, call one of these
//! and print the outcome; the status page's handlers do the same (STYLE.md #4a, cargo's
//! `ops`). The daemon reconciles what they record.
//!
//! Each action changes the store in one transaction: the transition, the event (with who did
//! it) and the jobs it schedules. Actions that also reach a host (pause, resume and abort tell
//! the target's transfer sessions; a rollback first asks the source whether it still holds the
//! account; assign-ip asks the target's `listips`) do that around the transaction, and record
//! what the host said.

mod account;
mod decommission;
mod migration;
mod tasks;

use anyhow::anyhow;

pub use self::account::{Assigned, RollbackRequest, assign_ip, retry, rollback};
pub use self::decommission::{
    DecommissionPlan, HeldAccount, StagePlan, Undone, decommission_plan, exclude_account, postpone_stage,
    skip_stage, undo_stage,
};
pub use self::migration::{
    Rescheduled, SessionControl, StartOutcome, abort, active_sessions, approve, pause, preflight, reschedule,
    resume, start,
};
pub use self::tasks::{Acknowledged, ack_task, needs_of};
use crate::domain::{MigrationEvent, MigrationState, Timestamp, migration_transition, to_millis};
use crate::engine::JobKind;
use crate::names::MigrationId;
use crate::playbook::Playbook;
use crate::store::{MigrationRow, NewEvent, NewJob, Store, Tx, migration_state};

/// The migration's row and state; an error naming it when there is none.
async fn load(store: &Store, id: &MigrationId) -> anyhow::Result<(MigrationRow, MigrationState)> {
    let row = store.require_migration(id.as_str()).await?;
    let state = migration_state(&row)?;
    Ok((row, state))
}

/// Applies a migration event inside `tx`: transition, state, event log.
async fn transition(
    tx: &mut Tx<'_>,
    row: &MigrationRow,
    state: &MigrationState,
    event: MigrationEvent,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<MigrationState> {
    let next = migration_transition(state, &event, now)
        .map_err(|refusal| anyhow!("migration {}: {refusal}", row.id))?;
    tx.set_migration_state(&row.id, next.name(), &serde_json::to_string(&next)?, to_millis(now)).await?;
    tx.append_event(&NewEvent {
        migration_id: row.id.clone(),
        account: None,
        domain: None,
        kind: event.name().to_owned(),
        detail: serde_json::json!({ "event": event, "state": next.name() }).to_string(),
        actor: actor.to_owned(),
        at: to_millis(now),
    })
    .await?;
    Ok(next)
}

/// A job of the migration due at `due_at`, with no payload.
fn job(row: &MigrationRow, kind: JobKind, subject: &str, due_at: i64, dedupe_key: String) -> NewJob {
    NewJob {
        migration_id: row.id.clone(),
        kind: kind.as_str().to_owned(),
        subject: subject.to_owned(),
        payload: "{}".to_owned(),
        due_at,
        dedupe_key,
    }
}

/// Applies one operator event to a migration in its own transaction.
async fn act(
    store: &Store,
    id: &MigrationId,
    event: MigrationEvent,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<MigrationState> {
    let (row, state) = load(store, id).await?;
    let mut tx = store.begin().await?;
    let next = transition(&mut tx, &row, &state, event, now, actor).await?;
    tx.commit().await?;
    Ok(next)
}

/// The playbook a migration was planned with.
fn playbook_of(row: &MigrationRow) -> anyhow::Result<Playbook> {
    Playbook::parse(&row.playbook, &format!("playbook of migration {}", row.id)).map_err(|e| anyhow!("{e}"))
}
