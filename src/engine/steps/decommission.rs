//! Retiring the old server in stages (DESIGN.md §1 step 10): the playbook's stages are recorded
//! when the migration is cut over, each with its date (the cutover plus its offset), and each
//! stage's job runs when it is due, after the stage before it has run, once.
//!
//! An account stage (suspend, remove) takes the accounts that arrived on the target (and, for
//! a removal, were suspended by an earlier stage), checks each one's domains through public DNS
//! right before acting ([`crate::decommission::dns_gate`]), and acts on the clear ones one by
//! one, recording each account as it is done: a stage interrupted by a crash resumes with the
//! accounts it had not done. An account whose domain still leads to the old server is held
//! with the evidence, and the stage comes back to it every `dns.external_poll_interval` until
//! it is clear. A manual stage opens its tasks for people (`siirto ack`; destroying the disks
//! needs two different people) and is done when they are acknowledged.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use serde_json::json;
use tracing::{info, warn};

use crate::decommission::{
    ActionOutcome, Evidence, OldServer, candidates, dns_gate, merge_detail, stage_job_key, wake_next_stage,
};
use crate::domain::to_millis;
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::engine::jobs::JobKind;
use crate::names::{AccountName, DomainName};
use crate::playbook::StageAction;
use crate::store::{JobRow, Lease, StageAccountRow, StageRow, Tx};

/// How often a stage due after one that has not run yet looks again.
const WAIT_FOR_PREVIOUS_MS: i64 = 60 * 60 * 1000;

/// The stage states after which the next stage may run.
const PASSED: [&str; 4] = ["ran", "done", "skipped", "undone"];

/// Records the playbook's stages of a cut-over migration, dated from its cutover, and
/// schedules each one's job at its date (nothing when they are recorded already).
pub(crate) async fn schedule_stages(cx: &Ctx, tx: &mut Tx<'_>, ctx: &MigrationCtx) -> Result<(), StepError> {
    let now = cx.now_ms();
    let cutover = ctx.row.cutover_at;
    let rows: Vec<StageRow> = ctx
        .playbook
        .schedule
        .decommission
        .iter()
        .enumerate()
        .map(|(n, stage)| StageRow {
            migration_id: ctx.id.to_string(),
            stage: n as i64,
            name: stage.name.clone(),
            action: stage.action.as_str().to_owned(),
            manual: i64::from(stage.manual),
            due_at: cutover + stage.after.as_millis() as i64,
            state: "pending".to_owned(),
            detail: "{}".to_owned(),
            updated_at: now,
        })
        .collect();
    if tx.insert_stages(&rows).await? == 0 {
        return Ok(());
    }
    for row in &rows {
        tx.schedule_job(&cx.job(
            ctx,
            JobKind::Decommission,
            &row.stage.to_string(),
            json!({}),
            row.due_at,
            stage_job_key(ctx.id.as_str(), row.stage),
        ))
        .await?;
    }
    info!(migration = %ctx.id, stages = rows.len(), "decommission stages scheduled");
    Ok(())
}

/// Runs one decommission stage (subject: its place) when it is due and the one before it has
/// run.
pub async fn run_stage(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let place: i64 = job.subject.parse().context("the stage's place")?;
    let stages = cx.store.stages(ctx.id.as_str()).await?;
    let Some(stage) = stages.iter().find(|s| s.stage == place).cloned() else {
        return cx.finish(lease).await;
    };
    let now = cx.now_ms();
    if ["done", "skipped", "undone"].contains(&stage.state.as_str()) {
        return cx.finish(lease).await;
    }
    if stage.state == "waiting" {
        return remind_of_tasks(cx, ctx, lease, &stage).await;
    }
    if stage.due_at > now {
        // Postponed since the job was scheduled.
        return reschedule(cx, lease, stage.due_at).await;
    }
    if let Some(before) = stages.iter().rev().find(|s| s.stage < place)
        && !PASSED.contains(&before.state.as_str())
    {
        return reschedule(cx, lease, now + WAIT_FOR_PREVIOUS_MS).await;
    }
    let action = serde_json::from_value::<StageAction>(json!(stage.action))
        .with_context(|| format!("stage {:?} has an unknown action {:?}", stage.name, stage.action))?;
    if stage.manual != 0 {
        return open_tasks(cx, ctx, lease, stage, action, None).await;
    }
    match action {
        StageAction::SuspendAccounts | StageAction::RemoveAccounts => {
            account_stage(cx, ctx, lease, &stages, stage, action).await
        }
        StageAction::PowerOff => match ctx.source.ssh.clone() {
            Some(ssh) => power_off_stage(cx, ctx, lease, &stages, stage, &ssh).await,
            None => {
                let why = format!(
                    "siirto has no SSH access to {} (hosts.{}.ssh)",
                    ctx.source.name, ctx.source.name
                );
                open_tasks(cx, ctx, lease, stage, action, Some(&why)).await
            }
        },
        StageAction::CancelLicence => match cx.world.licence.clone() {
            Some(provider) => licence_stage(cx, ctx, lease, stage, provider.as_ref()).await,
            None => {
                let why = "no licence provider is configured ([licence])";
                open_tasks(cx, ctx, lease, stage, action, Some(why)).await
            }
        },
        StageAction::DestroyDisks => open_tasks(cx, ctx, lease, stage, action, None).await,
    }
}

async fn reschedule(cx: &Ctx, lease: &Lease, due_at: i64) -> StepResult {
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.reschedule_job(lease, due_at).await?;
    Ok(tx.commit().await?)
}

/// The tasks of a manual stage: what each asks and how many different people must confirm it;
/// `why` says why siirto does not do it itself, when the playbook did not ask for a person.
pub fn stage_tasks(name: &str, action: StageAction, why: Option<&str>) -> Vec<(String, u32)> {
    match action {
        StageAction::DestroyDisks => vec![
            ("unrack the old server".to_owned(), 1),
            ("destroy the old server's disks (two different people confirm)".to_owned(), 2),
        ],
        _ => match why {
            Some(why) => vec![(format!("{name} by hand ({why}), then confirm here"), 1)],
            None => vec![(format!("{name} (by hand), then confirm here"), 1)],
        },
    }
}

/// Opens a manual stage's tasks once: each an `operator_task` event naming the stage, listed by
/// `siirto tasks` and the status page until acknowledged.
async fn open_tasks(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stage: StageRow,
    action: StageAction,
    why: Option<&str>,
) -> StepResult {
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    let Some(mut row) = tx.stage_for_update(ctx.id.as_str(), stage.stage).await? else {
        return Ok(tx.rollback().await?);
    };
    if row.state != "pending" {
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    let mut ids = Vec::new();
    for (task, needs) in stage_tasks(&row.name, action, why) {
        let detail = json!({ "task": task, "stage": row.stage, "stage_name": row.name, "needs": needs });
        ids.push(tx.append_event(&cx.event(ctx, None, None, "operator_task", detail)).await?);
    }
    row.state = "waiting".to_owned();
    row.detail = merge_detail(&row.detail, json!({ "tasks": ids, "opened_at": now }));
    row.updated_at = now;
    tx.update_stage(&row).await?;
    let detail = json!({ "stage": row.stage, "name": row.name, "tasks": ids });
    tx.append_event(&cx.event(ctx, None, None, "decommission_waiting", detail)).await?;
    // Back after `schedule.task_reminder_every` to remind the operators if still open.
    let every = ctx.playbook.schedule.task_reminder_every.as_millis() as i64;
    tx.reschedule_job(lease, now + every).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, stage = %row.name, "decommission stage waits for people");
    Ok(())
}

/// The reason a suspension gives on the old server.
pub fn suspend_reason(ctx: &MigrationCtx, stage: &str) -> String {
    format!(
        "Moved to {} by siirto migration {} (decommission stage: {stage})",
        ctx.target.public_name, ctx.id
    )
}

async fn account_stage(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stages: &[StageRow],
    stage: StageRow,
    action: StageAction,
) -> StepResult {
    let resolvers = cx.world.public_dns.clone().ok_or_else(|| {
        StepError::transient(anyhow!(
            "no resolvers are configured (dns.resolvers): the DNS gate of stage {:?} cannot be checked",
            stage.name
        ))
    })?;
    let id = ctx.id.as_str();
    let recorded = cx.store.stage_accounts(id).await?;
    let here: BTreeMap<&str, &StageAccountRow> =
        recorded.iter().filter(|r| r.stage == stage.stage).map(|r| (r.user.as_str(), r)).collect();
    let arrived = cx.store.accounts_in_states(id, &["done"], i64::MAX).await?;
    let candidates = candidates(stages, &recorded, arrived.into_iter().map(|a| a.user), &stage, action);
    let now = cx.now_ms();
    if stage.state == "pending" {
        let mut tx = cx.store.begin_leased(lease).await?;
        let mut row = stage.clone();
        row.state = "running".to_owned();
        row.updated_at = now;
        tx.update_stage(&row).await?;
        let detail = json!({ "stage": stage.stage, "name": stage.name, "accounts": candidates.len() });
        tx.append_event(&cx.event(ctx, None, None, "decommission_started", detail)).await?;
        tx.commit().await?;
    }
    let old = OldServer { ip: ctx.source.ip, ipv6: ctx.source.ipv6 };
    let asked: Vec<String> = resolvers.resolvers().iter().map(ToString::to_string).collect();
    let reason = suspend_reason(ctx, &stage.name);
    let keep_dns = ctx.playbook.dns.shared_cluster;
    let mut held = 0_usize;
    for user in &candidates {
        let name = AccountName::parse(user).map_err(|e| anyhow!("stored user {user:?}: {e}"))?;
        let domains: Vec<DomainName> = cx
            .store
            .domains_of(id, user)
            .await?
            .iter()
            .filter_map(|d| DomainName::parse(&d.domain).ok())
            .collect();
        let evidence = dns_gate(&resolvers, &domains, old).await;
        if !evidence.is_empty() {
            held += 1;
            hold(cx, ctx, lease, &stage, user, here.get(user.as_str()).copied(), evidence, true).await?;
            continue;
        }
        if action == StageAction::RemoveAccounts {
            // The traffic gate: the old server's own logs show nobody still reaching it for
            // these domains (a resolver we do not ask, a hosts file, a hard-coded address).
            let ssh = ctx.source.ssh.as_ref().ok_or_else(|| {
                StepError::transient(anyhow!(
                    "host {} has no SSH access configured (hosts.{}.ssh): the traffic gate of stage {:?} cannot read its logs",
                    ctx.source.name,
                    ctx.source.name,
                    stage.name
                ))
            })?;
            let window = ctx.playbook.schedule.no_traffic_for;
            let traffic = crate::decommission::recent_traffic(&ctx.source.name, ssh, &domains, window)
                .await
                .map_err(|err| classify!(err))?;
            if !traffic.is_empty() {
                held += 1;
                hold(cx, ctx, lease, &stage, user, here.get(user.as_str()).copied(), traffic, false).await?;
                continue;
            }
        }
        // An operator may have skipped or undone the stage meanwhile: no more accounts then.
        let now_state =
            cx.store.stages(id).await?.into_iter().find(|s| s.stage == stage.stage).map(|s| s.state);
        if matches!(now_state.as_deref(), Some("skipped" | "undone")) {
            info!(migration = %id, stage = %stage.name, "the stage was skipped or undone while it ran: it stops");
            return cx.finish(lease).await;
        }
        lease.check()?;
        let whm = &ctx.source.whm;
        let outcome = match action {
            StageAction::SuspendAccounts => crate::decommission::suspend(whm, &name, &reason).await,
            _ => crate::decommission::remove(whm, &name, keep_dns).await,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) if err.is_transient() => return Err(classify!(err)),
            Err(err) => {
                // This account's trouble is this account's: it is held with the reason, the
                // stage goes on for the rest.
                held += 1;
                let evidence = vec![Evidence {
                    resolver: String::new(),
                    name: user.clone(),
                    rtype: "WHM".to_owned(),
                    answer: format!("{err}"),
                }];
                warn!(migration = %id, %user, error = %err, "decommission: the old server refused the account's action");
                hold(cx, ctx, lease, &stage, user, here.get(user.as_str()).copied(), evidence, false).await?;
                continue;
            }
        };
        let kind = match action {
            StageAction::SuspendAccounts => "account_suspended_on_source",
            _ => "account_removed_from_source",
        };
        let gate = json!({ "clear": true, "resolvers": asked, "domains": domains.len() });
        let at = cx.now_ms();
        let mut tx = cx.store.begin_leased(lease).await?;
        tx.record_stage_account(&StageAccountRow {
            migration_id: id.to_owned(),
            stage: stage.stage,
            user: user.clone(),
            state: "done".to_owned(),
            evidence: json!({ "gate": gate, "outcome": outcome, "reason": reason }).to_string(),
            at,
        })
        .await?;
        let detail = json!({
            "stage": stage.stage, "name": stage.name, "reason": reason, "outcome": outcome,
            "gate": gate, "keep_dns": (action == StageAction::RemoveAccounts).then_some(keep_dns),
        });
        tx.append_event(&cx.event(ctx, Some(user), None, kind, detail)).await?;
        tx.commit().await?;
        if outcome != ActionOutcome::Done {
            info!(migration = %id, %user, ?outcome, "decommission: nothing to do on the source");
        }
    }
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    let Some(mut row) = tx.stage_for_update(id, stage.stage).await? else {
        return Ok(tx.rollback().await?);
    };
    if ["skipped", "undone"].contains(&row.state.as_str()) {
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    // A removal is done only once the suspension before it is: an account the suspension
    // still holds comes to the removal when it is suspended.
    let earlier_open = stages.iter().any(|s| {
        s.stage < stage.stage
            && s.action == StageAction::SuspendAccounts.as_str()
            && action == StageAction::RemoveAccounts
            && !["done", "skipped", "undone"].contains(&s.state.as_str())
    });
    if held == 0 && !earlier_open {
        row.state = "done".to_owned();
        row.updated_at = now;
        tx.update_stage(&row).await?;
        let detail = json!({ "stage": row.stage, "name": row.name });
        tx.append_event(&cx.event(ctx, None, None, "decommission_done", detail)).await?;
        wake_next_stage(&mut tx, id, row.stage, now).await?;
        tx.finish_job(lease, now).await?;
        info!(migration = %id, stage = %row.name, "decommission stage done");
    } else {
        if row.state != "ran" {
            row.state = "ran".to_owned();
            row.updated_at = now;
            tx.update_stage(&row).await?;
            let detail = json!({ "stage": row.stage, "name": row.name, "held": held });
            tx.append_event(&cx.event(ctx, None, None, "decommission_ran", detail)).await?;
            wake_next_stage(&mut tx, id, row.stage, now).await?;
        }
        let every = ctx.playbook.dns.external_poll_interval.as_millis() as i64;
        tx.reschedule_job(lease, now + every).await?;
        info!(migration = %id, stage = %row.name, held, "decommission stage ran; held accounts are checked again");
    }
    Ok(tx.commit().await?)
}

/// Holds an account out of a stage with the evidence; the event log gets it when the evidence
/// changed, and (`remind`: public DNS still sends the customer's domain to the old server, which
/// only the customer can change) the customer a reminder when one is due.
#[allow(clippy::too_many_arguments)]
async fn hold(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stage: &StageRow,
    user: &str,
    before: Option<&StageAccountRow>,
    evidence: Vec<Evidence>,
    remind: bool,
) -> Result<(), StepError> {
    let text = serde_json::to_string(&evidence).context("evidence")?;
    let now = cx.now();
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.record_stage_account(&StageAccountRow {
        migration_id: ctx.id.to_string(),
        stage: stage.stage,
        user: user.to_owned(),
        state: "held".to_owned(),
        evidence: text.clone(),
        at: to_millis(now),
    })
    .await?;
    // Logged when what holds it changes (which names, seen where), not at every look: the
    // counts and times in a traffic answer change at each one.
    let keys = |list: &[Evidence]| -> Vec<(String, String, String)> {
        list.iter().map(|e| (e.resolver.clone(), e.name.clone(), e.rtype.clone())).collect()
    };
    let changed = before.is_none_or(|b| {
        b.state != "held"
            || serde_json::from_str::<Vec<Evidence>>(&b.evidence).map(|was| keys(&was)).ok()
                != Some(keys(&evidence))
    });
    if changed {
        let detail = json!({ "stage": stage.stage, "name": stage.name, "evidence": evidence });
        tx.append_event(&cx.event(ctx, Some(user), None, "decommission_held", detail)).await?;
        info!(migration = %ctx.id, %user, stage = %stage.name, "held out of a decommission stage: a domain still leads to the old server");
    }
    if remind {
        queue_closing_reminder(cx, &mut tx, ctx, stage, user, &evidence, to_millis(now)).await?;
    }
    Ok(tx.commit().await?)
}

/// Queues the customer's reminder that their old account closes (the `closing` notice), one
/// per `dns.external_reminder_every` since the stage was due, by its dedupe key.
async fn queue_closing_reminder(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    stage: &StageRow,
    user: &str,
    evidence: &[Evidence],
    now: i64,
) -> Result<(), StepError> {
    let account = cx
        .store
        .account(ctx.id.as_str(), user)
        .await?
        .ok_or_else(|| anyhow!("account {user} is not in migration {}", ctx.id))?;
    let every = (ctx.playbook.dns.external_reminder_every.as_millis() as i64).max(1);
    let n = (now - stage.due_at).max(0) / every;
    // The day the old server goes off (its power-off stage), else this stage's day.
    let closes_at = ctx
        .playbook
        .schedule
        .decommission
        .iter()
        .find(|s| s.action == StageAction::PowerOff)
        .map_or(stage.due_at, |s| ctx.row.cutover_at + s.after.as_millis() as i64)
        .max(now);
    let context = json!({
        "account": user,
        "main_domain": account.main_domain,
        "customer_name": account.customer_name,
        "target_host": ctx.target.public_name,
        "source_host": ctx.source.public_name,
        "target_ip": ctx.target.ip.to_string(),
        "closes_on": crate::domain::from_millis(closes_at).format("%Y-%m-%d").to_string(),
        "stage": stage.name,
        "evidence": evidence,
    });
    let language = crate::playbook::language_of(account.language.as_deref(), &cx.world.language);
    let template = ctx.playbook.notices.closing.for_language(&language);
    let (subject, body, html) = super::notices::rendered(template, &context, "closing")?;
    let mode = ctx.playbook.notices.reseller_customers;
    let recipients: Vec<String> = super::announce::via_reseller(mode, &account)
        .map(str::to_owned)
        .or_else(|| account.contact_email.clone())
        .into_iter()
        .collect();
    if recipients.is_empty() {
        return Ok(());
    }
    let notice = crate::store::NewNotice {
        migration_id: ctx.id.to_string(),
        account: Some(user.to_owned()),
        kind: "closing".to_owned(),
        message_id: format!("<closing.{}.{n}.{user}.{}@siirto>", stage.stage, ctx.id),
        dedupe_key: format!("closing:{}:{}:{user}:{n}", ctx.id, stage.stage),
        recipients: serde_json::to_string(&recipients).context("recipients")?,
        subject,
        body,
        html,
        created_at: now,
    };
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        super::notices::schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}

/// Powers the old server off over SSH once every account is done or excluded and its logs
/// show no traffic for the migrated domains within `schedule.no_traffic_for`; until then the
/// stage is blocked (the next stage waits) with what blocks it, and looks again every
/// `dns.external_poll_interval`. The command's sending is recorded before it is sent: a run
/// after a crash finds the server down and records it, or sends it again.
async fn power_off_stage(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stages: &[StageRow],
    stage: StageRow,
    ssh: &crate::config::SshConfig,
) -> StepResult {
    let id = ctx.id.as_str();
    let host = ctx.source.name.as_str();
    let detail: serde_json::Value = serde_json::from_str(&stage.detail).unwrap_or_else(|_| json!({}));
    if detail.get("command_sent_at").is_some() && !crate::decommission::reachable(host, ssh).await {
        return powered_off(cx, ctx, lease, &stage, crate::decommission::PowerOff::ConnectionClosed).await;
    }
    let recorded = cx.store.stage_accounts(id).await?;
    let accounts: Vec<(String, String)> =
        cx.store.accounts(id).await?.into_iter().map(|a| (a.user, a.state)).collect();
    let blocking = crate::decommission::blocking_accounts(stages, &recorded, &accounts, stage.stage);
    if !blocking.is_empty() {
        let list: Vec<serde_json::Value> =
            blocking.iter().map(|(user, why)| json!({ "account": user, "why": why })).collect();
        return block(cx, ctx, lease, stage, json!({ "accounts": list })).await;
    }
    let excluded: Vec<&str> = recorded
        .iter()
        .filter(|r| r.stage == crate::decommission::EXCLUDED && r.state == "excluded")
        .map(|r| r.user.as_str())
        .collect();
    let domains: Vec<DomainName> = cx
        .store
        .domains(id)
        .await?
        .iter()
        .filter(|d| !excluded.contains(&d.user.as_str()))
        .filter_map(|d| DomainName::parse(&d.domain).ok())
        .collect();
    let window = ctx.playbook.schedule.no_traffic_for;
    let traffic = crate::decommission::recent_traffic(host, ssh, &domains, window)
        .await
        .map_err(|err| classify!(err))?;
    if !traffic.is_empty() {
        return block(cx, ctx, lease, stage, json!({ "traffic": traffic })).await;
    }
    // Write-ahead: the command's sending, with the gate's evidence.
    let now = cx.now_ms();
    let gate = json!({
        "accounts": accounts.len(), "excluded": excluded, "domains": domains.len(),
        "traffic": format!("none within {}s", window.as_secs()), "checked_at": crate::domain::from_millis(now).to_rfc3339(),
    });
    let mut tx = cx.store.begin_leased(lease).await?;
    let Some(mut row) = tx.stage_for_update(id, stage.stage).await? else {
        return Ok(tx.rollback().await?);
    };
    if !["pending", "blocked", "running"].contains(&row.state.as_str()) {
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    row.state = "running".to_owned();
    row.detail = merge_detail(&row.detail, json!({ "command_sent_at": now, "gate": gate, "blocked": null }));
    row.updated_at = now;
    tx.update_stage(&row).await?;
    let event = json!({ "stage": row.stage, "name": row.name, "command": ssh.power_off, "gate": gate });
    tx.append_event(&cx.event(ctx, None, None, "server_power_off_sent", event)).await?;
    tx.commit().await?;
    lease.check()?;
    let outcome = crate::decommission::power_off(host, ssh).await.map_err(|err| classify!(err))?;
    powered_off(cx, ctx, lease, &row, outcome).await
}

/// Records the old server powered off: the stage done, the next one woken.
async fn powered_off(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stage: &StageRow,
    outcome: crate::decommission::PowerOff,
) -> StepResult {
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    let Some(mut row) = tx.stage_for_update(ctx.id.as_str(), stage.stage).await? else {
        return Ok(tx.rollback().await?);
    };
    row.state = "done".to_owned();
    row.updated_at = now;
    tx.update_stage(&row).await?;
    let detail = json!({ "stage": row.stage, "name": row.name, "outcome": outcome });
    tx.append_event(&cx.event(ctx, None, None, "server_powered_off", detail.clone())).await?;
    tx.append_event(&cx.event(ctx, None, None, "decommission_done", detail)).await?;
    wake_next_stage(&mut tx, ctx.id.as_str(), row.stage, now).await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, host = %ctx.source.name, ?outcome, "the old server is powered off");
    Ok(())
}

/// Keeps a stage from running while `why` holds (the next stage waits too), logging it when
/// what blocks it changes, and looks again after `dns.external_poll_interval`.
async fn block(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stage: StageRow,
    why: serde_json::Value,
) -> StepResult {
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    let Some(mut row) = tx.stage_for_update(ctx.id.as_str(), stage.stage).await? else {
        return Ok(tx.rollback().await?);
    };
    let before: serde_json::Value = serde_json::from_str(&row.detail).unwrap_or_else(|_| json!({}));
    // What blocks it, without the counts and times that change at each look.
    let shape = |v: &serde_json::Value| -> Vec<String> {
        let accounts = v["accounts"].as_array().into_iter().flatten().map(|a| a["account"].to_string());
        let traffic =
            v["traffic"].as_array().into_iter().flatten().map(|t| format!("{}{}", t["name"], t["rtype"]));
        accounts.chain(traffic).collect()
    };
    if row.state != "blocked" || shape(&before["blocked"]) != shape(&why) {
        let detail = json!({ "stage": row.stage, "name": row.name, "blocked": why });
        tx.append_event(&cx.event(ctx, None, None, "decommission_blocked", detail)).await?;
        info!(migration = %ctx.id, stage = %row.name, "decommission stage blocked by its gate");
    }
    row.state = "blocked".to_owned();
    row.detail = merge_detail(&row.detail, json!({ "blocked": why }));
    row.updated_at = now;
    tx.update_stage(&row).await?;
    let every = ctx.playbook.dns.external_poll_interval.as_millis() as i64;
    tx.reschedule_job(lease, now + every).await?;
    Ok(tx.commit().await?)
}

/// A stage waiting for people: while any of its tasks is open, the operators get a reminder
/// every `schedule.task_reminder_every` since the tasks were opened (one outbox row per
/// reminder, by its dedupe key); the job comes back for the next one. Once they are all
/// confirmed (`siirto ack` completes the stage), the job ends.
async fn remind_of_tasks(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease, stage: &StageRow) -> StepResult {
    let open = crate::decommission::open_stage_tasks(&cx.store, stage).await?;
    let now = cx.now_ms();
    if open.is_empty() {
        return cx.finish(lease).await;
    }
    let detail: serde_json::Value = serde_json::from_str(&stage.detail).unwrap_or_default();
    let opened_at = detail["opened_at"].as_i64().unwrap_or(stage.updated_at);
    let every = (ctx.playbook.schedule.task_reminder_every.as_millis() as i64).max(1);
    let n = (now - opened_at).max(0) / every;
    let mut tx = cx.store.begin_leased(lease).await?;
    if n >= 1 && !cx.world.operators.is_empty() {
        let context = json!({
            "migration": ctx.id.as_str(),
            "stage": stage.name,
            "due": crate::domain::from_millis(stage.due_at).format("%Y-%m-%d").to_string(),
            "tasks": open,
        });
        let key = format!("{}.{n}", stage.stage);
        let notice = super::staff::internal_notice(
            cx,
            ctx,
            &ctx.playbook.notices.task_reminder,
            "task_reminder",
            &key,
            &cx.world.operators,
            &context,
        )?;
        if let Some(id) = tx.enqueue_notice(&notice).await? {
            super::notices::schedule_send(cx, &mut tx, ctx, id, now).await?;
            info!(migration = %ctx.id, stage = %stage.name, open = open.len(), "operators reminded of open decommission tasks");
        }
    }
    tx.reschedule_job(lease, opened_at + (n + 1) * every).await?;
    Ok(tx.commit().await?)
}

/// Cancels the old server's cPanel licence through the configured provider: finds it by the
/// server's IP, proves the way back exists (the reactivation's dry run) right before, and
/// expires it with a reason naming the migration, once: a licence found expired already (a run
/// after a crash, or a person) is recorded as such. A refused dry run blocks the stage with the
/// provider's answer; no licence for the IP becomes a task for a person.
async fn licence_stage(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    stage: StageRow,
    provider: &dyn crate::licence::LicenceProvider,
) -> StepResult {
    use crate::licence::{LicenceError, LicenceStatus};
    let ip = std::net::IpAddr::V4(ctx.source.ip);
    // Manage2's lookup finds licences in force only: the id is recorded before the expiry, so a
    // run after a crash that finds none knows the expiry went through.
    let detail: serde_json::Value = serde_json::from_str(&stage.detail).unwrap_or_else(|_| json!({}));
    let recorded = detail["licence_id"].as_str().and_then(|id| crate::licence::LicenceId::parse(id).ok());
    let reason = format!(
        "Server retired: its accounts moved to {} (siirto migration {}, decommission stage {})",
        ctx.target.public_name, ctx.id, stage.name
    );
    let (licence, outcome) = match provider.require(ip).await {
        Ok(licence) if licence.status == LicenceStatus::Expired => (licence, ActionOutcome::AlreadySo),
        Ok(licence) => {
            lease.check()?;
            match provider.check_reactivation(&licence).await {
                Ok(()) => {}
                Err(err) if err.is_transient() => return Err(classify!(err)),
                Err(err) => {
                    let why =
                        json!({ "licence": licence.id.to_string(), "reactivation_dry_run": err.to_string() });
                    return block(cx, ctx, lease, stage, why).await;
                }
            }
            // Write-ahead: which licence is being expired.
            let mut tx = cx.store.begin_leased(lease).await?;
            let Some(mut row) = tx.stage_for_update(ctx.id.as_str(), stage.stage).await? else {
                return Ok(tx.rollback().await?);
            };
            row.detail =
                merge_detail(&row.detail, json!({ "licence_id": licence.id.to_string(), "blocked": null }));
            tx.update_stage(&row).await?;
            tx.commit().await?;
            lease.check()?;
            provider.expire(&licence, &reason).await.map_err(|err| classify!(err))?;
            (licence, ActionOutcome::Done)
        }
        Err(LicenceError::NoLicence { .. }) => match recorded {
            Some(id) => {
                let licence =
                    crate::licence::Licence { id, ip, status: LicenceStatus::Expired, package: None };
                (licence, ActionOutcome::AlreadySo)
            }
            None => {
                let why = format!("the {} provider has no licence for {ip}", provider.name());
                return open_tasks(cx, ctx, lease, stage, StageAction::CancelLicence, Some(&why)).await;
            }
        },
        Err(err) => return Err(classify!(err)),
    };
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    let Some(mut row) = tx.stage_for_update(ctx.id.as_str(), stage.stage).await? else {
        return Ok(tx.rollback().await?);
    };
    let record = json!({
        "provider": provider.name(), "id": licence.id.to_string(), "ip": ip.to_string(),
        "reason": reason, "outcome": outcome, "reactivation_dry_run": "ok",
    });
    row.state = "done".to_owned();
    row.detail = merge_detail(&row.detail, json!({ "licence": record, "blocked": null }));
    row.updated_at = now;
    tx.update_stage(&row).await?;
    let detail = json!({ "stage": row.stage, "name": row.name, "licence": record });
    tx.append_event(&cx.event(ctx, None, None, "licence_cancelled", detail.clone())).await?;
    tx.append_event(&cx.event(ctx, None, None, "decommission_done", detail)).await?;
    wake_next_stage(&mut tx, ctx.id.as_str(), row.stage, now).await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, licence = %licence.id, ?outcome, "the old server's licence is cancelled");
    Ok(())
}
