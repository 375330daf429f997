//! No mail lost: the final delta sync of an account once the old TTL has passed since its switch,
//! and the source's mail log read for anything delivered there since.

use std::time::Duration;

use anyhow::Context;
use tracing::{debug, info};

use crate::domain::{AccountEvent, AccountState, ObservedRecord, from_millis, to_millis};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::names::{AccountName, DomainName};
use crate::store::{JobRow, Lease, StoreError, domain_state};

/// The final delta sync of an account (crate::mailsync): once every changed record's old
/// TTL (plus the margin) has passed since the switch, rsync on the target pulls the
/// account's mail (and, per playbook, web root) from the source.
pub async fn sync_mail(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    let Some((_, state)) =
        cx.account_for_step(ctx, user, |s| matches!(s, AccountState::SyncingMail { .. })).await?
    else {
        return cx.finish(lease).await;
    };
    let AccountState::SyncingMail { switched_at, syncs } = state else {
        return cx.finish(lease).await;
    };
    if syncs == 0 {
        // Mail may land on the source until every resolver has let the old MX and A
        // records expire: the same gate as the repoint's, counted from the switch.
        let records: Vec<ObservedRecord> = cx
            .store
            .domains_of(ctx.id.as_str(), user)
            .await?
            .iter()
            .map(domain_state)
            .collect::<Result<Vec<_>, StoreError>>()?
            .iter()
            .flat_map(|d| d.records().to_vec())
            .collect();
        let opens = ctx.gate_policy().domain_opens_at(switched_at, &records);
        if opens > cx.now() {
            debug!(%opens, "the old TTL has not passed since the switch; the mail sync waits");
            let mut tx = cx.store.begin_leased(lease).await?;
            tx.reschedule_job(lease, to_millis(opens)).await?;
            return Ok(tx.commit().await?);
        }
    } else {
        // A sync again: begin at least two seconds after the last one, so a delivery the
        // mail log (whole seconds) places near the last sync's start is not counted again.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let started_at = cx.now();
    let report = final_sync(cx, ctx, user, lease).await?;
    info!(account = user, copied = ?report.copied, already_there = report.already_there, synced = ?report.synced, "final delta sync done");
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.record_mail_copied(ctx.id.as_str(), user, &report.copied_names, now).await?;
    let event = AccountEvent::MailSynced {
        started_at,
        synced: report.synced,
        copied: report.copied,
        already_there: report.already_there,
    };
    cx.apply_account(&mut tx, ctx, user, &state, event).await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// Reads the source's mail log for local deliveries to the account's switched domains and
/// records the evidence; the pure core decides: done, sync again, or hold.
pub async fn check_mail(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    let Some((_, state)) =
        cx.account_for_step(ctx, user, |s| matches!(s, AccountState::CheckingMail { .. })).await?
    else {
        return cx.finish(lease).await;
    };
    let AccountState::CheckingMail { switched_at, last_sync_started_at, .. } = state else {
        return cx.finish(lease).await;
    };
    // Only the domains whose routing was switched: an external or unrepointed domain's mail
    // lands on the source until its DNS is changed, which is expected, not stranded.
    let mut domains = Vec::new();
    for row in cx.store.domains_of(ctx.id.as_str(), user).await? {
        if domain_state(&row)?.dns_is_ours() {
            domains.push(DomainName::parse(&row.domain).context("stored domain")?);
        }
    }
    let (source_ssh, _) = cx.ssh_of(ctx)?;
    let evidence = crate::mailsync::read_evidence(
        (ctx.source.name.as_str(), source_ssh),
        &domains,
        || cx.now(),
        switched_at,
        last_sync_started_at,
    )
    .await
    .map_err(|err| classify!(err))?;
    info!(account = user, ?evidence, "mail log read");
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    cx.apply_account(&mut tx, ctx, user, &state, AccountEvent::MailChecked { evidence }).await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// The final delta sync of an account (see [`crate::mailsync::delta_sync`]): the messages
/// delivered on the source since its copy began (its transfer's enqueue, on the timeline) and
/// not on the target, minus those an earlier sync copied. The sync may run for hours on a big
/// mailbox: the lease is renewed meanwhile, checked right before, and a lost one cancels it.
pub async fn final_sync(
    cx: &Ctx,
    ctx: &MigrationCtx,
    user: &str,
    lease: &Lease,
) -> Result<crate::mailsync::SyncReport, StepError> {
    let (source_ssh, target_ssh) = cx.ssh_of(ctx)?;
    let user_name = AccountName::parse(user).context("stored user")?;
    let hosts = crate::mailsync::Hosts {
        source: (ctx.source.name.as_str(), source_ssh),
        target: (ctx.target.name.as_str(), target_ssh),
    };
    let copy_began =
        cx.store.last_event_at(ctx.id.as_str(), user, "account_enqueued").await?.map(from_millis);
    let copied = cx.store.mail_copied(ctx.id.as_str(), user).await?;
    let window = crate::mailsync::SyncWindow { copy_began, now: cx.now() };
    lease.check()?;
    crate::mailsync::delta_sync(hosts, &user_name, ctx.playbook.mail.sync, window, &copied)
        .await
        .map_err(|err| classify!(err))
}
