//! Notices: the completion notice and reminders are written to the outbox (one row each, by
//! dedupe key), and each outbox row is sent through the channel.

use anyhow::{Context, anyhow};
use tracing::{debug, warn};

use crate::domain::{AccountEvent, DomainState, RecordChange, reminder_notice_key};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::engine::jobs::JobKind;
use crate::names::DomainName;
use crate::notify::OutgoingNotice;
use crate::playbook::{NoticeTemplate, language_of};
use crate::store::{DomainRow, JobRow, Lease, NewNotice, OutboxRow, Tx};

use super::announce::{completion_accounts, domain_context, due_at, too_late, via_reseller};

/// How soon a notice waiting for an earlier one to the same recipients looks again.
const ORDER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A notice template rendered with `context`: the subject (one line), the text and the HTML
/// part (escaped), if the template has one.
pub(crate) fn rendered(
    template: &NoticeTemplate,
    context: &serde_json::Value,
    kind: &str,
) -> anyhow::Result<(String, String, Option<String>)> {
    let subject = crate::notify::render(&template.subject, context)
        .with_context(|| format!("rendering the {kind} notice's subject"))?;
    let body = crate::notify::render(&template.body, context)
        .with_context(|| format!("rendering the {kind} notice's text"))?;
    let html = template
        .html
        .as_ref()
        .map(|html| crate::notify::render_html(html, context))
        .transpose()
        .with_context(|| format!("rendering the {kind} notice's HTML part"))?;
    Ok((subject.trim().to_owned(), body, html))
}

/// Sends one outbox row through the channel with its stable Message-ID, exactly as the code
/// map's "Notices" guarantee says:
///
/// 1. the attempt is recorded (committed) before anything is handed over; when an earlier
///    attempt's end was never recorded, this one is a resend, logged as `notice_resent`;
/// 2. the channel connects (greeting, TLS, login), and the lease is checked right before the
///    message goes out;
/// 3. as soon as the server accepts the message (SMTP: the 250 after DATA), the sent-mark is
///    committed with the job's completion and the account's transition, before QUIT and
///    before anything else; if the lease was lost meanwhile, the sent-mark alone is committed
///    without it (the fact stands whoever holds the job);
/// 4. only then is the session closed (QUIT), however slowly the server answers.
pub async fn send_notice(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let id: i64 = job.subject.parse().context("notice id")?;
    let notice = cx.store.notice(id).await?.ok_or_else(|| anyhow!("notice {id} is not in the outbox"))?;
    if notice.sent_at.is_some() {
        // Accepted by the server in an earlier run: what is left is the bookkeeping.
        return record_sent(cx, ctx, &notice, lease).await;
    }
    if notice.skipped_at.is_some() {
        return cx.finish(lease).await;
    }
    // A notice that could not go out in time (the server was down, the daemon stopped) is not
    // sent in a burst later: too late is skipped, on record.
    let due = due_at(ctx, &notice.kind, notice.created_at);
    let now = cx.now_ms();
    if let Some(reason) = too_late(ctx, &notice.kind, due, now) {
        let mut tx = cx.store.begin_leased(lease).await?;
        tx.mark_notice_skipped(id, now, &reason).await?;
        let detail = serde_json::json!({ "notice": id, "kind": notice.kind, "reason": reason });
        tx.append_event(&cx.event(ctx, notice.account.as_deref(), None, "notice_skipped_late", detail))
            .await?;
        // A completion notice too late to send still ends its accounts' wait for it.
        if notice.kind == "completion"
            && let Some(first) = &notice.account
        {
            for (user, state) in completion_accounts(&mut tx, ctx.id.as_str(), first, id).await? {
                let event = AccountEvent::NoticeFailed { reason: reason.clone() };
                cx.apply_account(&mut tx, ctx, &user, &state, event).await?;
            }
        }
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    // Notices to one reader go out in the order they were written (a start notice waiting out
    // a mail server's outage goes before the completion notice written meanwhile).
    if let Some(earlier) = cx.store.earlier_unsent_notice(&notice).await? {
        debug!(
            notice = id,
            earlier, "an earlier notice to the same recipients is not out yet; waiting for it"
        );
        let mut tx = cx.store.begin_leased(lease).await?;
        tx.reschedule_job(lease, now + ORDER_WAIT.as_millis() as i64).await?;
        return Ok(tx.commit().await?);
    }
    let to: Vec<String> = serde_json::from_str(&notice.recipients).context("stored recipients")?;
    if to.is_empty() {
        return Err(StepError::Permanent(anyhow!("the account has no contact e-mail address")));
    }
    let outgoing = OutgoingNotice {
        message_id: notice.message_id.clone(),
        from: cx.mail_from.clone(),
        to,
        subject: notice.subject.clone(),
        body: notice.body.clone(),
        html: notice.html.clone(),
        return_path: cx.world.bounces.as_ref().map(|b| b.return_path(id)),
    };
    // 0. The channel's rate limit, shared by every daemon on the database: wait for this
    // send's slot before anything is on record.
    if let Some(interval) = cx.world.send_interval {
        let now = cx.now_ms();
        let slot =
            cx.store.reserve_send_slot(cx.world.channel.name(), now, interval.as_millis() as i64).await?;
        if slot > now {
            tokio::time::sleep(std::time::Duration::from_millis((slot - now) as u64)).await;
        }
    }
    // 1. The attempt, on record before the server sees anything; the text is read after it
    // (a reschedule re-dates a notice only while no attempt is on record).
    let mut tx = cx.store.begin_leased(lease).await?;
    let started = tx.notice_delivery_started(id, cx.now_ms()).await?;
    let current = tx.notice(id).await?.ok_or_else(|| anyhow!("notice {id} is not in the outbox"))?;
    let outgoing =
        OutgoingNotice { subject: current.subject, body: current.body, html: current.html, ..outgoing };
    if started {
        let detail = serde_json::json!({
            "notice": id,
            "kind": notice.kind,
            "message_id": notice.message_id,
            "attempt": notice.delivery_attempts + 1,
            "why": "an earlier attempt ended without its outcome on record (the daemon stopped or lost its lease while sending); the server may hold the message already, and the copy carries the same Message-ID",
        });
        tx.append_event(&cx.event(ctx, notice.account.as_deref(), None, "notice_resent", detail)).await?;
        warn!(notice = id, message_id = %notice.message_id, "resending a notice whose earlier attempt has no recorded outcome");
    }
    tx.commit().await?;
    // 2. Connect; the lease must still hold right before the message goes out.
    let mut delivery = match cx.world.channel.open().await {
        Ok(delivery) => delivery,
        Err(err) if !err.is_transient() => return refused(cx, ctx, lease, &notice, err).await,
        Err(err) => return Err(classify!(err)),
    };
    if let Err(lost) = lease.check() {
        delivery.close().await;
        return Err(lost.into());
    }
    if let Err(err) = delivery.transmit(&outgoing).await {
        delivery.close().await;
        if !err.is_transient() {
            return refused(cx, ctx, lease, &notice, err).await;
        }
        return Err(classify!(err));
    }
    // 3. Accepted: on record now, before QUIT and before anything else.
    let recorded = record_sent(cx, ctx, &notice, lease).await;
    let recorded = match recorded {
        Err(StepError::LeaseLost(reason)) => {
            cx.store.mark_notice_sent(id, cx.now_ms()).await?;
            Err(StepError::LeaseLost(reason))
        }
        other => other,
    };
    // 4. Only now the polite goodbye.
    delivery.close().await;
    recorded
}

/// A notice refused for good (5xx: no such mailbox; a webhook's 4xx), in one leased
/// transaction: its attempt ended with the server's words, the notice marked failed, customer
/// service told to call the customer, a completion notice's account moved on (the move itself
/// succeeded: it is not held), the job done.
async fn refused(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    notice: &OutboxRow,
    err: crate::notify::NotifyError,
) -> StepResult {
    let message = err.to_string();
    warn!(notice = notice.id, error = %message, "notice refused for good; marked failed, customer service told");
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.notice_failed(notice.id, &message).await?;
    tx.mark_notice_failed(notice.id, now).await?;
    super::staff::queue_failed_notice(cx, &mut tx, ctx, notice, &message, false).await?;
    if let (Some(first), "completion") = (&notice.account, notice.kind.as_str()) {
        for (user, state) in completion_accounts(&mut tx, ctx.id.as_str(), first, notice.id).await? {
            let event = AccountEvent::NoticeFailed { reason: message.clone() };
            cx.apply_account(&mut tx, ctx, &user, &state, event).await?;
        }
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// Records an accepted notice in one leased transaction: its sent-mark (the first time
/// stands), `notice_sent` for each account a completion notice concerns, the job done.
async fn record_sent(cx: &Ctx, ctx: &MigrationCtx, notice: &OutboxRow, lease: &Lease) -> StepResult {
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.mark_notice_sent(notice.id, now).await?;
    if let (Some(first), "completion") = (&notice.account, notice.kind.as_str()) {
        // Read through the transaction, never a second pool connection (see `Tx::account`).
        for (user, state) in completion_accounts(&mut tx, ctx.id.as_str(), first, notice.id).await? {
            cx.apply_account(&mut tx, ctx, &user, &state, AccountEvent::NoticeSent).await?;
        }
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// Writes reminder `n` of an external domain to the outbox (its dedupe key makes it one
/// row however often this runs) and schedules its sending, inside `tx`.
pub async fn queue_reminder(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    row: &DomainRow,
    state: &DomainState,
    n: u32,
) -> Result<(), StepError> {
    let user = row.user.as_str();
    let account = cx
        .store
        .account(ctx.id.as_str(), user)
        .await?
        .ok_or_else(|| anyhow!("account {user} is not in migration {}", ctx.id))?;
    let context = domain_context(cx, ctx, &account, row, state).await?;
    let language = language_of(account.language.as_deref(), &cx.world.language);
    let template = ctx.playbook.notices.reminder.for_language(&language);
    let (subject, body, html) = rendered(template, &context, "reminder")?;
    let mode = ctx.playbook.notices.reseller_customers;
    let recipients: Vec<String> = via_reseller(mode, &account)
        .map(str::to_owned)
        .or_else(|| account.contact_email.clone())
        .into_iter()
        .collect();
    let domain = DomainName::parse(&row.domain).context("stored domain")?;
    let now = cx.now_ms();
    let notice = NewNotice {
        migration_id: ctx.id.to_string(),
        account: Some(user.to_owned()),
        kind: "reminder".to_owned(),
        message_id: format!("<reminder.{n}.{}.{}@siirto>", row.domain, ctx.id),
        dedupe_key: reminder_notice_key(&ctx.id, &domain, n),
        recipients: serde_json::to_string(&recipients).context("recipients")?,
        subject,
        body,
        html,
        created_at: now,
    };
    // Already queued by an earlier run that crashed before recording: the row stands and
    // its send job was scheduled in the same transaction.
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}

/// Schedules the sending of outbox row `id` now, inside `tx` (one job per row, by its key).
pub async fn schedule_send(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    id: i64,
    now: i64,
) -> Result<(), StepError> {
    let job = cx.job(
        ctx,
        JobKind::SendNotice,
        &id.to_string(),
        serde_json::json!({}),
        now,
        format!("send_notice:{id}"),
    );
    tx.schedule_job(&job).await?;
    Ok(())
}

/// The notice variable `external_records`: one entry per record the customer must change.
pub fn external_records_of(domain: &str, changes: &[RecordChange]) -> Vec<serde_json::Value> {
    changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "domain": domain,
                "name": c.name,
                "type": c.rtype,
                "old_value": c.old_value,
                "new_value": c.new_value,
            })
        })
        .collect()
}
