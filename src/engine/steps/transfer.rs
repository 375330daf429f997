//! Transfers: the accounts that want one go into a transfer session on the target (packages
//! first), the session is started, and its master log is read until every account in it has an
//! outcome.

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use tracing::{debug, info, warn};

use crate::domain::{AccountEvent, AccountState, MigrationState};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::engine::jobs::{JobKind, SessionPayload};
use crate::names::{AccountName, DomainName};
use crate::store::{AccountRow, JobRow, Lease, account_state};
use crate::whm::{AccountItem, ItemOutcome, SessionState, TransferSessionId, item_outcomes};

/// Creates a transfer session on the target for the next accounts that want one.
pub async fn transfer(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let MigrationState::Transferring { .. } = ctx.state else {
        return cx.finish(lease).await;
    };
    // Only what this session needs, never the whole migration: the accounts that want a
    // transfer or are in one, a session's worth and the few on a dedicated IP more.
    let dedicated = cx.dedicated_all(ctx).await?;
    let per_session = ctx.playbook.transfer.accounts_per_session as usize;
    let some = (per_session + dedicated.len() + 1) as i64;
    let mut busy_or_waiting = AccountState::WANTING_TRANSFER.to_vec();
    busy_or_waiting.extend(AccountState::IN_TRANSFER);
    // Accounts on a dedicated IP move last: not while any other account still wants a
    // transfer or is in one. More rows than there are dedicated accounts hold one that is not,
    // if any is busy or waiting.
    let others_busy = cx
        .store
        .accounts_in_states(ctx.id.as_str(), &busy_or_waiting, dedicated.len() as i64 + 1)
        .await?
        .iter()
        .any(|row| !dedicated.contains_key(&row.user));
    let mut batch = Vec::new();
    for row in cx.store.accounts_in_states(ctx.id.as_str(), &AccountState::WANTING_TRANSFER, some).await? {
        if account_state(&row)?.wants_transfer() && !(others_busy && dedicated.contains_key(&row.user)) {
            batch.push(row);
        }
        if batch.len() >= per_session {
            break;
        }
    }
    if batch.is_empty() {
        return cx.finish(lease).await;
    }
    let request = crate::preflight::remote_root_session(&ctx.source, &ctx.playbook);
    lease.check()?;
    let session =
        ctx.target.whm.create_remote_root_transfer_session(&request).await.map_err(|err| classify!(err))?;
    // Each customer is told when the first of their accounts enters its transfer.
    let start_notices = super::announce::start_notices(cx, ctx, &batch).await?;
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    super::announce::queue_notices(cx, &mut tx, ctx, &start_notices).await?;
    let mut users = Vec::new();
    for row in &batch {
        let state = account_state(row)?;
        cx.apply_account(
            &mut tx,
            ctx,
            &row.user,
            &state,
            AccountEvent::Enqueued { session: session.as_str().to_owned() },
        )
        .await?;
        users.push(row.user.clone());
    }
    let payload = serde_json::to_value(SessionPayload { accounts: users }).context("session payload")?;
    let dedupe = format!("start_session:{}:{}", ctx.id, session.as_str());
    tx.schedule_job(&cx.job(ctx, JobKind::StartSession, session.as_str(), payload, now, dedupe)).await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(session = session.as_str(), accounts = batch.len(), "transfer session created");
    Ok(())
}

/// Enqueues a session's accounts and starts it, unless it was started already.
pub async fn start_session(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let session =
        TransferSessionId::parse(&job.subject).map_err(|err| StepError::Permanent(anyhow!("{err}")))?;
    let payload: SessionPayload = serde_json::from_str(&job.payload).context("session job payload")?;
    let state = ctx.target.whm.transfer_session_state(&session).await.map_err(|err| classify!(err))?;
    let mut refused: Vec<(Option<&str>, String)> = Vec::new();
    if matches!(state, SessionState::Pending | SessionState::TransferPending) {
        // The session's accounts alone, never the whole migration.
        let accounts = cx.store.accounts_named(ctx.id.as_str(), &payload.accounts).await?;
        let by_user: HashMap<&str, &AccountRow> = accounts.iter().map(|a| (a.user.as_str(), a)).collect();
        // Packages first: the ones the session's accounts use that the target lacks.
        let users = accounts.iter().map(|a| a.user.clone()).collect();
        let packages = crate::transfer_control::packages_to_send(&ctx.source.whm, &ctx.target.whm, &users)
            .await
            .map_err(|err| classify!(err))?;
        // An item the target refuses (result 0: "already queued" after a daemon died between
        // two enqueues, a package it will not take, …) does not stop the session: the refusal
        // is recorded, and an account without a result when the session ends is failed and
        // retried in a new session like any other. Only transport errors retry the job.
        for package in &packages {
            lease.check()?;
            match ctx.target.whm.enqueue_package(&session, package).await {
                Ok(()) => {}
                Err(err) if !err.is_transient() => refused.push((None, format!("package {package}: {err}"))),
                Err(err) => return Err(classify!(err)),
            }
        }
        for user in &payload.accounts {
            let row = by_user
                .get(user.as_str())
                .ok_or_else(|| anyhow!("account {user} vanished from the store"))?;
            let item = AccountItem {
                user: AccountName::parse(&row.user).context("stored user")?,
                localuser: AccountName::parse(&row.user).context("stored user")?,
                domain: DomainName::parse(&row.main_domain).context("stored domain")?,
                size_bytes: (row.disk_mb.max(1) as u64) * 1024 * 1024,
            };
            lease.check()?;
            match ctx.target.whm.enqueue_account(&session, &item).await {
                Ok(()) => {}
                Err(err) if !err.is_transient() => refused.push((Some(user.as_str()), err.to_string())),
                Err(err) => return Err(classify!(err)),
            }
        }
        lease.check()?;
        ctx.target.whm.start_transfer_session(&session).await.map_err(|err| classify!(err))?;
    }
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    for (user, message) in refused {
        let detail = serde_json::json!({ "session": session.as_str(), "message": message });
        // A re-run after a daemon died between two enqueues: the target already holds the
        // item, which is what this step wanted. A repeat, not a refusal: no warning.
        let kind = if is_already_queued(&message) {
            debug!(session = session.as_str(), account = ?user, "the item was queued by an earlier run");
            "transfer_item_already_queued"
        } else {
            warn!(session = session.as_str(), account = ?user, %message, "the target refused a transfer item");
            "transfer_item_refused"
        };
        tx.append_event(&cx.event(ctx, user, None, kind, detail)).await?;
    }
    let dedupe = format!("poll_session:{}:{}", ctx.id, session.as_str());
    let due = now + ctx.playbook.transfer.poll_interval.as_millis() as i64;
    tx.schedule_job(&cx.job(ctx, JobKind::PollSession, session.as_str(), serde_json::json!({}), due, dedupe))
        .await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// True for the target's refusal of an item the session already holds (`enqueue_transfer_item`
/// answering result 0 with "… is already queued …").
fn is_already_queued(message: &str) -> bool {
    message.to_ascii_lowercase().contains("already queued")
}

/// Reads the session's master log and moves each of its accounts on; decides per item,
/// never by the session's state (a session completes with failed items).
pub async fn poll_session(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let session =
        TransferSessionId::parse(&job.subject).map_err(|err| StepError::Permanent(anyhow!("{err}")))?;
    let state = ctx.target.whm.transfer_session_state(&session).await.map_err(|err| classify!(err))?;
    let lines = ctx.target.whm.transfer_session_log(&session).await.map_err(|err| classify!(err))?;
    let outcomes = item_outcomes(&lines);
    // The accounts in a session (this one among them), not the whole migration.
    let accounts = cx.store.accounts_in_states(ctx.id.as_str(), &AccountState::IN_TRANSFER, i64::MAX).await?;
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    let mut still_running = 0;
    for row in &accounts {
        let mut current = account_state(row)?;
        let in_session = match &current {
            AccountState::Queued { session: s, .. } | AccountState::Copied { session: s, .. } => {
                s == session.as_str()
            }
            _ => false,
        };
        if !in_session {
            continue;
        }
        let outcome = outcomes.get(&row.user);
        let events: Vec<AccountEvent> = match (outcome, &current) {
            (Some(ItemOutcome::Copied), AccountState::Queued { .. }) => vec![AccountEvent::Copied],
            (Some(ItemOutcome::Restored), AccountState::Queued { .. }) => {
                vec![AccountEvent::Copied, AccountEvent::Restored]
            }
            (Some(ItemOutcome::Restored), AccountState::Copied { .. }) => vec![AccountEvent::Restored],
            (Some(ItemOutcome::Failed { queue, message }), _) => {
                vec![AccountEvent::TransferFailed { queue: queue.clone(), message: message.clone() }]
            }
            _ if state.is_terminal() => vec![AccountEvent::TransferFailed {
                queue: "SESSION".to_owned(),
                message: format!(
                    "session {} ended {state:?} without a result for this account",
                    session.as_str()
                ),
            }],
            _ => Vec::new(),
        };
        for event in events {
            current = cx.apply_account(&mut tx, ctx, &row.user, &current, event).await?;
        }
        if matches!(current, AccountState::Queued { .. } | AccountState::Copied { .. }) {
            still_running += 1;
        }
    }
    if state.is_terminal() || still_running == 0 {
        // The next batch (and failed accounts' retries) go in a new session.
        let dedupe = format!("transfer:{}:after:{}", ctx.id, session.as_str());
        tx.schedule_job(&cx.job(ctx, JobKind::Transfer, "", serde_json::json!({}), now, dedupe)).await?;
        tx.finish_job(lease, now).await?;
    } else {
        tx.reschedule_job(lease, now + ctx.playbook.transfer.poll_interval.as_millis() as i64).await?;
    }
    Ok(tx.commit().await?)
}
