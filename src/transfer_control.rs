//! Control of a migration's transfer sessions on the target, and the transfer-side checks the
//! engine calls out to:
//!
//! - [`pause`], [`resume`], [`abort`]: the operator actions of the same names, which also reach
//!   the migration's active transfer sessions on the target (WHM API 1
//!   `pause_transfer_session`; a paused session is restarted with `start_transfer_session`,
//!   which "starts or restarts" a session (guide "Pause and Restart",
//!   <https://api.docs.cpanel.net/openapi/whm/operation/start_transfer_session>);
//!   `abort_transfer_session`). The store is changed first (the daemon stops acting on a paused
//!   or aborted migration at once); then each session is told, and the outcome per session is
//!   recorded on the timeline (`transfer_sessions_paused`, `…_resumed`, `…_aborted`).
//! - [`packages_to_send`]: the packages the migration's accounts use that the target lacks,
//!   which a session enqueues (`PackageRemoteRoot`) before its accounts.
//! - [`account_presence`]: whether an account, its domains and its mailboxes exist on the
//!   target (`get_domain_info`, `list_pops_for` on both hosts), for verification.

use std::collections::BTreeSet;

use anyhow::anyhow;
use serde::Serialize;

use crate::domain::{AccountState, MigrationState, Timestamp, to_millis};
use crate::engine::JobKind;
use crate::names::{AccountName, DomainName, MigrationId};
use crate::store::{NewEvent, Store, account_state};
use crate::whm::{SessionState, TransferSessionId, WhmClient, WhmError};

/// What one session said to a control call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionOutcome {
    /// The transfer session id.
    pub session: String,
    /// `paused`, `restarted`, `aborted`, `already ended (STATE)`, or the error.
    pub outcome: String,
    /// False when the target refused or did not answer.
    pub ok: bool,
}

/// The migration's transfer sessions that may still be running on the target: those its
/// queued or copied accounts are in, and those created but not yet started.
pub async fn active_sessions(store: &Store, id: &MigrationId) -> anyhow::Result<Vec<TransferSessionId>> {
    let mut sessions = BTreeSet::new();
    for row in store.accounts(id.as_str()).await? {
        match account_state(&row)? {
            AccountState::Queued { session, .. } | AccountState::Copied { session, .. } => {
                sessions.insert(session);
            }
            _ => {}
        }
    }
    for job in store.jobs(id.as_str()).await? {
        let session_job =
            job.kind == JobKind::StartSession.as_str() || job.kind == JobKind::PollSession.as_str();
        if session_job && job.done_at.is_none() {
            sessions.insert(job.subject);
        }
    }
    sessions
        .into_iter()
        .map(|s| TransferSessionId::parse(&s).map_err(|e| anyhow!("stored session id: {e}")))
        .collect()
}

#[derive(Clone, Copy)]
enum Control {
    Pause,
    Resume,
    Abort,
}

async fn control_sessions(
    store: &Store,
    target: &WhmClient,
    id: &MigrationId,
    control: Control,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<Vec<SessionOutcome>> {
    let mut outcomes = Vec::new();
    for session in active_sessions(store, id).await? {
        let state = match target.transfer_session_state(&session).await {
            Ok(state) => state,
            Err(err) => {
                outcomes.push(SessionOutcome {
                    session: session.to_string(),
                    outcome: err.to_string(),
                    ok: false,
                });
                continue;
            }
        };
        if state.is_terminal() {
            outcomes.push(SessionOutcome {
                session: session.to_string(),
                outcome: format!("already ended ({state:?})"),
                ok: true,
            });
            continue;
        }
        let (result, done): (Result<(), WhmError>, &str) = match control {
            // A session not started yet has nothing to pause; the daemon starts it on resume.
            Control::Pause if matches!(state, SessionState::Pending | SessionState::TransferPending) => {
                (Ok(()), "not started yet; left pending")
            }
            Control::Pause => (target.pause_transfer_session(&session).await, "paused"),
            Control::Resume if state == SessionState::Paused => {
                (target.start_transfer_session(&session).await, "restarted")
            }
            Control::Resume => (Ok(()), "not paused; left as it is"),
            Control::Abort => (target.abort_transfer_session(&session).await, "aborted"),
        };
        outcomes.push(match result {
            Ok(()) => SessionOutcome { session: session.to_string(), outcome: done.to_owned(), ok: true },
            Err(err) => SessionOutcome { session: session.to_string(), outcome: err.to_string(), ok: false },
        });
    }
    if !outcomes.is_empty() {
        let kind = match control {
            Control::Pause => "transfer_sessions_paused",
            Control::Resume => "transfer_sessions_resumed",
            Control::Abort => "transfer_sessions_aborted",
        };
        let mut tx = store.begin().await?;
        tx.append_event(&NewEvent {
            migration_id: id.to_string(),
            account: None,
            domain: None,
            kind: kind.to_owned(),
            detail: serde_json::json!({ "sessions": outcomes }).to_string(),
            actor: actor.to_owned(),
            at: to_millis(now),
        })
        .await?;
        tx.commit().await?;
    }
    Ok(outcomes)
}

/// Pauses the migration, then its active transfer sessions on `target`.
pub async fn pause(
    store: &Store,
    target: &WhmClient,
    id: &MigrationId,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<(MigrationState, Vec<SessionOutcome>)> {
    let state = crate::actions::pause(store, id, now, actor).await?;
    let sessions = control_sessions(store, target, id, Control::Pause, now, actor).await?;
    Ok((state, sessions))
}

/// Resumes the migration, then restarts its paused transfer sessions on `target`.
pub async fn resume(
    store: &Store,
    target: &WhmClient,
    id: &MigrationId,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<(MigrationState, Vec<SessionOutcome>)> {
    let state = crate::actions::resume(store, id, now, actor).await?;
    let sessions = control_sessions(store, target, id, Control::Resume, now, actor).await?;
    Ok((state, sessions))
}

/// Aborts the migration, then its unfinished transfer sessions on `target`.
pub async fn abort(
    store: &Store,
    target: &WhmClient,
    id: &MigrationId,
    reason: &str,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<(MigrationState, Vec<SessionOutcome>)> {
    let state = crate::actions::abort(store, id, reason, now, actor).await?;
    let sessions = control_sessions(store, target, id, Control::Abort, now, actor).await?;
    Ok((state, sessions))
}

/// The packages (`listaccts` `plan`) the migration's accounts use on `source` that `target`
/// does not list (`listpkgs`), sorted. `default` exists everywhere and is never sent.
pub async fn packages_to_send(
    source: &WhmClient,
    target: &WhmClient,
    users: &BTreeSet<String>,
) -> Result<Vec<String>, WhmError> {
    let (accounts, have) = tokio::try_join!(source.list_accounts(), target.list_packages())?;
    let have: BTreeSet<String> = have.into_iter().map(|p| p.name).collect();
    let wanted: BTreeSet<String> = accounts
        .items
        .into_iter()
        .filter(|a| users.contains(a.user.as_str()))
        .map(|a| a.plan)
        .filter(|plan| !plan.is_empty() && plan != "default" && !have.contains(plan))
        .collect();
    Ok(wanted.into_iter().collect())
}

/// What is missing on the target for one account; empty when everything is there.
pub async fn account_presence(
    source: &WhmClient,
    target: &WhmClient,
    user: &AccountName,
    domains: &[DomainName],
) -> Result<Vec<String>, WhmError> {
    let (target_domains, source_pops, target_pops) =
        tokio::try_join!(target.domain_info(), source.list_pops_for(user), async {
            match target.list_pops_for(user).await {
                // No such user on the target: no mailboxes; the missing account is said below.
                Err(WhmError::Failed { .. }) => Ok(Vec::new()),
                other => other,
            }
        })?;
    let owned: BTreeSet<&DomainName> =
        target_domains.items.iter().filter(|d| &d.user == user).map(|d| &d.domain).collect();
    let mut missing = Vec::new();
    if owned.is_empty() {
        missing.push(format!("account {user} does not exist on the target"));
    } else {
        let absent: Vec<&str> =
            domains.iter().filter(|d| !owned.contains(d)).map(DomainName::as_str).collect();
        if !absent.is_empty() {
            missing.push(format!("domains missing on the target: {}", absent.join(", ")));
        }
    }
    let target_pops: BTreeSet<&String> = target_pops.iter().collect();
    let absent: Vec<&str> =
        source_pops.iter().filter(|p| !target_pops.contains(p)).map(String::as_str).collect();
    if !absent.is_empty() {
        missing.push(format!("mailboxes missing on the target: {}", absent.join(", ")));
    }
    Ok(missing)
}
