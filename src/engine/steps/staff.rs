//! Notices to the company's own people, in the config's language: customer service's briefing
//! the day before the cutover (config `mail.staff`), and the operators' notice when an account
//! is held (config `mail.operators`). Both go through the same outbox and sent-once rule as the
//! customers' notices.

use std::collections::BTreeMap;

use anyhow::Context;
use tracing::info;

use crate::domain::{AccountState, DomainState, from_millis};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult};
use crate::store::{Lease, NewNotice, OutboxRow, Tx, account_state, domain_state};

/// How long before the cutover customer service is briefed.
pub const BRIEF_BEFORE: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Writes customer service's briefing to the outbox (one row per cutover date) and schedules its
/// sending; past its lateness limit (`[notices.late_after] staff`, by default the cutover) it is
/// pointless and written skipped. Nothing when no staff
/// address is configured.
pub async fn brief_staff(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    if cx.world.staff.is_empty() {
        return cx.finish(lease).await;
    }
    let accounts = cx.store.accounts(ctx.id.as_str()).await?;
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    let mut customers = std::collections::BTreeSet::new();
    let mut external: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut awaiting_ip, mut held) = (Vec::new(), Vec::new());
    for account in &accounts {
        let who = account
            .customer_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| account.contact_email.clone())
            .unwrap_or_else(|| account.user.clone());
        customers.insert(account.customer_key.clone().unwrap_or_else(|| account.user.clone()));
        match account_state(account)? {
            AccountState::AwaitingTargetIp { .. } => awaiting_ip.push(account.user.clone()),
            AccountState::Held { reason, .. } => {
                held.push(serde_json::json!({ "account": account.user, "reason": reason }));
            }
            _ => {}
        }
        for row in domains.iter().filter(|d| d.user == account.user) {
            if let DomainState::External { .. } = domain_state(row)? {
                external.entry(who.clone()).or_default().push(row.domain.clone());
            }
        }
    }
    let cutover = from_millis(ctx.row.cutover_at);
    let context = serde_json::json!({
        "migration": ctx.id.as_str(),
        "source_host": ctx.source.public_name,
        "target_host": ctx.target.public_name,
        "cutover_date": cutover.format("%Y-%m-%d").to_string(),
        "cutover_time": cutover.format("%H:%M").to_string(),
        "accounts_count": accounts.len(),
        "customers_count": customers.len(),
        "external": external
            .into_iter()
            .map(|(customer, domains)| serde_json::json!({ "customer": customer, "domains": domains }))
            .collect::<Vec<_>>(),
        "awaiting_ip": awaiting_ip,
        "held": held,
    });
    // One per cutover date: after a reschedule customer service is briefed again for the new one.
    let key = ctx.row.cutover_at.to_string();
    let notice =
        internal_notice(cx, ctx, &ctx.playbook.notices.staff, "staff", &key, &cx.world.staff, &context)?;
    let now = notice.created_at;
    let mut tx = cx.store.begin_leased(lease).await?;
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        if let Some(reason) =
            super::announce::too_late(ctx, "staff", super::announce::due_at(ctx, "staff", now), now)
        {
            tx.mark_notice_skipped(id, now, &reason).await?;
        } else {
            super::notices::schedule_send(cx, &mut tx, ctx, id, now).await?;
        }
    }
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, "customer service briefed");
    Ok(())
}

/// The operators' notice that `user` was held with `reason`, written inside the transaction
/// that held it (one per hold: `event_id` is the hold's event) and scheduled for sending.
/// Nothing when no operator address is configured.
pub async fn queue_held_notice(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    user: &str,
    reason: &str,
    event_id: i64,
) -> Result<(), StepError> {
    if cx.world.operators.is_empty() {
        return Ok(());
    }
    let main_domain = tx.account(ctx.id.as_str(), user).await?.map(|a| a.main_domain).unwrap_or_default();
    let context = serde_json::json!({
        "migration": ctx.id.as_str(),
        "account": user,
        "main_domain": main_domain,
        "reason": reason,
    });
    let key = format!("{user}.{event_id}");
    let notice =
        internal_notice(cx, ctx, &ctx.playbook.notices.held, "held", &key, &cx.world.operators, &context)?;
    let now = notice.created_at;
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        super::notices::schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}

/// Customer service's notice that `notice` (a customer's) was refused for good or `bounced`
/// with `error`, so that someone calls the customer; written inside `tx`, once per failed
/// notice. Nothing
/// when no staff address is configured.
pub async fn queue_failed_notice(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    notice: &OutboxRow,
    error: &str,
    bounced: bool,
) -> Result<(), StepError> {
    if cx.world.staff.is_empty() || matches!(notice.kind.as_str(), "staff" | "held" | "notice_failed") {
        return Ok(());
    }
    let recipients: Vec<String> = serde_json::from_str(&notice.recipients).unwrap_or_default();
    let context = serde_json::json!({
        "migration": ctx.id.as_str(),
        "kind": notice.kind,
        "account": notice.account,
        "recipients": recipients.join(", "),
        "error": error,
        "bounced": bounced,
    });
    let key = notice.id.to_string();
    let notices = &ctx.playbook.notices;
    let staff_notice =
        internal_notice(cx, ctx, &notices.notice_failed, "notice_failed", &key, &cx.world.staff, &context)?;
    let now = staff_notice.created_at;
    if let Some(id) = tx.enqueue_notice(&staff_notice).await? {
        super::notices::schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}

/// A notice to the company's own people: `kind`'s shipped template rendered in the config's
/// language with `context`, to `recipients`, keyed `<kind>:<migration>:<key>`.
pub(crate) fn internal_notice(
    cx: &Ctx,
    ctx: &MigrationCtx,
    template: &crate::playbook::Localized,
    kind: &str,
    key: &str,
    recipients: &[String],
    context: &serde_json::Value,
) -> anyhow::Result<NewNotice> {
    let template = template.for_language(&cx.world.language);
    let (subject, body, html) = super::notices::rendered(template, context, kind)?;
    let tail = if key.is_empty() { String::new() } else { format!(".{key}") };
    Ok(NewNotice {
        migration_id: ctx.id.to_string(),
        // Not an account's own notice: a failure to send it must not hold an account.
        account: None,
        kind: kind.to_owned(),
        message_id: format!("<{kind}{tail}.{}@siirto>", ctx.id),
        dedupe_key: format!(
            "{kind}:{}{}",
            ctx.id,
            if key.is_empty() { String::new() } else { format!(":{key}") }
        ),
        recipients: serde_json::to_string(recipients).context("recipients")?,
        subject,
        body,
        html,
        created_at: cx.now_ms(),
    })
}
