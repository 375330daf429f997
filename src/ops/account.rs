//! The actions on one account: retry a held or rolled-back account, roll an account (or one
//! domain) back to the source, assign a dedicated-IP account its target address.

use std::net::Ipv4Addr;

use anyhow::{Context, anyhow, bail};

use super::{job, load, playbook_of, transition};
use crate::domain::{
    AccountEvent, AccountState, DomainEvent, DomainState, GatePolicy, MigrationEvent, MigrationState,
    Timestamp, account_transition, domain_transition, to_millis,
};
use crate::engine::{JobKind, RollbackPayload};
use crate::names::{AccountName, DomainName, MigrationId};
use crate::store::{MigrationRow, NewEvent, NewJob, Store, StoreError, account_state, domain_state};
use crate::world::World;

/// Retries a held account: a transfer-stage hold goes back to the transfer queue, a later
/// hold repeats the stage it was held in.
pub async fn retry(
    store: &Store,
    id: &MigrationId,
    user: &AccountName,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<AccountState> {
    let (row, mut migration) = load(store, id).await?;
    let playbook = playbook_of(&row)?;
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
    if let MigrationState::CutOver { .. } | MigrationState::Settled { .. } = migration {
        migration = transition(&mut tx, &row, &migration, MigrationEvent::Reopened, now, actor).await?;
    }
    tx.set_account_state(id.as_str(), user.as_str(), next.name(), &serde_json::to_string(&next)?, now_ms)
        .await?;
    let event_id = tx
        .append_event(&account_event(
            &row,
            user,
            None,
            event.name(),
            serde_json::json!({ "event": event, "state": next.name() }),
            actor,
            now_ms,
        ))
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
                let detail = serde_json::json!({ "event": event, "state": next.name() });
                tx.append_event(&account_event(
                    &row,
                    user,
                    Some(&domain.domain),
                    event.name(),
                    detail,
                    actor,
                    now_ms,
                ))
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
/// WHM (the migration's source host in `world`) still lists the account. Records the account
/// `rolled_back` with the reason and the actor, and schedules the `rollback` job, which the
/// daemon runs like every effect (leased, retried, recorded): it points the records back at the
/// source, lowers their TTLs again if they had been restored, and checks the nameservers. The
/// engine leaves the account alone from now on until `siirto retry`.
pub async fn rollback(
    store: &Store,
    world: &World,
    request: RollbackRequest<'_>,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<AccountState> {
    let RollbackRequest { id, user, domain, reason } = request;
    if reason.trim().is_empty() {
        bail!("a rollback must say why (--reason)");
    }
    let (row, migration) = load(store, id).await?;
    let source = &world.host(&row.source_host).with_context(|| format!("the source of migration {id}"))?.whm;
    let playbook = playbook_of(&row)?;
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
    // A settled migration is no longer settled: the settle step scheduled below cuts it over
    // again with this account counted as held.
    if let MigrationState::Settled { .. } = migration {
        transition(&mut tx, &row, &migration, MigrationEvent::Reopened, now, actor).await?;
    }
    tx.set_account_state(id.as_str(), user.as_str(), next.name(), &serde_json::to_string(&next)?, now_ms)
        .await?;
    let event_id = tx
        .append_event(&account_event(
            &row,
            user,
            domain.map(DomainName::as_str),
            event.name(),
            serde_json::json!({ "event": event, "state": next.name(), "reason": reason }),
            actor,
            now_ms,
        ))
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

/// What `siirto assign-ip` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The account's new state (`pending`).
    pub state: AccountState,
    /// Its dedicated source address.
    pub source_ip: Ipv4Addr,
    /// Whether a transfer was scheduled now (the cutover is under way); otherwise the account
    /// goes with the transfers when the TTL gate opens.
    pub transfer_scheduled: bool,
}

/// Assigns the target's dedicated address `ip` to an account waiting for one. Refused, with
/// the account and the address named, when the migration has no such account, the account is
/// not waiting for a target IP, the target's `listips` does not list `ip` as a dedicated
/// address, the target says an account uses it already, or another account of this
/// migration was given it. Records the assignment and who made it on the account's timeline
/// and, when the cutover is under way, schedules a transfer.
///
/// The target is the migration's target host in `world`. `listips` is documented at
/// <https://api.docs.cpanel.net/openapi/whm/operation/listips> (`dedicated`, `used`).
pub async fn assign_ip(
    store: &Store,
    world: &World,
    id: &MigrationId,
    user: &AccountName,
    ip: Ipv4Addr,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<Assigned> {
    let (row, migration) = load(store, id).await?;
    let target = &world.host(&row.target_host).with_context(|| format!("the target of migration {id}"))?.whm;
    if let MigrationState::Aborted { .. } = migration {
        bail!("migration {id} was aborted; nothing more moves");
    }
    let account = store
        .account(id.as_str(), user.as_str())
        .await?
        .ok_or_else(|| anyhow!("migration {id} has no account {user}"))?;
    let state = account_state(&account)?;
    let AccountState::AwaitingTargetIp { source_ip } = state else {
        bail!(
            "account {user} is {}, not waiting for a target IP: only an account on a dedicated IP at the source, not yet assigned one, takes siirto assign-ip",
            state.name()
        );
    };
    let ips = target
        .list_ips()
        .await
        .with_context(|| format!("asking the target host {} for its addresses (listips)", row.target_host))?;
    let Some(listed) = ips.iter().find(|i| i.ip == ip) else {
        bail!(
            "account {user}: {ip} is not an address of the target host {} (its listips has {})",
            row.target_host,
            ips.iter().map(|i| i.ip.to_string()).collect::<Vec<_>>().join(", ")
        );
    };
    if !listed.dedicated {
        bail!(
            "account {user}: {ip} is a shared address of the target host {}, not a dedicated one",
            row.target_host
        );
    }
    if listed.used {
        bail!("account {user}: {ip} is already used by an account on the target host {}", row.target_host);
    }
    if let Some(other) = store
        .dedicated_ips(id.as_str())
        .await?
        .into_iter()
        .find(|d| d.user != user.as_str() && d.target_ip.as_deref() == Some(ip.to_string().as_str()))
    {
        bail!("account {user}: {ip} is already assigned to account {} of migration {id}", other.user);
    }
    let policy = playbook_of(&row)?.account_policy();
    let event = AccountEvent::TargetIpAssigned { ip };
    let next = account_transition(&state, &event, now, &policy)
        .map_err(|refusal| anyhow!("account {user}: {refusal}"))?;
    let now_ms = to_millis(now);
    let mut tx = store.begin().await?;
    match tx.assign_target_ip(id.as_str(), user.as_str(), &ip.to_string(), actor, now_ms).await {
        Ok(()) => {}
        Err(StoreError::Conflict { key, .. }) => {
            bail!("account {user}: {ip} is already assigned in migration {id}: {key}")
        }
        Err(StoreError::NotFound { .. }) => {
            bail!("account {user} is not waiting for a target IP in migration {id}")
        }
        Err(other) => return Err(other.into()),
    }
    tx.set_account_state(id.as_str(), user.as_str(), next.name(), &serde_json::to_string(&next)?, now_ms)
        .await?;
    let event_id = tx
        .append_event(&account_event(
            &row,
            user,
            None,
            event.name(),
            serde_json::json!({
                "event": event,
                "state": next.name(),
                "source_ip": source_ip.to_string(),
                "target_ip": ip.to_string(),
            }),
            actor,
            now_ms,
        ))
        .await
        .context("recording the assignment")?;
    // Before the gate opens, the gate's own transfer picks the account up.
    let transfer_scheduled = matches!(migration, MigrationState::Transferring { .. });
    if transfer_scheduled {
        tx.schedule_job(&NewJob {
            migration_id: row.id.clone(),
            kind: JobKind::Transfer.as_str().to_owned(),
            subject: String::new(),
            payload: "{}".to_owned(),
            due_at: now_ms,
            dedupe_key: format!("assign_ip:{id}:{user}:{event_id}"),
        })
        .await?;
    }
    tx.commit().await?;
    Ok(Assigned { state: next, source_ip, transfer_scheduled })
}

/// An event of one account (and one of its domains) of the migration, done by `actor`.
fn account_event(
    row: &MigrationRow,
    user: &AccountName,
    domain: Option<&str>,
    kind: &str,
    detail: serde_json::Value,
    actor: &str,
    at: i64,
) -> NewEvent {
    NewEvent {
        migration_id: row.id.clone(),
        account: Some(user.to_string()),
        domain: domain.map(str::to_owned),
        kind: kind.to_owned(),
        detail: detail.to_string(),
        actor: actor.to_owned(),
        at,
    }
}
