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

/// Writes customer service's briefing to the outbox (one row per migration) and schedules its
/// sending; after the cutover it is pointless and written skipped. Nothing when no staff
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
    let template = ctx.playbook.notices.staff.for_language(&cx.world.language);
    let subject =
        crate::notify::render(&template.subject, &context).context("rendering the staff briefing")?;
    let body = crate::notify::render(&template.body, &context).context("rendering the staff briefing")?;
    let now = cx.now_ms();
    let notice = NewNotice {
        migration_id: ctx.id.to_string(),
        account: None,
        kind: "staff".to_owned(),
        message_id: format!("<staff.{}@siirto>", ctx.id),
        dedupe_key: format!("staff:{}", ctx.id),
        recipients: serde_json::to_string(&cx.world.staff).context("recipients")?,
        subject: subject.trim().to_owned(),
        body,
        created_at: now,
    };
    let mut tx = cx.store.begin_leased(lease).await?;
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        if now > ctx.row.cutover_at {
            tx.mark_notice_skipped(id, now, "too late: the cutover has passed").await?;
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
    let template = ctx.playbook.notices.held.for_language(&cx.world.language);
    let subject = crate::notify::render(&template.subject, &context).context("rendering the held notice")?;
    let body = crate::notify::render(&template.body, &context).context("rendering the held notice")?;
    let now = cx.now_ms();
    let notice = NewNotice {
        migration_id: ctx.id.to_string(),
        // Not the account's own notice: a failure to send it must not hold the account again.
        account: None,
        kind: "held".to_owned(),
        message_id: format!("<held.{user}.{event_id}.{}@siirto>", ctx.id),
        dedupe_key: format!("held:{}:{user}:{event_id}", ctx.id),
        recipients: serde_json::to_string(&cx.world.operators).context("recipients")?,
        subject: subject.trim().to_owned(),
        body,
        created_at: now,
    };
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        super::notices::schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}

/// Customer service's notice that `notice` (a customer's) was refused for good with `error`,
/// so that someone calls the customer; written inside `tx`, once per failed notice. Nothing
/// when no staff address is configured.
pub async fn queue_failed_notice(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    notice: &OutboxRow,
    error: &str,
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
    });
    let template = ctx.playbook.notices.notice_failed.for_language(&cx.world.language);
    let subject =
        crate::notify::render(&template.subject, &context).context("rendering the failed-notice notice")?;
    let body =
        crate::notify::render(&template.body, &context).context("rendering the failed-notice notice")?;
    let now = cx.now_ms();
    let staff_notice = NewNotice {
        migration_id: ctx.id.to_string(),
        account: None,
        kind: "notice_failed".to_owned(),
        message_id: format!("<notice_failed.{}.{}@siirto>", notice.id, ctx.id),
        dedupe_key: format!("notice_failed:{}:{}", ctx.id, notice.id),
        recipients: serde_json::to_string(&cx.world.staff).context("recipients")?,
        subject: subject.trim().to_owned(),
        body,
        created_at: now,
    };
    if let Some(id) = tx.enqueue_notice(&staff_notice).await? {
        super::notices::schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}
