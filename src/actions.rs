//! Operator actions on a migration: start, pause, resume, abort, retry an account, roll an
//! account (or one domain) back to the source.
//!
//! The CLI calls these directly on the store (and the status page will call the same
//! functions); the daemon reconciles what they record. Each action is one transaction: the
//! transition, the event (with who did it) and the jobs it schedules.

use anyhow::{Context, anyhow, bail};

use crate::domain::{
    AccountEvent, AccountState, DomainEvent, DomainState, GatePolicy, MigrationEvent, MigrationState,
    Timestamp, account_transition, domain_transition, migration_transition, to_millis,
};
use crate::engine::{JobKind, RollbackPayload};
use crate::names::{AccountName, DomainName, MigrationId};
use crate::playbook::Playbook;
use crate::store::{MigrationRow, NewEvent, NewJob, Store, Tx, account_state, domain_state, migration_state};

async fn load(store: &Store, id: &MigrationId) -> anyhow::Result<(MigrationRow, MigrationState)> {
    let row = store.migration(id.as_str()).await?.ok_or_else(|| anyhow!("there is no migration {id}"))?;
    let state = migration_state(&row)?;
    Ok((row, state))
}

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

/// Approves a reviewed plan, recording who approved it; only an approved plan can be started.
pub async fn approve(
    store: &Store,
    id: &MigrationId,
    by: &str,
    now: Timestamp,
) -> anyhow::Result<MigrationState> {
    act(store, id, MigrationEvent::Approved { by: by.to_owned() }, now, by).await
}

/// Starts an approved migration: the daemon lowers the TTLs at the playbook's offset before the
/// cutover (at once if that moment has passed).
pub async fn start(
    store: &Store,
    id: &MigrationId,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<MigrationState> {
    let (row, state) = load(store, id).await?;
    let playbook =
        Playbook::parse(&row.playbook, &format!("playbook of migration {id}")).map_err(|e| anyhow!("{e}"))?;
    let lower_at = row.cutover_at - playbook.schedule.lower_ttl_before.as_millis() as i64;
    let mut tx = store.begin().await?;
    let next = transition(&mut tx, &row, &state, MigrationEvent::Started, now, actor).await?;
    tx.schedule_job(&job(
        &row,
        JobKind::LowerTtl,
        "",
        lower_at.max(to_millis(now)),
        format!("lower_ttl:{id}"),
    ))
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// Pauses a running migration; jobs wait until it is resumed.
pub async fn pause(
    store: &Store,
    id: &MigrationId,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<MigrationState> {
    act(store, id, MigrationEvent::Paused, now, actor).await
}

/// Resumes a paused migration where it stood.
pub async fn resume(
    store: &Store,
    id: &MigrationId,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<MigrationState> {
    act(store, id, MigrationEvent::Resumed, now, actor).await
}

/// Aborts a migration: nothing further happens to it.
pub async fn abort(
    store: &Store,
    id: &MigrationId,
    reason: &str,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<MigrationState> {
    act(store, id, MigrationEvent::Aborted { reason: reason.to_owned() }, now, actor).await
}

/// Retries a held account: a transfer-stage hold goes back to the transfer queue, a later
/// hold repeats the stage it was held in.
pub async fn retry(
    store: &Store,
    id: &MigrationId,
    user: &AccountName,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<AccountState> {
    let (row, mut migration) = load(store, id).await?;
    let playbook =
        Playbook::parse(&row.playbook, &format!("playbook of migration {id}")).map_err(|e| anyhow!("{e}"))?;
    let account = store
        .account(id.as_str(), user.as_str())
        .await?
        .ok_or_else(|| anyhow!("migration {id} has no account {user}"))?;
    let state = account_state(&account)?;
    if !matches!(state, AccountState::Held { .. } | AccountState::RolledBack { .. }) {
        bail!("account {user} is {}, not held or rolled back: there is nothing to retry", state.name());
    }
    let rolled_back = matches!(state, AccountState::RolledBack { .. });
    if rolled_back
        && store.jobs(id.as_str()).await?.iter().any(|j| {
            j.kind == JobKind::Rollback.as_str() && j.subject == user.as_str() && j.done_at.is_none()
        })
    {
        bail!("account {user}: its rollback is still being carried out by the daemon; retry when it is done");
    }
    let policy = playbook.account_policy();
    let event = AccountEvent::RetryRequested;
    let next = account_transition(&state, &event, now, &policy)
        .map_err(|refusal| anyhow!("account {user}: {refusal}"))?;
    let now_ms = to_millis(now);
    let mut tx = store.begin().await?;
    if let MigrationState::CutOver { .. } = migration {
        migration = transition(&mut tx, &row, &migration, MigrationEvent::Reopened, now, actor).await?;
    }
    tx.set_account_state(id.as_str(), user.as_str(), next.name(), &serde_json::to_string(&next)?, now_ms)
        .await?;
    let event_id = tx
        .append_event(&NewEvent {
            migration_id: row.id.clone(),
            account: Some(user.to_string()),
            domain: None,
            kind: event.name().to_owned(),
            detail: serde_json::json!({ "event": event, "state": next.name() }).to_string(),
            actor: actor.to_owned(),
            at: now_ms,
        })
        .await
        .context("recording the retry")?;
    if rolled_back {
        // Its rolled-back domains wait for the account's verification on the target again.
        let gate =
            GatePolicy { margin: playbook.dns.gate_margin, wait_override: playbook.dns.gate_wait_override };
        for domain in store.domains_of(id.as_str(), user.as_str()).await? {
            let state = domain_state(&domain)?;
            if let DomainState::RolledBack { .. } = state {
                let event = DomainEvent::RetryRequested;
                let next = domain_transition(&state, &event, now, &gate)
                    .map_err(|refusal| anyhow!("domain {}: {refusal}", domain.domain))?;
                tx.set_domain_state(
                    id.as_str(),
                    &domain.domain,
                    next.name(),
                    &serde_json::to_string(&next)?,
                    now_ms,
                )
                .await?;
                tx.append_event(&NewEvent {
                    migration_id: row.id.clone(),
                    account: Some(user.to_string()),
                    domain: Some(domain.domain.clone()),
                    kind: event.name().to_owned(),
                    detail: serde_json::json!({ "event": event, "state": next.name() }).to_string(),
                    actor: actor.to_owned(),
                    at: now_ms,
                })
                .await?;
            }
        }
    }
    let (kind, subject) = match &next {
        AccountState::Restored { .. } => (JobKind::Verify, user.to_string()),
        AccountState::Verified { .. } => (JobKind::Repoint, user.to_string()),
        AccountState::Switched { .. } => (JobKind::QueueNotice, user.to_string()),
        AccountState::Notified { notice_id, .. } => (JobKind::SendNotice, notice_id.to_string()),
        AccountState::SyncingMail { .. } => (JobKind::SyncMail, user.to_string()),
        AccountState::CheckingMail { .. } => (JobKind::CheckMail, user.to_string()),
        _ => (JobKind::Transfer, String::new()),
    };
    // A transfer before the gate opened is scheduled by the gate itself.
    let gate_open = matches!(migration, MigrationState::Transferring { .. });
    if kind != JobKind::Transfer || gate_open {
        let dedupe = format!("retry:{id}:{user}:{event_id}");
        tx.schedule_job(&job(&row, kind, &subject, now_ms, dedupe)).await?;
    }
    tx.commit().await?;
    Ok(next)
}

/// What to roll back and why.
#[derive(Debug, Clone, Copy)]
pub struct RollbackRequest<'a> {
    /// The migration.
    pub id: &'a MigrationId,
    /// The account.
    pub user: &'a AccountName,
    /// One of its domains, or `None` for all of them.
    pub domain: Option<&'a DomainName>,
    /// Why (recorded in the event log with who asked).
    pub reason: &'a str,
}

/// Rolls an account (or one of its domains) back to the source: refused unless the source's
/// WHM (`source`, the migration's source host) still lists the account. Records the account
/// `rolled_back` with the reason and the actor, and schedules the `rollback` job, which the
/// daemon runs like every effect (leased, retried, recorded): it points the records back at the
/// source, lowers their TTLs again if they had been restored, and checks the nameservers. The
/// engine leaves the account alone from now on until `siirto retry`.
pub async fn rollback(
    store: &Store,
    source: &crate::whm::WhmClient,
    request: RollbackRequest<'_>,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<AccountState> {
    let RollbackRequest { id, user, domain, reason } = request;
    if reason.trim().is_empty() {
        bail!("a rollback must say why (--reason)");
    }
    let (row, _) = load(store, id).await?;
    let playbook =
        Playbook::parse(&row.playbook, &format!("playbook of migration {id}")).map_err(|e| anyhow!("{e}"))?;
    let account = store
        .account(id.as_str(), user.as_str())
        .await?
        .ok_or_else(|| anyhow!("migration {id} has no account {user}"))?;
    if let Some(domain) = domain {
        let domains = store.domains_of(id.as_str(), user.as_str()).await?;
        if !domains.iter().any(|d| d.domain == domain.as_str()) {
            bail!("account {user} has no domain {domain} whose DNS siirto changes in migration {id}");
        }
    }
    let listing = source.list_accounts().await.with_context(|| {
        format!("asking the source host {} whether it still holds {user}", row.source_host)
    })?;
    if !listing.items.iter().any(|a| &a.user == user) {
        bail!(
            "the source host {} no longer holds account {user}: there is nothing to roll back to",
            row.source_host
        );
    }
    let state = account_state(&account)?;
    let policy = playbook.account_policy();
    let event =
        AccountEvent::RolledBack { reason: reason.to_owned(), domain: domain.map(ToString::to_string) };
    let next = account_transition(&state, &event, now, &policy)
        .map_err(|refusal| anyhow!("account {user}: {refusal}"))?;
    let now_ms = to_millis(now);
    let mut tx = store.begin().await?;
    tx.set_account_state(id.as_str(), user.as_str(), next.name(), &serde_json::to_string(&next)?, now_ms)
        .await?;
    let event_id = tx
        .append_event(&NewEvent {
            migration_id: row.id.clone(),
            account: Some(user.to_string()),
            domain: domain.map(ToString::to_string),
            kind: event.name().to_owned(),
            detail: serde_json::json!({ "event": event, "state": next.name(), "reason": reason }).to_string(),
            actor: actor.to_owned(),
            at: now_ms,
        })
        .await
        .context("recording the rollback")?;
    let payload = RollbackPayload { domain: domain.map(ToString::to_string), reason: reason.to_owned() };
    let mut rollback_job =
        job(&row, JobKind::Rollback, user.as_str(), now_ms, format!("rollback:{id}:{user}:{event_id}"));
    rollback_job.payload = serde_json::to_string(&payload)?;
    tx.schedule_job(&rollback_job).await?;
    // The account no longer holds the migration's cutover up.
    tx.schedule_job(&job(&row, JobKind::Settle, "", now_ms, format!("settle:{id}:{user}:{event_id}")))
        .await?;
    tx.commit().await?;
    Ok(next)
}
