//! The operator's side of retiring the old server: the preview of the stages
//! (`siirto decommission MIGRATION --plan`), postponing or skipping a stage with a reason, and
//! undoing one (`siirto decommission undo MIGRATION --stage NAME`), which runs its inverse.
//! Every change is an event naming who, when and why.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde_json::json;

use crate::decommission::{
    ActionOutcome, Evidence, OldServer, candidates, dns_gate, merge_detail, wake_next_stage,
};
use crate::domain::{Timestamp, from_millis, to_millis};
use crate::names::{AccountName, DomainName, MigrationId};
use crate::playbook::StageAction;
use crate::store::{NewEvent, StageAccountRow, StageRow, Store};
use crate::world::World;

/// The longest reason an operator may give.
pub const MAX_REASON: usize = 2000;

/// A migration's stages as they stand, with what each would touch now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecommissionPlan {
    /// The migration.
    pub migration: String,
    /// The stages in order.
    pub stages: Vec<StagePlan>,
}

/// One stage: its date, state, and the accounts it did, holds or would take now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StagePlan {
    /// Its place, from 0.
    pub stage: i64,
    /// What people call it.
    pub name: String,
    /// What it does.
    pub action: String,
    /// Whether people do it and confirm it.
    pub manual: bool,
    /// When it is due (RFC 3339, UTC).
    pub due: String,
    /// `pending`, `running`, `ran`, `waiting`, `done`, `skipped` or `undone`.
    pub state: String,
    /// Who postponed, skipped or undid it and why; its tasks.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Accounts it has done.
    pub done: Vec<String>,
    /// Accounts it holds, with the gate's evidence.
    pub held: Vec<HeldAccount>,
    /// Accounts it would act on now (with `--plan`'s live DNS check: those clear now).
    pub would_touch: Vec<String>,
}

/// An account a stage holds, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeldAccount {
    /// The cPanel user.
    pub account: String,
    /// The answers that keep it out (resolver, name, type, answer).
    #[schema(value_type = Vec<Object>)]
    pub evidence: Vec<Evidence>,
    /// Whether this evidence is from just now (`--plan` asks again) or recorded by the stage.
    pub checked_now: bool,
}

/// The stages of a migration as the store has them; with `world`, the accounts each pending
/// account stage would take are checked through public DNS now and split into those it would
/// touch and those it would hold.
pub async fn decommission_plan(
    store: &Store,
    world: Option<&World>,
    id: &MigrationId,
) -> anyhow::Result<DecommissionPlan> {
    let row = store.require_migration(id.as_str()).await?;
    let stages = store.stages(id.as_str()).await?;
    let recorded = store.stage_accounts(id.as_str()).await?;
    let arrived: Vec<String> = store
        .accounts_in_states(id.as_str(), &["done"], i64::MAX)
        .await?
        .into_iter()
        .map(|a| a.user)
        .collect();
    let old = match world {
        Some(world) => {
            let source = world.host(&row.source_host)?;
            Some((world, OldServer { ip: source.ip, ipv6: source.ipv6 }))
        }
        None => None,
    };
    let mut plans = Vec::with_capacity(stages.len());
    for stage in &stages {
        let mine = recorded.iter().filter(|r| r.stage == stage.stage);
        let done = mine.clone().filter(|r| r.state == "done").map(|r| r.user.clone()).collect();
        let mut held: Vec<HeldAccount> = mine
            .filter(|r| r.state == "held")
            .map(|r| HeldAccount {
                account: r.user.clone(),
                evidence: serde_json::from_str(&r.evidence).unwrap_or_default(),
                checked_now: false,
            })
            .collect();
        let action = action_of(stage)?;
        let mut would_touch = Vec::new();
        let open = !["done", "skipped", "undone"].contains(&stage.state.as_str());
        if open
            && stage.manual == 0
            && matches!(action, StageAction::SuspendAccounts | StageAction::RemoveAccounts)
        {
            let takes = candidates(&stages, &recorded, arrived.iter().cloned(), stage, action);
            match (&old, world.and_then(|w| w.public_dns.clone())) {
                (Some((_, old)), Some(resolvers)) => {
                    held.clear();
                    for user in takes {
                        let domains: Vec<DomainName> = store
                            .domains_of(id.as_str(), &user)
                            .await?
                            .iter()
                            .filter_map(|d| DomainName::parse(&d.domain).ok())
                            .collect();
                        let evidence = dns_gate(&resolvers, &domains, *old).await;
                        if evidence.is_empty() {
                            would_touch.push(user);
                        } else {
                            held.push(HeldAccount { account: user, evidence, checked_now: true });
                        }
                    }
                }
                _ => would_touch = takes,
            }
        }
        plans.push(StagePlan {
            stage: stage.stage,
            name: stage.name.clone(),
            action: stage.action.clone(),
            manual: stage.manual != 0,
            due: from_millis(stage.due_at).to_rfc3339(),
            state: stage.state.clone(),
            detail: serde_json::from_str(&stage.detail).unwrap_or_default(),
            done,
            held,
            would_touch,
        });
    }
    Ok(DecommissionPlan { migration: id.to_string(), stages: plans })
}

fn action_of(stage: &StageRow) -> anyhow::Result<StageAction> {
    serde_json::from_value(json!(stage.action))
        .with_context(|| format!("stage {:?} has an unknown action {:?}", stage.name, stage.action))
}

/// Finds a stage by its name or its place.
async fn find_stage(store: &Store, id: &MigrationId, stage: &str) -> anyhow::Result<StageRow> {
    let stages = store.stages(id.as_str()).await?;
    if stages.is_empty() {
        bail!("migration {id} has no decommission stages yet (they are recorded once it is cut over)");
    }
    let wanted = stage.trim();
    stages
        .iter()
        .find(|s| s.name == wanted || s.action == wanted || s.stage.to_string() == wanted)
        .cloned()
        .ok_or_else(|| {
            let names = stages.iter().map(|s| format!("{:?}", s.name)).collect::<Vec<_>>().join(", ");
            anyhow!("migration {id} has no decommission stage {wanted:?}; its stages: {names}")
        })
}

fn checked_reason(reason: &str) -> anyhow::Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("give a reason (--reason): the audit trail records who did what and why");
    }
    if reason.len() > MAX_REASON {
        bail!("the reason is {} bytes; at most {MAX_REASON}", reason.len());
    }
    Ok(reason)
}

fn event(
    id: &MigrationId,
    account: Option<&str>,
    kind: &str,
    detail: serde_json::Value,
    by: &str,
    now: Timestamp,
) -> NewEvent {
    NewEvent {
        migration_id: id.to_string(),
        account: account.map(str::to_owned),
        domain: None,
        kind: kind.to_owned(),
        detail: detail.to_string(),
        actor: by.to_owned(),
        at: to_millis(now),
    }
}

/// A stage that has not finished, read and (on PostgreSQL) locked in a new transaction;
/// refused with `refusal` when it is done, skipped or undone.
async fn unfinished_stage<'s>(
    store: &'s Store,
    id: &MigrationId,
    stage: &str,
    refusal: &str,
) -> anyhow::Result<(crate::store::Tx<'s>, StageRow)> {
    let found = find_stage(store, id, stage).await?;
    let mut tx = store.begin().await?;
    let row = tx.stage_for_update(id.as_str(), found.stage).await?.context("the stage")?;
    if ["done", "skipped", "undone"].contains(&row.state.as_str()) {
        bail!("stage {:?} of migration {id} is {} already; {refusal}", row.name, row.state);
    }
    Ok((tx, row))
}

/// Postpones a stage that has not finished to `until` (later than its date), with a reason.
pub async fn postpone_stage(
    store: &Store,
    id: &MigrationId,
    stage: &str,
    until: Timestamp,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> anyhow::Result<StageRow> {
    let reason = checked_reason(reason)?;
    let (mut tx, mut row) = unfinished_stage(store, id, stage, "there is nothing to postpone").await?;
    let until_ms = to_millis(until);
    if until_ms <= row.due_at.max(to_millis(now)) {
        bail!(
            "stage {:?} is due {}; postpone it to a later time (--until), not {}",
            row.name,
            from_millis(row.due_at).to_rfc3339(),
            until.to_rfc3339()
        );
    }
    let from = row.due_at;
    row.due_at = until_ms;
    row.detail = merge_detail(
        &row.detail,
        json!({ "postponed": { "by": by, "reason": reason, "at": now.to_rfc3339(), "from": from_millis(from).to_rfc3339() } }),
    );
    row.updated_at = to_millis(now);
    tx.update_stage(&row).await?;
    let detail = json!({
        "stage": row.stage, "name": row.name, "from": from_millis(from).to_rfc3339(),
        "until": until.to_rfc3339(), "reason": reason,
    });
    tx.append_event(&event(id, None, "decommission_postponed", detail, by, now)).await?;
    tx.commit().await?;
    Ok(row)
}

/// Skips a stage that has not finished, with a reason: it never runs, and the next stage may.
pub async fn skip_stage(
    store: &Store,
    id: &MigrationId,
    stage: &str,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> anyhow::Result<StageRow> {
    let reason = checked_reason(reason)?;
    let (mut tx, mut row) = unfinished_stage(store, id, stage, "it cannot be skipped").await?;
    row.state = "skipped".to_owned();
    row.detail = merge_detail(
        &row.detail,
        json!({ "skipped": { "by": by, "reason": reason, "at": now.to_rfc3339() } }),
    );
    row.updated_at = to_millis(now);
    tx.update_stage(&row).await?;
    let detail = json!({ "stage": row.stage, "name": row.name, "reason": reason });
    tx.append_event(&event(id, None, "decommission_skipped", detail, by, now)).await?;
    wake_next_stage(&mut tx, id.as_str(), row.stage, to_millis(now)).await?;
    tx.commit().await?;
    Ok(row)
}

/// What `siirto decommission undo` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undone {
    /// The stage.
    pub stage: String,
    /// The accounts given back (unsuspended).
    pub accounts: Vec<String>,
    /// The manual task opened for the inverse siirto cannot do itself, if any.
    pub task: Option<i64>,
}

/// Undoes a stage that ran: a suspension is reversed account by account on the old server
/// (`unsuspendacct`, each recorded as it is done, so an interrupted undo is run again); a
/// manual stage (the licence, the power) gets a task for its inverse. A removal or the disks'
/// destruction cannot be undone, and a suspension cannot once a later stage removed accounts.
pub async fn undo_stage(
    store: &Store,
    world: &World,
    id: &MigrationId,
    stage: &str,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> anyhow::Result<Undone> {
    let reason = checked_reason(reason)?;
    let found = find_stage(store, id, stage).await?;
    let action = action_of(&found)?;
    let recorded = store.stage_accounts(id.as_str()).await?;
    let unfinished = |recorded: &[StageAccountRow]| -> Vec<StageAccountRow> {
        recorded.iter().filter(|r| r.stage == found.stage && r.state == "done").cloned().collect()
    };
    // An undone suspension with accounts still suspended is an undo interrupted: it goes on.
    let resuming = found.state == "undone"
        && action == StageAction::SuspendAccounts
        && !unfinished(&recorded).is_empty();
    match found.state.as_str() {
        "pending" | "blocked" => {
            bail!("stage {:?} of migration {id} has not run; postpone or skip it instead", found.name)
        }
        "undone" if resuming => {}
        "skipped" | "undone" => bail!("stage {:?} of migration {id} is {} already", found.name, found.state),
        _ => {}
    }
    match action {
        StageAction::RemoveAccounts => bail!(
            "stage {:?} removed accounts from the old server; a removal cannot be undone (restore them from a backup)",
            found.name
        ),
        StageAction::DestroyDisks => bail!("stage {:?}: destroyed disks cannot be undone", found.name),
        _ => {}
    }
    let stages = store.stages(id.as_str()).await?;
    if let Some(wiped) =
        stages.iter().find(|s| s.action == StageAction::DestroyDisks.as_str() && s.state == "done")
    {
        bail!("stage {:?} cannot be undone: the disks were destroyed (stage {:?})", found.name, wiped.name);
    }
    if action == StageAction::SuspendAccounts {
        let removed: Vec<&StageAccountRow> = recorded
            .iter()
            .filter(|r| r.state == "done")
            .filter(|r| {
                stages.iter().any(|s| s.stage == r.stage && s.action == StageAction::RemoveAccounts.as_str())
            })
            .collect();
        if let Some(first) = removed.first() {
            bail!(
                "stage {:?} cannot be undone: a later stage removed {} account(s) already (the first: {})",
                found.name,
                removed.len(),
                first.user
            );
        }
    }
    let mut undone = Undone { stage: found.name.clone(), accounts: Vec::new(), task: None };
    if action == StageAction::SuspendAccounts {
        // The stage is marked undone first, so the daemon takes no more accounts into it (it
        // looks before each one); then every account it suspended is unsuspended, in two
        // passes, the second for one the daemon had in hand when the mark was written.
        if !resuming {
            let mut tx = store.begin().await?;
            let mut row = tx.stage_for_update(id.as_str(), found.stage).await?.context("the stage")?;
            row.state = "undone".to_owned();
            row.detail = merge_detail(
                &row.detail,
                json!({ "undone": { "by": by, "reason": reason, "at": now.to_rfc3339() } }),
            );
            row.updated_at = to_millis(now);
            tx.update_stage(&row).await?;
            let detail = json!({ "stage": row.stage, "name": row.name, "reason": reason });
            tx.append_event(&event(id, None, "decommission_undone", detail, by, now)).await?;
            tx.commit().await?;
        }
        let row = store.require_migration(id.as_str()).await?;
        let source = world.host(&row.source_host)?;
        for _pass in 0..2 {
            let recorded = store.stage_accounts(id.as_str()).await?;
            for r in unfinished(&recorded) {
                let user =
                    AccountName::parse(&r.user).map_err(|e| anyhow!("stored user {:?}: {e}", r.user))?;
                let outcome =
                    crate::decommission::unsuspend(&source.whm, &user).await.with_context(|| {
                        format!(
                            "account {user}: unsuspending it on {} (run the undo again to go on)",
                            row.source_host
                        )
                    })?;
                let mut tx = store.begin().await?;
                tx.record_stage_account(&StageAccountRow {
                    state: "undone".to_owned(),
                    evidence: json!({ "by": by, "reason": reason, "outcome": outcome }).to_string(),
                    at: to_millis(now),
                    ..r.clone()
                })
                .await?;
                let detail =
                    json!({ "stage": found.stage, "name": found.name, "reason": reason, "outcome": outcome });
                tx.append_event(&event(id, Some(&r.user), "account_unsuspended_on_source", detail, by, now))
                    .await?;
                tx.commit().await?;
                if outcome != ActionOutcome::NoAccount {
                    undone.accounts.push(r.user.clone());
                }
            }
        }
        let mut tx = store.begin().await?;
        wake_next_stage(&mut tx, id.as_str(), found.stage, to_millis(now)).await?;
        tx.commit().await?;
        return Ok(undone);
    }
    // The licence is reactivated through the provider that cancelled it, when there is one.
    let mut reactivated = None;
    if action == StageAction::CancelLicence
        && let Some(provider) = world.licence.as_ref()
    {
        let row = store.require_migration(id.as_str()).await?;
        let ip = std::net::IpAddr::V4(world.host(&row.source_host)?.ip);
        // The id the stage recorded: a lookup finds licences in force only.
        let detail: serde_json::Value = serde_json::from_str(&found.detail).unwrap_or_default();
        let recorded = detail["licence_id"].as_str().and_then(|id| crate::licence::LicenceId::parse(id).ok());
        let licence = match (
            provider.lookup(ip).await.with_context(|| format!("finding the licence of {ip}"))?,
            recorded,
        ) {
            (Some(active), _) => active,
            (None, Some(id)) => crate::licence::Licence {
                id,
                ip,
                status: crate::licence::LicenceStatus::Expired,
                package: None,
            },
            (None, None) => bail!(
                "stage {:?} recorded no licence, and the {} provider has none for {ip}",
                found.name,
                provider.name()
            ),
        };
        if licence.status == crate::licence::LicenceStatus::Expired {
            provider
                .reactivate(&licence)
                .await
                .with_context(|| format!("reactivating licence {}", licence.id))?;
        }
        reactivated =
            Some(json!({ "provider": provider.name(), "id": licence.id.to_string(), "ip": ip.to_string() }));
    }
    let mut tx = store.begin().await?;
    let mut row = tx.stage_for_update(id.as_str(), found.stage).await?.context("the stage")?;
    if let Some(licence) = &reactivated {
        let detail = json!({ "stage": row.stage, "name": row.name, "reason": reason, "licence": licence });
        tx.append_event(&event(id, None, "licence_reactivated", detail, by, now)).await?;
    }
    if action == StageAction::PowerOff || (action == StageAction::CancelLicence && reactivated.is_none()) {
        let task = match action {
            StageAction::PowerOff => "power the old server on again (undo of the power-off)",
            _ => "reactivate the old server's licence (undo of the cancellation)",
        };
        let detail =
            json!({ "task": task, "stage": row.stage, "stage_name": row.name, "needs": 1, "undo": true });
        undone.task = Some(tx.append_event(&event(id, None, "operator_task", detail, by, now)).await?);
    }
    row.state = "undone".to_owned();
    row.detail = merge_detail(
        &row.detail,
        json!({ "undone": { "by": by, "reason": reason, "at": now.to_rfc3339(), "accounts": undone.accounts } }),
    );
    row.updated_at = to_millis(now);
    tx.update_stage(&row).await?;
    let detail =
        json!({ "stage": row.stage, "name": row.name, "reason": reason, "accounts": undone.accounts });
    tx.append_event(&event(id, None, "decommission_undone", detail, by, now)).await?;
    wake_next_stage(&mut tx, id.as_str(), row.stage, to_millis(now)).await?;
    tx.commit().await?;
    Ok(undone)
}

/// Leaves an account out of the rest of the decommission, with a reason: no stage suspends or
/// removes it, and it no longer keeps the old server from being powered off (an account that
/// never arrived, one its customer moves elsewhere). Recorded with who and why.
pub async fn exclude_account(
    store: &Store,
    id: &MigrationId,
    user: &AccountName,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> anyhow::Result<()> {
    let reason = checked_reason(reason)?;
    if store.account(id.as_str(), user.as_str()).await?.is_none() {
        bail!("migration {id} has no account {user}");
    }
    let recorded = store.stage_accounts(id.as_str()).await?;
    if let Some(done) =
        recorded.iter().find(|r| r.stage == crate::decommission::EXCLUDED && r.user == user.as_str())
    {
        bail!("account {user} is excluded already ({})", done.evidence);
    }
    let mut tx = store.begin().await?;
    tx.record_stage_account(&StageAccountRow {
        migration_id: id.to_string(),
        stage: crate::decommission::EXCLUDED,
        user: user.to_string(),
        state: "excluded".to_owned(),
        evidence: json!({ "by": by, "reason": reason, "at": now.to_rfc3339() }).to_string(),
        at: to_millis(now),
    })
    .await?;
    let detail = json!({ "reason": reason });
    tx.append_event(&event(id, Some(user.as_str()), "decommission_account_excluded", detail, by, now))
        .await?;
    tx.commit().await?;
    Ok(())
}
